"""eval/bench_attention.py times every method warm, and docs/results/bench_attention.json backs ``auto``'s token rule
(``BLOCKED_MIN_TOKENS``): it holds grids below the rule, where ``auto`` keeps dense SDPA, and at every timed grid from
the rule on the call ``auto`` makes beats dense masked SDPA in both dtypes."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from vidgen.attention.api import BLOCKED_MIN_TOKENS

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results" / "bench_attention.json"


def test_every_method_is_called_once_before_its_timed_rounds(load_script, monkeypatch):
    """Dense SDPA too, at more than 8,192 tokens (where it was once timed cold); nothing is computed here."""
    bench = load_script("eval/bench_attention.py")
    calls: dict = {}

    def timed(fn, q, k, v, clear_grads=True):
        calls[(q.dtype, fn)] = calls.get((q.dtype, fn), 0) + 1
        return 1.0
    monkeypatch.setattr(bench, "fwd_bwd_seconds", timed)
    monkeypatch.setattr(bench, "attention_mask3d", lambda *a, **k: None)  # no 9k x 9k mask for uncalled SDPA
    row = bench.bench_grid((9, 32, 32), (3, 7, 7), heads=1, head_dim=8, rounds=5,
                           ceilings={"fp32": {"gflops": 1.0}, "bf16": {"gflops": 1.0}})
    assert row["tokens"] > 8192 and "dense_masked_sdpa" in row["fp32"]["seconds"]
    assert {dtype for dtype, _ in calls} == {torch.float32, torch.bfloat16} and len(calls) == 2 * 5  # 5 methods
    assert set(calls.values()) == {5 + 1}, calls  # a warm-up call, then the five timed rounds


def test_auto_beats_dense_sdpa_at_every_timed_grid_from_the_token_rule_on():
    results = json.loads(RESULTS.read_text())
    timed = [r for r in results["rows"] if "dense_masked_sdpa" in r["fp32"]["seconds"]]
    assert results["rounds"] >= 5
    assert any(r["tokens"] < BLOCKED_MIN_TOKENS for r in timed)  # the rule is read against grids on both sides
    for r in timed:
        if r["tokens"] < BLOCKED_MIN_TOKENS:
            assert set(r["auto_backend"].values()) == {"reference"}, r["grid"]
        else:
            assert set(r["auto_backend"].values()) != {"reference"}, r["grid"]
            for dtype in ("fp32", "bf16"):
                assert r[dtype]["user_call_speedup_vs_dense_masked_sdpa"] > 1.0, (r["grid"], dtype)


def test_rounds_alternate_every_round_is_recorded_and_a_negative_time_is_an_error(load_script, monkeypatch):
    """Invented times (nothing is timed): the methods run in reverse order on odd rounds, every round's time is in the
    row, a speed-up is the median of per-round ratios with the smallest beside it; fewer than 5 rounds are refused
    outside a smoke run, and a negative time stops the run."""
    bench = load_script("eval/bench_attention.py")
    order, clock = [], itertools.cycle([1.0, 2.0, 3.0, 5.0, 7.0, 11.0, 13.0])

    def timed(fn, q, k, v, clear_grads=True):
        order.append(fn)
        return next(clock)
    monkeypatch.setattr(bench, "fwd_bwd_seconds", timed)
    monkeypatch.setattr(bench, "attention_mask3d", lambda *a, **k: None)
    row = bench.bench_grid((2, 4, 4), (1, 3, 3), heads=1, head_dim=8, rounds=5, with_unmasked=False,
                           ceilings={"fp32": {"gflops": 1.0}, "bf16": {"gflops": 1.0}})
    n = len({id(fn) for fn in order})  # the methods of both dtypes, each warmed up once
    assert len(order) == 6 * n and order[2 * n:3 * n] == order[n:2 * n][::-1]  # round 2 runs them in reverse order
    rounds = row["fp32"]["round_seconds"]
    assert {"user_call", "blocked", "dense_masked_sdpa"} <= set(rounds) and all(len(v) == 5 for v in rounds.values())
    ratios = [d / u for d, u in zip(rounds["dense_masked_sdpa"], rounds["user_call"])]
    assert row["fp32"]["user_call_speedup_vs_dense_masked_sdpa"] == sorted(ratios)[2]
    assert row["fp32"]["user_call_speedup_vs_dense_masked_sdpa_min"] == min(ratios) < sorted(ratios)[2]
    with pytest.raises(SystemExit, match="at least 5"):
        bench.main(["--rounds", "3"])
    ticks = iter([0.0, -0.5])
    monkeypatch.undo()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    from results import NegativeTimeError
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    with pytest.raises(NegativeTimeError):
        bench.fwd_bwd_seconds(lambda q, k, v: q * k * v, x, x, x)


def test_table_gives_no_bf16_fraction_of_an_emulated_ceiling(load_script):
    """A bf16 GEMM ceiling that ran slower than fp32's (no bf16 units) is emulated: its "% of ceiling" is "–" and the
    caption says why; a run whose bf16 ceiling is faster keeps the fraction."""
    bench = load_script("eval/bench_attention.py")
    results = json.loads(RESULTS.read_text())
    slow, fast = json.loads(json.dumps(results)), json.loads(json.dumps(results))
    slow["ceilings"]["bf16"]["gflops"] = slow["ceilings"]["fp32"]["gflops"] / 400
    fast["ceilings"]["bf16"]["gflops"] = fast["ceilings"]["fp32"]["gflops"] * 4
    fast["cpu"] = "a CPU with AVX512-BF16"
    row = lambda table: table.split("\n")[2].split(" | ")  # noqa: E731  the first grid's row
    column = next(i for i, cell in enumerate(bench.readme_table(fast).split("\n")[0].split(" | "))
                  if cell.startswith("% of ceiling"))
    assert bench.bf16_ceiling_emulated(slow) and not bench.bf16_ceiling_emulated(fast)
    assert row(bench.readme_table(slow))[column].endswith(" / –") and "emulated" in bench.readme_table(slow)
    fraction = 100 * fast["rows"][0]["bf16"]["fraction_of_ceiling"]["user_call"]
    assert row(bench.readme_table(fast))[column].endswith(f" / {fraction:.1f}")
    assert "emulated" not in bench.readme_table(fast)

"""eval/bench_caches.py: the smoke run (--quick) writes every method with the provenance block, against no cache in
the same run; the committed measurement is consistent with its rows (speed-ups paired per round, no cache's frames
the reference, the calibrated MagCache ratios recorded, enough rounds)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"none", "first_block", "mag_cache", "taylorseer", "taylorseer_lite"}


def _consistent(record: dict, steps: int, results) -> None:
    assert results.missing_provenance(record) == []
    assert set(record["methods"]) == METHODS
    none = record["methods"]["none"]
    assert none["frames_max_abs_diff"] == 0.0 and none["last_block_self_attention_calls"] == 2 * steps
    assert len(record["mag_ratios"]) == steps and record["mag_ratios"][0] == 1.0
    for name, row in record["methods"].items():
        rounds = row["s_per_call"]["rounds"]
        assert len(rounds) == record["rounds"] and row["s_per_call"]["median"] > 0
        ratios = [a / b for a, b in zip(none["s_per_call"]["rounds"], rounds)]
        assert row["speedup_vs_none"]["rounds"] == pytest.approx(ratios)
        assert 0 <= row["frames_mean_abs_diff"] <= row["frames_max_abs_diff"] <= 1
        assert 0 < row["last_block_self_attention_calls"] <= 2 * steps


def test_quick_run_writes_every_method(tmp_path, load_script):
    bench = load_script("eval/bench_caches.py")
    path, _ = bench.main(["--quick", "--out", str(tmp_path / "caches.json")])
    record = json.loads(Path(path).read_text())
    assert record["quick"] is True and record["rounds"] == 2
    _consistent(record, 6, load_script("eval/results.py"))
    assert record["methods"]["mag_cache"]["last_block_self_attention_calls"] < 12  # MagCache skipped steps


def test_committed_measurement_is_consistent_with_its_rows(load_script):
    record = json.loads((ROOT / "docs" / "results" / "bench_caches.json").read_text())
    assert record["quick"] is False and record["rounds"] >= 5 and record["precision"] == "fp32"
    _consistent(record, record["call"]["num_inference_steps"], load_script("eval/results.py"))

"""eval/bench_attention_gpu.py never rots: its ``--quick`` mode (the Triton interpreter on the CPU, fp32, a tiny shape)
writes a results file whose structure is the GPU run's and whose numbers agree with each other and with pairs counted
from the dense mask; the time guard skips shapes; the docs table renders through eval/readme_tables.py; and the
BlockMask the ``flex`` backend builds on CUDA a few query blocks at a time equals ``create_block_mask``'s."""
from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vidgen.attention import make_pattern
from vidgen.attention.masks import pattern_mask

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "eval" / "bench_attention_gpu.py"
PASS_FLOPS = {"forward": 4, "forward_backward": 12}  # per allowed pair and head dim


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TORCHINDUCTOR_CACHE_DIR=str(out.parent / "inductor"))
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


def test_quick_run_records_the_machine_and_the_method(quick):
    m = quick["machine"]
    assert m["device"] == "cpu" and m["gpu"] is None and m["driver"] is None
    assert m["torch"] == torch.__version__ and m["triton"]
    assert quick["quick"] and quick["complete"] and quick["dtype"] == "float32" and quick["batch"] == 1
    assert {"command", "date", "loadavg_start", "versions"} <= set(quick)  # eval/results.py's provenance block
    assert len(quick["rows"]) == 1 and "skipped" not in quick["rows"][0]
    # the code that ran: the kernel files' hashes as they are now, and the commit of this checkout
    source = m["source"]
    for name, digest in source["sha256"].items():
        assert digest == hashlib.sha256((ROOT / name).read_bytes()).hexdigest(), name
    assert set(source["sha256"]) == {"vidgen/attention/triton_jit.py", "vidgen/attention/triton_kernel.py"}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert source["commit"] == head.stdout.strip() and isinstance(source["dirty"], bool)
    assert m["pinned"] == {"torch": "2.14.1", "triton": "3.8.0"}
    assert ("pinned_note" in m) == (m["torch"].split("+")[0] != "2.14.1" or m["triton"] != "3.8.0")


# Changes to the kernel files since the GPU run that no timed call runs: file -> (its sha256 now, what changed). Any
# other change fails below until a new GPU run; empty this after that run.
UNTIMED_CHANGES: dict[str, tuple[str, str]] = {}


def test_the_committed_gpu_results_were_made_by_the_kernel_that_ships():
    """docs/results/bench_attention_gpu.json: where it records the kernel files' hashes, they are the files' now, or
    the file's listed in UNTIMED_CHANGES (a kernel change without a new GPU run fails here). A file from a run before
    hashes were recorded is skipped."""
    recorded = json.loads((ROOT / "docs" / "results" / "bench_attention_gpu.json").read_text())["machine"]
    if "source" not in recorded:
        pytest.skip("docs/results/bench_attention_gpu.json is from a run before the kernel's hashes were recorded")
    for name, digest in recorded["source"]["sha256"].items():
        now = hashlib.sha256((ROOT / name).read_bytes()).hexdigest()
        assert now in (digest, UNTIMED_CHANGES.get(name, ("",))[0]), f"{name} changed since the GPU run"
    assert recorded["source"].get("files_match_commit", True), "the device ran files that differ from its commit"


def test_provenance_flags_files_that_differ_from_the_carried_commit(load_script, monkeypatch):
    results = load_script("eval/results.py")
    name = "vidgen/attention/triton_jit.py"
    digest = hashlib.sha256((ROOT / name).read_bytes()).hexdigest()
    monkeypatch.setenv("VIDGEN_SOURCE_COMMIT", "abc123")
    monkeypatch.setenv("VIDGEN_SOURCE_DIRTY", "0")
    monkeypatch.setenv("VIDGEN_SOURCE_SHA256", f"{name}={digest},")
    got = results.source_provenance([name])
    assert got == {"commit": "abc123", "dirty": False, "sha256": {name: digest}, "files_match_commit": True}
    monkeypatch.setenv("VIDGEN_SOURCE_SHA256", f"{name}={'0' * 64},")
    assert results.source_provenance([name])["files_match_commit"] is False


def test_pairs_and_flops_are_counted_from_the_mask(quick):
    row = quick["rows"][0]
    pattern = make_pattern(tuple(row["grid"]), tuple(row["window"]))
    n = math.prod(row["grid"])
    assert row["tokens"] == n and row["all_pairs"] == n * n
    assert row["allowed_pairs"] == int(pattern_mask(pattern).sum())  # brute force, not density()
    assert row["flop_bound"] == pytest.approx(n * n / row["allowed_pairs"], rel=1e-12)
    for name, entry in row["passes"].items():
        per_pair = PASS_FLOPS[name] * row["heads"] * row["head_dim"]
        assert entry["flops_allowed"] == pytest.approx(per_pair * row["allowed_pairs"], rel=1e-12)
        assert entry["flops_dense"] == pytest.approx(per_pair * n * n, rel=1e-12)


def test_the_numbers_agree_with_each_other(quick):
    row = quick["rows"][0]
    assert row["rounds"] >= quick["min_rounds"] >= 3 and not row["below_min_rounds"]
    for name, entry in row["passes"].items():
        timed = {b: e for b, e in entry["backends"].items() if "ms" in e}
        dense = {b: timed[b]["ms"] for b in ("dense_flash", "dense_cudnn") if b in timed}
        assert entry["dense_ms"] == min(dense.values()) and dense[entry["dense_backend"]] == entry["dense_ms"]
        for backend, e in timed.items():
            assert len(e["times_ms"]) == row["rounds"] and e["ms"] == statistics.median(e["times_ms"])
            assert 0 < e["host_ms"] <= e["ms"]  # each call returns before its (synchronised) end
            assert "device_ms" not in e  # the profiler's kernel time is taken on a GPU only
            assert e["first_call_s"] > 0
            seconds = e["ms"] / 1e3
            tile = backend == "triton_tile"  # the tile-aligned window: its own allowed pairs and FLOP bound
            allowed = entry["flops_allowed_tile"] if tile else entry["flops_allowed"]
            bound = row["tile_pattern"]["flop_bound"] if tile else row["flop_bound"]
            assert e["tflops"] == pytest.approx(allowed / seconds / 1e12, rel=1e-9)
            assert e["dense_equivalent_tflops"] == pytest.approx(e["tflops"] * bound, rel=1e-9)
            assert e["speedup_vs_dense"] == pytest.approx(entry["dense_ms"] / e["ms"], rel=1e-12)
            assert e["fraction_of_flop_bound"] == pytest.approx(e["speedup_vs_dense"] / bound, rel=1e-9)
        if "triton" in timed and "flex" in timed:
            assert entry["triton_speedup_vs_flex"] == pytest.approx(timed["flex"]["ms"] / timed["triton"]["ms"])


def test_every_backend_ran_or_says_why_not(quick):
    passes = quick["rows"][0]["passes"]
    for name in ("forward", "forward_backward"):
        assert {"triton", "triton_tile", "dense_flash"} <= {b for b, e in passes[name]["backends"].items() if "ms" in e}
        assert "error" in passes[name]["backends"]["dense_cudnn"]  # cuDNN attention is CUDA-only
    assert "ms" in passes["forward"]["backends"]["flex"]
    assert "no backward pass on CPU" in passes["forward_backward"]["backends"]["flex"]["error"]
    checks = quick["rows"][0]["checks"]  # the interpreted kernel computes the pattern (fp32)
    assert checks["forward_triton_vs_flex"] < 1e-5 and checks["forward_triton_vs_reference_fp32"] < 1e-5
    assert checks["forward_triton_coords_vs_flex"] < 1e-5 and checks["forward_triton_raster_vs_flex"] < 1e-5
    assert quick["rows"][0]["l2_flush_mib"] == 0  # no L2 cache to flush on the CPU


def test_the_docs_table_renders_through_readme_tables(quick, load_script, tmp_path):
    bench = load_script("eval/bench_attention_gpu.py")
    results = tmp_path / "bench_attention_gpu.json"
    results.write_text(json.dumps(quick))
    page = tmp_path / "attention.md"
    page.write_text("before\n<!-- table:attention_gpu -->\nold\n<!-- /table:attention_gpu -->\nafter\n")
    rendered = bench.write_table(results, page)
    assert page.read_text() == rendered and "old" not in rendered
    table = bench.readme_table(quick)
    assert table in rendered and "| (quick) 2×4×4, window 3×3×4" in table
    assert len([line for line in table.splitlines() if line.startswith("| (quick)")]) == 2  # both passes
    assert "seeded random order" in table  # the method of these results, not of the committed ones
    committed = json.loads((ROOT / "docs" / "results" / "bench_attention_gpu.json").read_text())
    if not any("l2_flush_mib" in r for r in committed["rows"]):
        assert "rotated order" in bench.readme_table(committed)
    docs = (ROOT / "docs" / "attention.md").read_text()
    assert "<!-- table:attention_gpu -->" in docs and "<!-- /table:attention_gpu -->" in docs


def test_the_time_guard_skips_shapes_that_would_start_past_the_deadline(load_script):
    bench = load_script("eval/bench_attention_gpu.py")
    rows = bench.run_shapes(bench.SHAPES, torch.device("cpu"), torch.float32, 5, 5, time.perf_counter() - 1)
    assert [r["key"] for r in rows] == ["b", "a", "c"] and all("time guard" in r["skipped"] for r in rows)
    table = bench.readme_table(dict(rows=rows, machine=dict(gpu="GPU", driver="1", torch="t", triton="3", cuda="13"),
                                    dtype="bf16", date="2026-01-01", elapsed_s=1.0, command="python x"))
    assert table.count("time guard") == 3


def test_targets_are_met_missed_by_how_much_or_not_measured(load_script):
    bench = load_script("eval/bench_attention_gpu.py")

    def shape(key, vs_flex, triton_dense, tile_dense=None):
        backends = {"triton": {"speedup_vs_dense": triton_dense}}
        if tile_dense is not None:
            backends["triton_tile"] = {"speedup_vs_dense": tile_dense}
        return {"key": key, "passes": {p: {"triton_speedup_vs_flex": vs_flex, "backends": backends}
                                       for p in bench.PASSES}}

    rows = [shape("b", 1.2, 3.9, 7.5), shape("a", 0.9, 2.0), {"key": "c", "skipped": "time guard"}]
    got = {t["target"]: t for t in bench.targets(rows)}
    assert got["(b) forward: exact windows / compiled Flex"]["result"] == "met"
    assert got["(a) forward_backward: exact windows / compiled Flex"]["result"] == "missed by 0.10x"
    assert got["(c) forward: exact windows / compiled Flex"]["result"] == "not measured"
    assert got["(b) forward: exact windows / dense"]["result"] == "met"
    assert got["(b) forward: tile windows / dense"] == {"target": "(b) forward: tile windows / dense", "at_least": 8.0,
                                                         "unit": "x", "measured": 7.5, "result": "missed by 0.50x"}


def test_the_gpu_shapes_are_the_ones_stated():
    bench_src = SCRIPT.read_text()
    for text in ("grid=(16, 32, 32), window=(3, 7, 7), heads=4, head_dim=64",
                 "grid=(30, 48, 80), window=(18, 24, 24), heads=24, head_dim=128",
                 "grid=(21, 30, 52), window=(9, 17, 33), heads=12, head_dim=128"):
        assert text in bench_src


@pytest.mark.parametrize("args", [((3, 5, 7), (3, 3, 3), False, 0), ((5, 12, 20), (2, None, 5), True, 3),
                                  ((7, 9, 33), None, True, 5)])
def test_chunked_block_mask_equals_create_block_mask(args):
    flex_attention = pytest.importorskip("torch.nn.attention.flex_attention")
    from vidgen.attention.flex import chunked_block_mask
    from vidgen.attention.masks import pattern_mask_mod

    pattern = make_pattern(*args)
    n = pattern.num_tokens
    want = flex_attention.create_block_mask(pattern_mask_mod(pattern), None, None, n, n, device="cpu")
    got = chunked_block_mask(pattern, "cpu", max_elements=128 * 128)  # one query block per chunk
    fields = [(a, b) for a, b in zip(want.as_tuple(), got.as_tuple()) if not callable(a)]  # all but the mask_mod
    assert len(fields) == len(want.as_tuple()) - 1
    for a, b in fields:
        assert (a.dtype == b.dtype and torch.equal(a, b)) if isinstance(a, torch.Tensor) else a == b


def test_kernel_time_is_taken_for_the_windowed_backends_before_the_deadline_only(load_script):
    bench = load_script("eval/bench_attention_gpu.py")

    class Untouched:
        def run(self):
            raise AssertionError("a call past the deadline must not run")

    calls = {("forward", "triton"): Untouched(), ("forward", "dense_cudnn"): Untouched(),
             ("forward_backward", "flex"): Untouched()}
    got = bench.device_ms(calls, deadline=time.perf_counter() - 1)
    assert set(got) == {("forward", "triton"), ("forward_backward", "flex")}  # dense SDPA: one kernel, wall = kernel
    assert all("deadline" in why for why in got.values())

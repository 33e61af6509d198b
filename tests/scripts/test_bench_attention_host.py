"""eval/bench_attention_host.py: the committed results file is consistent with its own rows, a quick run writes one
(in-process, under a second), and the equality check that keeps it timing the same work as its baselines can fail."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "eval" / "bench_attention_host.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_attention_host", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_result_is_consistent():
    record = json.loads((ROOT / "docs" / "results" / "bench_attention_host.json").read_text())
    rows = record["methods"]
    assert set(rows) == {"sdpa", "attention3d", "sdpa_masked", "attention3d_window"}
    assert record["host_us"] == rows["attention3d_window"]["cpu_us"] and record["sdpa_us"] == rows["sdpa"]["cpu_us"]
    assert record["ratio_to_sdpa"] == rows["attention3d_window"]["cpu_ratio_to_sdpa"]
    assert record["auto_backend"] == {"attention3d": "reference", "attention3d_window": "reference"}
    assert record["cpu"] and record["threads"] == 1 and record["rounds"] >= 11
    # compute is negligible at this shape: a few kFLOP, against tens of µs per call
    assert record["flops_per_call"] < 10_000


def test_quick_run_writes_a_result(bench, tmp_path):
    assert bench.main(["--quick", "--out", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["rounds"] == 3 and record["host_us"] > 0 and record["ratio_to_sdpa"] > 0


def test_the_equality_check_fails_on_different_work(bench):
    q, k, v = (torch.randn(1, 2, 8, 16) for _ in range(3))
    fns = bench.methods(q, k, v)
    bench.check_equal(fns)
    fns["attention3d_window"] = fns["attention3d"]  # no mask: not what the masked baseline computes
    with pytest.raises(AssertionError, match="does not return"):
        bench.check_equal(fns)

"""eval/bench_data.py: its synthetic shards go through the encode's own merge and read back like encoded ones (in
several work units); the shipped results meet the loader target, show a whole epoch's read with flat memory, and render
docs/scale.md's tables."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from vidgen.data.shards import ShardDataset, dataset_info

ROOT = Path(__file__).resolve().parents[2]


def test_synthetic_shards_read_back(load_script, tmp_path, monkeypatch):
    bench = load_script("eval/bench_data.py")
    monkeypatch.setattr(bench, "UNIT", 10)
    bench.synthetic_shards(tmp_path / "d", 25, "f" * 16)
    ds = ShardDataset(tmp_path / "d", fingerprint="f" * 16)
    assert ds.counts == {"17x64x64": 25} and dataset_info(tmp_path / "d")["skipped"] == []
    x, _, keys = ds.clips("17x64x64", [0, 24])
    assert x.shape == (2, *bench.SHAPE) and x.dtype == torch.bfloat16 and keys == ["synthetic/00000000",
                                                                                  "synthetic/00000024"]


def test_shipped_results_meet_the_targets_and_render(load_script):
    bench = load_script("eval/bench_data.py")
    results = json.loads((ROOT / "docs/results/bench_data.json").read_text())
    assert results["memory"]["large_clips"] >= 100 * results["memory"]["small_clips"]
    assert results["loader_over_step"] >= 5
    small, large = results["epochs"]["small"], results["epochs"]["large"]  # a whole epoch read: memory flat
    assert large["clips_read"] >= 100_000 and large["rss_after_mb"] <= 1.1 * small["rss_after_mb"]
    table = bench.readme_table(results)
    # a 12-step run's peak is the model's set-up: it is shown as such, never as a data-memory ratio (that measurement
    # is eval/bench_data_memory.py's, tests/scripts/test_bench_data_memory.py)
    assert "| ratio |" not in table and "set by the model's set-up" in table
    assert "**total**" in bench.plan_table(results) and "1.000x" not in bench.plan_table(results)

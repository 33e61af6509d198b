"""eval/bench_shards.py, the shard-format comparison: the chosen format (LitData) measured on a few clips resumes
exactly and reads back every clip; the shipped results file renders its docs/scale.md table."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_litdata_row_on_a_few_clips(load_script, tmp_path):
    bench = load_script("eval/bench_shards.py")
    items = bench.clips(40)
    row = bench.measure(bench.LitData(), items, tmp_path, seed=0, reads=10)
    assert row["epoch_complete"] and row["deterministic_for_seed"] and row["other_seed_differs"]
    assert row["resume_exact"] is True and row["random_access_correct"]
    assert row["bytes_per_clip"] >= row["payload_bytes_per_clip"] == 16 * 5 * 8 * 8 * 2


def test_shipped_results_render_and_name_every_candidate(load_script):
    bench = load_script("eval/bench_shards.py")
    results = json.loads((ROOT / "docs/results/bench_shards.json").read_text())
    table = bench.readme_table(results)
    for c in bench.CANDIDATES:
        assert c.name in table
    assert next(r for r in results["rows"] if r["package"] == "litdata")["resume_exact"] is True

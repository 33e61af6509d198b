"""eval/bench_data_memory.py: its --quick mode runs end to end (synthetic datasets of linked shards that read back
with the right clips, every phase measured, a training run with its memory curve) and the shipped results file holds
the measurement docs/scale.md quotes: 1,000 to 10,000,000 clips, a training run that read more than 10,000 clips."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "bench_data_memory.json"
PERM = "bucket sampler: its permutation (int64 tensor) and Python heap"
CAPTIONS = "caption table on disk, memory-mapped (`text_keys.npy`, `text_rows.npy`)"
STATE = "bucket sampler `state_dict()` (`torch.save` bytes)"


def _check(results: dict, bench) -> None:
    counts = results["counts"]
    per = results["per_clip"]
    # the permutation is 8 bytes a clip over every span, the caption table 16, the state_dict the same at every count
    for span in per[PERM]["slope_bytes_a_clip"].values():
        assert span == pytest.approx(8.0, abs=0.1)
    assert all(v == 16.0 for v in per[CAPTIONS]["slope_bytes_a_clip"].values())
    assert len(set(per[STATE]["bytes"].values())) == 1
    for n in counts:
        r = results["per_count"][str(n)]
        assert r["sampler_build"]["tensor_bytes"] == 8 * n and r["sampler_epoch_boundary"]["epoch"] == 1
        assert r["index_reads"]["clips_per_s"] > 0 and r["epoch_sampler"]["seconds_a_batch"] > 0
    t = results["training"]
    assert t["clips_read"] == t["steps"] * t["batch"] and len(t["curve"]) == 20
    assert [c["step"] for c in t["curve"]] == sorted(c["step"] for c in t["curve"])
    assert set(results["training_summary"]["at"]) == {"10%", "50%", "100%"}
    table = bench.readme_table(results)
    assert f"| {counts[-1]:,} clips |" in table and "| training run, after step |" in table


@pytest.mark.slow  # three child processes: about a minute on 2 cores
def test_quick_mode_runs_end_to_end(load_script, tmp_path, monkeypatch):
    bench = load_script("eval/bench_data_memory.py")
    monkeypatch.setenv("BENCH_TMP", str(tmp_path))
    assert bench.main(["--quick", "--out", str(tmp_path / "r.json")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["quick"] and results["counts"] == bench.QUICK["counts"]
    _check(results, bench)
    # with 1 MB shards the quick counts span many linked shards plus a written last one
    assert [results["per_count"][str(n)]["disk"]["shards"] for n in results["counts"]] == [
        -(-n // results["clips_a_shard"]) for n in results["counts"]]


def test_shipped_results_cover_ten_million_clips_and_a_long_run(load_script):
    bench = load_script("eval/bench_data_memory.py")
    results = json.loads(RESULTS.read_text())
    assert not results["quick"] and results["counts"] == [1_000, 100_000, 10_000_000]
    assert results["training"]["clips_read"] >= 10_000
    _check(results, bench)

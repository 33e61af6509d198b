"""eval/bench_sequence_parallel.py: peak live tensor memory per rank at sp 1, 2 and 4. The committed results file is
consistent with its own rows (the headline ratio is the worst rank's peak over sp 1's, the losses agree, the two
measures agree in one process); whether it meets its target is what the record and docs/training.md say, not
something this test assumes. The script itself runs end to end on a tiny model (slow: three fresh interpreters)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_committed_measurement_is_consistent_with_its_rows():
    record = json.loads((ROOT / "docs" / "results" / "bench_sequence_parallel.json").read_text())
    assert record["sp_sizes"] == [1, 2, 4] and record["headline"] == "peak_live_mb"
    rows = record["per_rank"]
    assert [len(rows[f"sp{sp}"]) for sp in record["sp_sizes"]] == record["sp_sizes"]  # one row per rank
    one = rows["sp1"][0]["peak_live_mb"]
    for sp in (2, 4):
        worst = max(r["peak_live_mb"] for r in rows[f"sp{sp}"])
        assert record["peak_live_mb"][f"sp{sp}"] == worst
        assert record[f"ratio_sp{sp}_to_sp1"] == round(worst / one, 3)
    assert record["target_ratio"] == 0.6
    assert record["target_met_at_sp2"] == (record["ratio_sp2_to_sp1"] <= 0.6)
    assert record["loss_difference"] < 1e-4
    assert abs(record["allocator_vs_tracker_at_sp1"]) <= 0.02
    for ranks in rows.values():
        for r in ranks:  # the breakdown sums to the peak, and the persistent part holds what was counted directly
            parts = {k: v for k, v in r["peak_breakdown_mb"].items() if k != "Total"}
            assert sum(parts.values()) == pytest.approx(r["peak_live_mb"], abs=0.5)
            assert r["live_before_last_step_mb"] >= sum(r["counted_before_last_step"].values()) - 0.1
    assert record["cpu"] and record["tokens"] >= 4096


@pytest.mark.slow
def test_script_writes_every_sp_size(tmp_path):
    """Run as a script, as its spawned workers need (they import it as the main module)."""
    import os
    import subprocess
    import sys
    done = subprocess.run([sys.executable, str(ROOT / "eval" / "bench_sequence_parallel.py"), "--quick",
                           "--out", str(tmp_path / "r.json")], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["tokens"] == 32 and set(record["per_rank"]) == {"sp1", "sp2"}
    assert record["loss_difference"] < 1e-4 and record["ratio_sp2_to_sp1"] > 0
    assert all(r["peak_live_mb"] > 0 for rows in record["per_rank"].values() for r in rows)

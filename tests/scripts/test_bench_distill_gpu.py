"""eval/bench_distill_gpu.py never rots: its ``--quick`` mode (a tiny Wan on the CPU) writes the GPU run's rows (the
teacher's guided step and its 50-step estimate, a DMD2 distillation step on a LoRA student, the student's sample)
without errors; the device script runs it and names its results file."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about 10 s: the make-test budget keeps it in make test-slow
def test_quick_run_writes_every_row_of_the_gpu_run(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_distill_gpu", ROOT / "eval" / "bench_distill_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.random.fork_rng():
        assert module.main(["--quick", "--rounds", "1", "--out", str(tmp_path / "q.json")]) == 0
    rows = {r["row"]: r for r in json.loads((tmp_path / "q.json").read_text())["rows"]}
    assert set(rows) == {"teacher_step", "distill_step", "student_sample"}
    assert all("error" not in r and r["s"] > 0 for r in rows.values()), rows
    assert rows["teacher_step"]["teacher_50_steps_s"] == 50 * rows["teacher_step"]["s"]
    assert rows["student_sample"]["evaluations"] == 4 and rows["student_sample"]["speedup_vs_teacher_50_steps"] > 0
    script = (ROOT / "experiments" / "device" / "distill_gpu.sh").read_text()
    assert "eval/bench_distill_gpu.py" in script and "bench_distill_gpu.json" in script

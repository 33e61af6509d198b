"""eval/bench_diffusers_models.py never rots: its ``--quick`` mode (a tiny Wan on the CPU) writes a results file with
the GPU run's structure (dense and windowed denoising steps, a LoRA training step), the window really runs, and the
time guard skips rows; the device script that runs it names the script and its results file."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "eval" / "bench_diffusers_models.py"


def _run(out: Path, *extra: str) -> dict:
    spec = importlib.util.spec_from_file_location("bench_diffusers_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.random.fork_rng():  # the script seeds its model
        assert module.main(["--quick", "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("bench") / "quick.json")


def test_quick_run_writes_the_gpu_runs_rows(quick):
    assert quick["model"].startswith("tiny Wan") and "command" in quick and quick["video"] == [9, 64, 64]
    steps = [r for r in quick["rows"] if r["row"] == "denoising_step"]
    assert {(r["attention"], r["compile"]) for r in steps} == {("dense", False), ("windowed", False), ("tiled", False)}
    for row in steps:
        assert "error" not in row and row["s"] > 0 and len(row["times_s"]) == 2 and row["cfg_passes"] == 2
    windowed = next(r for r in steps if r["attention"] == "windowed")
    assert windowed["windowed_calls"] > 0 and windowed["token_grid"] == [3, 4, 4]
    tiled = next(r for r in steps if r["attention"] == "tiled")
    assert tiled["windowed_calls"] > 0 and tiled["tile"] == [1, 2, 2] and tiled["window"] == [1, 3, 3]
    lora = next(r for r in quick["rows"] if r["row"] == "lora_train_step")
    assert "error" not in lora and lora["s"] > 0 and lora["trainable_params_m"] > 0


def test_the_time_guard_skips_rows(tmp_path):
    result = _run(tmp_path / "r.json", "--budget-s", "0")
    assert all(r.get("skipped") == "time budget spent" for r in result["rows"]) and len(result["rows"]) == 4


def test_the_device_script_runs_this_benchmark():
    text = (ROOT / "experiments" / "device" / "diffusers_gpu.sh").read_text()
    assert "eval/bench_diffusers_models.py" in text and "bench_diffusers_models_gpu.json" in text

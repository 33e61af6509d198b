"""eval/bench_diffusers_models.py never rots: its ``--quick`` mode (a tiny Wan on the CPU) writes a results file with
the GPU run's structure (dense and windowed denoising steps, a LoRA training step), the window really runs, and the
time guard skips rows; the device script that runs it names the script and its results file."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "eval" / "bench_diffusers_models.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_diffusers_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(out: Path, *extra: str) -> dict:
    module = _module()
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
    assert windowed["backend"] in ("cpu", "cpu_fused", "reference") and tiled["backend"] in ("cpu", "reference")
    assert set(quick["source"]["sha256"]) == {"vidgen/attention/triton_jit.py", "vidgen/attention/triton_kernel.py"}
    got = {t["target"]: t["result"] for t in quick["targets"]}
    assert "triton" in quick and got["tile windows / dense, compiled step at 64x64"] == "not measured"  # no compile
    assert got["tile windows / dense, eager step at 64x64"].startswith(("met", "missed by"))
    lora = next(r for r in quick["rows"] if r["row"] == "lora_train_step")
    assert "error" not in lora and lora["s"] > 0 and lora["trainable_params_m"] > 0


def test_the_time_guard_skips_rows(tmp_path):
    result = _run(tmp_path / "r.json", "--budget-s", "0")
    assert all(r.get("skipped") == "time budget spent" for r in result["rows"]) and len(result["rows"]) == 4


def test_the_device_script_runs_this_benchmark():
    text = (ROOT / "experiments" / "device" / "diffusers_gpu.sh").read_text()
    assert "eval/bench_diffusers_models.py" in text and "bench_diffusers_models_gpu.json" in text


def test_targets_read_the_compiled_rows_at_the_tile_rows_size():
    module = _module()

    def row(attention, compiled, size, seconds):
        return {"row": "denoising_step", "attention": attention, "compile": compiled, "video": [81, *size],
                "s": seconds}
    rows = [row("dense", True, (512, 768), 3.0), row("tiled", True, (512, 768), 1.2),
            row("dense", True, (480, 832), 3.1), row("windowed", True, (480, 832), 1.0),
            row("dense", False, (512, 768), 4.0), row("tiled", False, (512, 768), 2.5)]
    got = {t["target"]: t for t in module.targets(rows)}
    assert got["tile windows / dense, compiled step at 512x768"]["result"] == "met"
    assert got["tile windows / dense, compiled step at 512x768"]["measured"] == 2.5
    assert got["tile windows / dense, eager step at 512x768"]["result"] == "missed by 0.40x"
    assert got["exact windows / dense, compiled step at 480x832"]["result"] == "reported, no target"
    assert got["exact windows / dense, eager step at 480x832"]["measured"] is None  # no eager rows there


def test_regional_compilation_wraps_each_block_and_undoes():
    module = _module()
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(**module.TINY)
    blocks = list(model.blocks)
    undo = module.compile_blocks(model)
    assert len(undo) == len(blocks) == module.TINY["num_layers"]
    assert all(isinstance(b, torch._dynamo.eval_frame.OptimizedModule) for b in model.blocks)
    for parent, i, block in undo:
        parent[i] = block
    assert list(model.blocks) == blocks
    # the same blocks diffusers' own regional compilation compiles (nn.Module.compile sets _compiled_call_impl)
    theirs = WanTransformer3DModel(**module.TINY)
    theirs.compile_repeated_blocks()
    compiled_there = [name for name, m in theirs.named_modules() if getattr(m, "_compiled_call_impl", None)]
    assert compiled_there == [f"blocks.{i}" for i in range(len(blocks))]

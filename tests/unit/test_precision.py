"""Precision is chosen, not hard-coded: the one ``auto`` decision (with the capability probe patched), the spellings
trainers accept (``mixed_precision=no`` from YAML is False), the pipelines' ``dtype`` / ``torch_dtype``, and
training runs that leave process-global torch state as they found it."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import vidgen.precision as precision
from vidgen.errors import ConfigError, InvalidInputError, VidgenError
from vidgen.pipelines import load_pipeline
from vidgen.training import GeneratorTrainConfig, load_config, train

ROOT = Path(__file__).resolve().parents[2]
MASKED = ROOT / "pretrained" / "shapes-masked"
AUTOREGRESSIVE = ROOT / "pretrained" / "shapes-autoregressive"
PROMPT = "a red circle moving right on a black background"


@pytest.fixture
def fast_bf16(monkeypatch):
    """Patch the capability probe: ``fast_bf16(True)`` makes this machine look like it has AMX / AVX512-BF16."""
    def set_(value: bool):
        monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: value)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return set_


@pytest.mark.parametrize("has_units, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_follows_the_capability_probe_and_logs_it(fast_bf16, caplog, has_units, expected):
    fast_bf16(has_units)
    with caplog.at_level(logging.INFO, logger="vidgen"):
        assert precision.resolve_precision("auto") == expected
    assert f"chose {expected}" in caplog.text
    assert precision.resolve_dtype("auto") == {"bf16": torch.bfloat16, "fp32": torch.float32}[expected]
    # an explicit choice is never overridden by the probe
    assert precision.resolve_precision("fp32") == "fp32" and precision.resolve_precision("bf16") == "bf16"


@pytest.mark.parametrize("value, expected", [
    ("no", "fp32"), (False, "fp32"), (None, "fp32"), ("fp32", "fp32"), ("float32", "fp32"), (torch.float32, "fp32"),
    ("bf16", "bf16"), ("BF16", "bf16"), (torch.bfloat16, "bf16"), ("auto", "auto")])
def test_spellings(value, expected):
    assert precision.normalize_precision(value) == expected


@pytest.mark.parametrize("value", ["fp16", "int8", 3, torch.float16])
def test_unknown_precisions_are_named(value):
    with pytest.raises(ConfigError, match="precision"):
        precision.normalize_precision(value)


def test_cpu_probe_reads_real_flags():
    """The real probe agrees with /proc/cpuinfo (on Linux) and oneDNN."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx512_bf16" not in flags and " amx_bf16" not in flags:
        assert not precision.cpu_has_fast_bf16()
    else:
        assert precision.cpu_has_fast_bf16() == torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_trainer_configs_fold_mixed_precision_into_precision(tmp_path):
    # YAML reads a bare `no` as False: both must mean fp32 (accelerate crashed on False before)
    (tmp_path / "c.yaml").write_text("mixed_precision: no\n")
    assert load_config(str(tmp_path / "c.yaml")).precision == "fp32"
    assert load_config(None, ["mixed_precision=no"]).precision == "fp32"
    assert load_config(None, ["mixed_precision=bf16"], schema=GeneratorTrainConfig).precision == "bf16"
    assert load_config(None, ["precision=fp32"], schema=GeneratorTrainConfig).precision == "fp32"
    assert load_config(None, []).precision == "auto"
    with pytest.raises(ConfigError, match="disagree"):
        load_config(None, ["precision=bf16", "mixed_precision=no"])
    with pytest.raises(ConfigError, match="fp16 is GPU-only"):
        load_config(None, ["precision=fp16"])
    with pytest.raises(ConfigError, match="compile"):
        load_config(None, ["compile=maybe"])


TINY = ["model.preset=tiny", "data.num_frames=5", "data.size=16", "data.num_clips=4", "data.video_batch=2",
        "data.image_batch=2", "data.eval_clips=2", "data.eval_frames=5", "loss.perceptual=0", "loss.gan=0",
        "optim.warmup_steps=1", "log_every=1", "eval_every=100", "sample_every=100", "stats_clips=2", "resume="]


@pytest.mark.parametrize("setting, chosen", [("mixed_precision=no", "fp32"), ("precision=bf16", "bf16")])
def test_training_runs_in_the_chosen_precision_and_restores_threads(tmp_path, setting, chosen):
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    metrics = train(load_config(None, TINY + [f"run_dir={tmp_path}", "steps=2", f"threads={other}", setting]))
    assert torch.get_num_threads() == before, "a training call changed the process's thread count"
    assert not torch.is_autocast_enabled("cpu")
    assert np.isfinite(metrics["loss"])
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any(str(r.get("info", "")).startswith(f"precision: {chosen}") for r in lines), lines[:3]
    assert any(isinstance(r, dict) and "first_step_s" in r for r in lines)


def test_pipeline_dtype_and_its_diffusers_spelling_torch_dtype(fast_bf16):
    assert load_pipeline(MASKED, dtype="bf16").transformer.dtype == torch.bfloat16
    assert load_pipeline(MASKED, dtype=torch.float32).precision == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # diffusers' spelling, taken as it is
        pipe = load_pipeline(MASKED, torch_dtype=torch.bfloat16)
        assert load_pipeline(MASKED, dtype="bf16", torch_dtype=torch.bfloat16).precision == "bf16"  # they agree
    assert pipe.transformer.dtype == pipe.vqvae.dtype == torch.bfloat16
    with pytest.raises(InvalidInputError, match="dtype='fp32' and torch_dtype=torch.bfloat16 disagree"):
        load_pipeline(MASKED, dtype="fp32", torch_dtype=torch.bfloat16)
    with pytest.raises(VidgenError, match="fp16 is GPU-only"):
        load_pipeline(MASKED, dtype="fp16")
    fast_bf16(False)
    assert load_pipeline(MASKED).precision == "fp32"  # auto without fast bf16 units
    fast_bf16(True)
    assert load_pipeline(MASKED).precision == "bf16"
    # measured slower in bf16 on the CPU (eval/bench_pipelines.py): auto keeps AR in fp32, an explicit bf16 is kept
    assert load_pipeline(AUTOREGRESSIVE).precision == "fp32"
    assert load_pipeline(AUTOREGRESSIVE, dtype="bf16").precision == "bf16"


@pytest.mark.bf16  # emulated bf16: about half a minute here on a CPU without bf16 units
@pytest.mark.parametrize("mode", ["autocast", "bf16 weights"])
def test_autoregressive_pipeline_in_bf16(mode):
    """The AR pipeline crashed under autocast ("k_new must be torch.float32 on cpu like the cache"): its KV cache
    now takes the compute dtype. The frame count asked for is the frame count returned."""
    pipe = load_pipeline(AUTOREGRESSIVE, dtype="fp32" if mode == "autocast" else "bf16")
    pipe.set_progress_bar_config(disable=True)
    with torch.autocast("cpu", torch.bfloat16, enabled=mode == "autocast"):
        frames = pipe(PROMPT, num_frames=6, height=64, width=64, generator=torch.Generator().manual_seed(0),
                      output_type="np").frames
    assert frames.shape == (1, 6, 64, 64, 3) and frames.dtype == np.float32 and np.isfinite(frames).all()
    assert not torch.is_autocast_enabled("cpu")

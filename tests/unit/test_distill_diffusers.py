"""Few-step distillation of a diffusers model (a tiny Wan folder) into a LoRA: diffusers' own ``WanPipeline`` loads it
with ``load_lora_weights`` and, with the student's scheduler at k steps and guidance 1, gives vidgen's frames; the
DMD2 run (critic included) resumes bit-identically; a teacher that is not flow-matching, or no LoRA rank, is refused
by name."""
from __future__ import annotations

import json
import runpy
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers.shards import write_captioned_clips
from helpers.tiny_models import diffusers_student
from vidgen.errors import ConfigError
from vidgen.pipelines import load_pipeline
from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
from vidgen.training import encode_dataset, load_config
from vidgen.distillation.diffusers_task import DiffusersDistillConfig, distill_diffusers

CAPTIONS = ["a red fox running", "a boat on a lake", "snow falling"]
OVERRIDES = ("data.batch=2", "data.max_text_tokens=16", "steps=3", "log_every=1", "ckpt_every=3",
             "optim.warmup_steps=0", "optim.lr=5e-2", "precision=fp32", "threads=1", "lora.rank=4",
             "distill.steps=[1,2]", "distill.shift=3.0")


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """(tiny Wan pipeline folder, shards encoded with its VAE and text encoder)."""
    root = tmp_path_factory.mktemp("distill_wan")
    src = write_captioned_clips(root / "src", {f"{i}.mp4": (9, 32, 32, CAPTIONS[i % 3]) for i in range(4)})
    tiny_native_pipeline("wan").save_pretrained(root / "wan")
    encode_dataset(src, root / "wan" / "vae", root / "shards", buckets="9x32x32", text_encoder=str(root / "wan"),
                   max_text_tokens=16, num_workers=0, show_progress=False)
    return root / "wan", root / "shards"


def _config(wan, run_dir, *extra) -> DiffusersDistillConfig:
    folder, shards = wan
    return load_config(None, [f"distill.teacher={folder}", f"data.root={shards}", f"run_dir={run_dir}", *OVERRIDES,
                              *extra], schema=DiffusersDistillConfig)


def _frames(pipe, steps=2):
    torch.manual_seed(0)  # the student's scheduler re-noises from the global generator (diffusers passes none)
    return pipe("a red fox running", num_frames=9, height=32, width=32, num_inference_steps=steps,
                guidance_scale=1.0, output_type="np", generator=torch.Generator().manual_seed(0)).frames


def test_a_distilled_lora_gives_vidgens_frames_in_diffusers_wan_pipeline(wan, tmp_path):
    folder, shards = wan
    main = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pipelines" / "distill.py"),
                          run_name="distill")["main"]  # the script takes a diffusers folder as teacher
    assert main([f"distill.teacher={folder}", f"data.root={shards}", f"run_dir={tmp_path / 'run'}",
                 *OVERRIDES, "distill.method=consistency"]) == 0
    final = tmp_path / "run" / "final"
    spec = json.loads((final / "distillation.json").read_text())
    assert spec == {"method": "consistency", "steps": [1, 2], "guidance_scale": 5.0, "shift": 3.0}
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(final, subfolder="scheduler")
    assert scheduler.config.stochastic_sampling and scheduler.config.shift == 3.0
    ours = load_pipeline(folder, dtype="fp32")
    ours.set_progress_bar_config(disable=True)
    ours.scheduler = scheduler
    base = _frames(ours)
    ours.load_lora_weights(final)
    student = _frames(ours)
    assert np.abs(student - base).max() > 1e-4  # the adapter was trained
    native = diffusers_student(diffusers.WanPipeline, folder, final)
    for steps in (1, 2):
        assert np.abs(_frames(native, steps) - _frames(ours, steps)).max() <= 1e-5


@pytest.mark.slow  # make test resumes the vidgen distillation and the diffusers fine-tune; this adds the critic
def test_a_resumed_dmd2_run_is_bit_identical_critic_included(wan, tmp_path):
    same = ("distill.method=dmd2", "distill.student_every=2", "ckpt_every=2", "optim.schedule_steps=4")
    distill_diffusers(_config(wan, tmp_path / "a", "steps=4", *same))
    distill_diffusers(_config(wan, tmp_path / "b", "steps=2", *same))
    distill_diffusers(_config(wan, tmp_path / "b", "steps=4", *same))  # resumes at 2
    ckpt = [tmp_path / r / "checkpoints" / "step_00000004" for r in "ab"]
    a, b = (load_file(str(c / "diffusion_pytorch_model.safetensors")) for c in ckpt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = (torch.load(c / "state.pt", weights_only=True)["critic"] for c in ckpt)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load_pipeline(wan[0], dtype="fp32").transformer.state_dict()  # the critic is a full copy, trained
    assert any(not torch.equal(a[k], start[k.removeprefix("model.")]) for k in a if "lora" not in k)


def test_a_teacher_that_is_not_flow_matching_or_no_lora_rank_is_refused(wan, tmp_path):
    cog = tmp_path / "cog"
    cog.mkdir()
    (cog / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    with pytest.raises(ConfigError, match="needs a flow-matching teacher; CogVideoXPipeline predicts"):
        distill_diffusers(_config(wan, tmp_path / "r", f"distill.teacher={cog}"))
    with pytest.raises(ConfigError, match="lora.rank: distilling a diffusers model trains a LoRA"):
        distill_diffusers(_config(wan, tmp_path / "r", "lora.rank=0"))

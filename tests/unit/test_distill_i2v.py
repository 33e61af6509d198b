"""Few-step distillation of a tiny Wan image-to-video folder (``WanImageToVideoPipeline``, Wan 2.1 with a CLIP image
encoder) into a LoRA student on shards of (first frame, clip) pairs: diffusers' own ``WanImageToVideoPipeline``
loads it with ``load_lora_weights`` and, with the student's scheduler at its step counts and guidance 1, gives
vidgen's frames for the same image and seed."""
from __future__ import annotations

import json

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from helpers.shards import write_captioned_clips
from helpers.tiny_models import diffusers_student
from vidgen.distillation.diffusers_task import DiffusersDistillConfig, distill_diffusers
from vidgen.pipelines import load_pipeline
from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
from vidgen.training import encode_dataset, load_config

CAPTIONS = ["a red fox running", "a boat on a lake", "snow falling"]
OVERRIDES = ("data.batch=2", "data.max_text_tokens=16", "steps=3", "log_every=1", "ckpt_every=3",
             "optim.warmup_steps=0", "optim.lr=5e-2", "precision=fp32", "threads=1", "lora.rank=4",
             "distill.steps=[1,2]", "distill.shift=3.0")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wan_i2v(tmp_path_factory):
    """(tiny WanImageToVideoPipeline folder, shards with first frames encoded with its VAE and text encoder)."""
    root = tmp_path_factory.mktemp("distill_wan_i2v")
    src = write_captioned_clips(root / "src", {f"{i}.mp4": (9, 32, 32, CAPTIONS[i % 3]) for i in range(4)})
    tiny_native_pipeline("wan", pipeline_class="WanImageToVideoPipeline").save_pretrained(root / "wan")
    encode_dataset(src, root / "wan" / "vae", root / "shards", buckets="9x32x32", text_encoder=str(root / "wan"),
                   max_text_tokens=16, num_workers=0, show_progress=False, first_frames=True)
    return root / "wan", root / "shards"


def _frames(pipe, steps=2):
    torch.manual_seed(0)  # the student's scheduler re-noises from the global generator (diffusers passes none)
    image = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype("uint8"))
    return pipe(prompt="a red fox running", image=image, num_frames=9, height=32, width=32, num_inference_steps=steps,
                guidance_scale=1.0, max_sequence_length=16, output_type="np",
                generator=torch.Generator().manual_seed(0)).frames


@pytest.mark.parametrize("method", ["consistency", "dmd2"])
def test_an_i2v_student_gives_vidgens_frames_in_diffusers_own_i2v_pipeline(wan_i2v, method, tmp_path):
    folder, shards = wan_i2v
    cfg = load_config(None, [f"distill.teacher={folder}", f"data.root={shards}", f"run_dir={tmp_path / 'run'}",
                             *OVERRIDES, f"distill.method={method}"], schema=DiffusersDistillConfig)
    metrics = distill_diffusers(cfg)
    assert metrics["step"] == 3 and np.isfinite(metrics["loss"])
    final = tmp_path / "run" / "final"
    assert json.loads((final / "distillation.json").read_text())["steps"] == [1, 2]
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(final, subfolder="scheduler")
    ours = load_pipeline(folder, dtype="fp32")
    ours.set_progress_bar_config(disable=True)
    ours.scheduler = scheduler
    base = _frames(ours)
    ours.load_lora_weights(final)
    assert np.abs(_frames(ours) - base).max() > 1e-4  # the adapter was trained
    native = diffusers_student(diffusers.WanImageToVideoPipeline, folder, final)
    for steps in (1, 2):
        assert np.abs(_frames(native, steps) - _frames(ours, steps)).max() <= 1e-5

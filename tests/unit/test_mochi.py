"""Mochi, a whole family in one file (vidgen/families/mochi.py): a tiny random folder saved by diffusers'
``MochiPipeline`` samples as that pipeline does (its linear-quadratic sigmas on an inverting scheduler, batched
guidance in fp32); training takes the timestep and velocity the inverted sigmas imply, so the fine-tuned LoRA loads in
diffusers; what it cannot serve (distillation, window attention) is refused by name."""
from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch

from helpers.shards import write_captioned_clips
from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.families import family_named
from vidgen.adapters import DiffusersVideoTransformer
from vidgen.pipelines import DiffusersVideoPipeline, load_pipeline
from vidgen.pipelines.diffusers_tiny import TINY_SIZES, tiny_components, tiny_native_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models
MOCHI = family_named("mochi")
TEXT_TOKENS = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny random Mochi folder written by diffusers' own ``MochiPipeline.save_pretrained``."""
    path = tmp_path_factory.mktemp("tiny-mochi")
    native = tiny_native_pipeline(MOCHI.name)
    assert type(native) is diffusers.MochiPipeline and native.scheduler.config.invert_sigmas
    native.save_pretrained(path)
    return path


def _kwargs(**extra) -> dict:
    t, h, w = TINY_SIZES[MOCHI.name]
    return {**dict(num_frames=t, height=h, width=w, num_inference_steps=3, guidance_scale=4.5,
                   negative_prompt="blurry", max_sequence_length=TEXT_TOKENS, output_type="np"), **extra}


def _seeded(**extra) -> dict:
    return _kwargs(generator=torch.Generator().manual_seed(0), **extra)


def test_a_saved_mochi_folder_gives_mochi_pipelines_frames(folder):
    """Same seed, prompt and steps, fp32: diffusers' noise, sigmas, guidance and step, so diffusers' frames."""
    pipe = load_pipeline(folder, dtype="fp32")
    native = diffusers.MochiPipeline.from_pretrained(folder)
    native.set_progress_bar_config(disable=True)
    assert isinstance(pipe, DiffusersVideoPipeline) and pipe.family is MOCHI
    ours, ref = pipe("a red fox", **_seeded()).frames, native("a red fox", **_seeded()).frames
    t, h, w = TINY_SIZES[MOCHI.name]
    assert ours.shape == ref.shape == (1, t, h, w, 3)
    err = np.abs(ours - ref).max()
    print(f"Mochi fp32: frames max abs diff {err:.3g}")
    assert err <= 1e-5, err
    ours_lat = pipe("a red fox", **_seeded(output_type="latent")).frames
    ref_lat = native("a red fox", **_seeded(output_type="latent")).frames
    assert (ours_lat - ref_lat).abs().max() <= 1e-5
    unguided = pipe("a red fox", **_seeded(output_type="latent", guidance_scale=1.0)).frames
    assert (unguided - ours_lat).abs().max() > 1e-4  # the guidance took effect


@pytest.mark.parametrize("inverted", [True, False], ids=["inverted", "plain"])
def test_the_training_convention_is_the_one_its_sampler_walks(inverted):
    """With the velocity training targets at the timestep training gives each level, the family's timesteps and
    scheduler step walk the straight path from the noise to ``x0`` exactly (either scheduler convention)."""
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(invert_sigmas=inverted)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 12, 2, 2, 4, generator=g), torch.randn(1, 12, 2, 2, 4, generator=g)
    timesteps = MOCHI.timesteps(scheduler, 6, (2, 2, 4), "cpu")
    from diffusers.pipelines.mochi.pipeline_mochi import linear_quadratic_schedule
    levels = linear_quadratic_schedule(6, 0.025) + [0.0]  # noise levels, 1 -> 0
    x = noise.clone()
    for i, t in enumerate(timesteps):
        sigma = torch.tensor([levels[i]])
        assert torch.allclose(MOCHI.training_timestep(sigma, scheduler), t.reshape(1), atol=1e-3)
        velocity = MOCHI.velocity_sign(scheduler) * (noise - x0)
        x, _ = MOCHI.step(scheduler, velocity, timesteps, i, x)
        assert torch.allclose(x, (1 - levels[i + 1]) * x0 + levels[i + 1] * noise, atol=1e-5)
    assert (MOCHI.velocity_sign(scheduler) < 0) == inverted


def test_training_loss_feeds_the_transformer_the_inverted_timestep_and_velocity():
    parts = tiny_components(MOCHI.name)
    gen = DiffusersVideoTransformer(parts["transformer"], noise_scheduler=parts["scheduler"])
    seen = {}

    def spy(module, args, kwargs, out):
        seen.update(x=kwargs["hidden_states"], t=kwargs["timestep"], pred=out[0])

    gen.model.register_forward_hook(spy, with_kwargs=True)
    x0 = torch.randn(2, 12, 2, 2, 4, generator=torch.Generator().manual_seed(1))
    cond = DiffusersVideoPipeline.from_native(tiny_native_pipeline(MOCHI.name)).encode_prompt(
        ["a fox", "a boat"], max_text_tokens=TEXT_TOKENS, guidance=False)[0]
    loss, _ = gen.loss(x0, cond, torch.Generator().manual_seed(2))
    sigma = 1 - seen["t"] / 1000  # the inverted timestep gives back the noise level of the state
    noise = (seen["x"] - (1 - sigma[:, None, None, None, None]) * x0) / sigma[:, None, None, None, None]
    target = x0 - noise  # the velocity the inverted sigmas walk
    expected = ((seen["pred"] - target) ** 2).flatten(1).mean(1)
    assert torch.allclose(loss, expected.mean(), rtol=1e-4, atol=1e-6)
    with pytest.raises(InvalidInputError, match="noise_scheduler: training Mochi needs the pipeline's scheduler"):
        DiffusersVideoTransformer(parts["transformer"]).loss(x0, cond)


def test_a_mochi_lora_fine_tune_loads_in_diffusers_and_gives_vidgens_frames(folder, tmp_path):
    from vidgen.training import encode_dataset, load_config
    from vidgen.training.finetune import FineTuneConfig, finetune
    t, h, w = TINY_SIZES[MOCHI.name]
    src = write_captioned_clips(tmp_path / "src", {f"{i}.mp4": (t, h, w, c) for i, c in enumerate(["a fox", "a boat"])})
    encode_dataset(src, folder / "vae", tmp_path / "shards", buckets=f"{t}x{h}x{w}", text_encoder=str(folder),
                   max_text_tokens=TEXT_TOKENS, num_workers=0, show_progress=False)
    cfg = load_config(None, [f"pipeline={folder}", f"data.root={tmp_path / 'shards'}", "data.batch=2",
                             f"data.max_text_tokens={TEXT_TOKENS}", f"run_dir={tmp_path / 'run'}", "steps=2",
                             "log_every=1", "ckpt_every=2", "optim.warmup_steps=0", "optim.lr=5e-2",
                             "precision=fp32", "threads=1", "lora.rank=4", "lora.alpha=8"], schema=FineTuneConfig)
    metrics = finetune(cfg)
    assert metrics["step"] == 2 and np.isfinite(metrics["loss"])
    final = tmp_path / "run" / "final"
    ours = load_pipeline(folder, dtype="fp32")
    ours.set_progress_bar_config(disable=True)
    base = ours("a fox", **_seeded(num_inference_steps=2)).frames
    ours.load_lora_weights(final)
    tuned = ours("a fox", **_seeded(num_inference_steps=2)).frames
    assert np.abs(tuned - base).max() > 1e-4  # the adapter was trained
    native = diffusers.MochiPipeline.from_pretrained(folder)
    native.set_progress_bar_config(disable=True)
    native.load_lora_weights(final)  # diffusers' own loader and pipeline
    assert np.abs(native("a fox", **_seeded(num_inference_steps=2)).frames - tuned).max() <= 1e-5


def test_distillation_and_window_attention_are_refused_by_name(folder):
    from vidgen.adapters.window import window_attention
    from vidgen.distillation.diffusers_task import check_flow_family
    with pytest.raises(UnsupportedError, match=r"distillation: not available for the MochiPipeline family \(its "
                                               r"transformer takes the timestep 1000 \(1 - sigma\)"):
        check_flow_family(folder)
    with pytest.raises(UnsupportedError, match=r"window_attention: not available for the MochiPipeline family"):
        window_attention(load_pipeline(folder, dtype="fp32").transformer, window=(1, 3, 3))

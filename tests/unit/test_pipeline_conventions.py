"""diffusers' pipeline conventions on vidgen's three pipelines (tiny, live weights): ``num_timesteps`` for callbacks,
dynamic CFG through ``pipe._guidance_scale``, ``do_classifier_free_guidance``, ``interrupt``, and a pipeline built
with only its text components to run ``encode_prompt``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vidgen.errors import InvalidInputError

pytestmark = pytest.mark.usefixtures("one_thread")
KINDS = ("masked", "flow", "autoregressive")
PROMPT = "a red circle moving right"
SIZE = dict(num_frames=9, height=16, width=16)
STEPS = {"masked": dict(num_inference_steps=4), "flow": dict(num_inference_steps=4), "autoregressive": {}}


@pytest.fixture(scope="module")
def pipes(tiny_pipeline):
    return {kind: tiny_pipeline(kind) for kind in KINDS}


def run(pipe, kind, callback=None, seed=0, **kw):
    kw = {**SIZE, **STEPS[kind], **kw}
    return pipe(PROMPT, generator=torch.Generator().manual_seed(seed), callback_on_step_end=callback, **kw).frames


@pytest.mark.parametrize("kind", KINDS)
def test_num_timesteps_tells_a_callback_which_step_is_its_last(pipes, kind):
    pipe, steps = pipes[kind], []

    def callback(p, i, t, tensors):
        steps.append((i, p.num_timesteps))
        return {}
    run(pipe, kind, callback)
    expected = 4 if kind != "autoregressive" else pipe.vqvae.latent_grid(**SIZE)[0]  # AR: one step per latent frame
    assert [i for i, _ in steps] == list(range(expected)) and {n for _, n in steps} == {expected}
    assert pipe.num_timesteps == expected


@pytest.mark.parametrize("kind", KINDS)
def test_dynamic_cfg_a_callback_changes_the_guidance_of_the_following_steps(pipes, kind):
    """diffusers' test_callback_cfg (the scale grows by one per step) and the usual cut-off: CFG set to 1 after the
    first step gives another video than constant guidance; setting the same scale changes nothing."""
    pipe = pipes[kind]

    def grow(p, i, t, tensors):
        p._guidance_scale += 1.0
        return tensors
    run(pipe, kind, grow, guidance_scale=2.0)
    assert pipe.guidance_scale == 2.0 + pipe.num_timesteps and pipe.do_classifier_free_guidance

    def cut(p, i, t, tensors):
        p._guidance_scale = 1.0
        return {}

    def same(p, i, t, tensors):
        p._guidance_scale = 3.0
        return {}
    constant = run(pipe, kind, guidance_scale=3.0)
    assert np.array_equal(run(pipe, kind, same, guidance_scale=3.0), constant)
    assert not np.array_equal(run(pipe, kind, cut, guidance_scale=3.0), constant)
    run(pipe, kind, guidance_scale=1.0)
    assert not pipe.do_classifier_free_guidance


@pytest.mark.parametrize("kind", KINDS)
def test_interrupt_stops_after_the_step_that_set_it(pipes, kind):
    pipe, calls = pipes[kind], []

    def stop(p, i, t, tensors):
        calls.append(i)
        p._interrupt = True
        return {}
    if kind == "autoregressive":  # ends the video after the latent frames made so far, and says so
        with pytest.warns(UserWarning, match="interrupted after 1 of 3 latent frames"):
            video = run(pipe, kind, stop)
        assert video.shape[1] == 1 and calls == [0]
    else:  # the remaining steps are skipped; the frame count is the asked one
        video = run(pipe, kind, stop)
        assert video.shape == (1, 9, 16, 16, 3) and calls == [0] and np.isfinite(video).all()
        assert not np.array_equal(video, run(pipe, kind))
    assert not pipe.interrupt or calls  # a new call starts uninterrupted:
    run(pipe, kind)
    assert pipe.interrupt is False


@pytest.mark.parametrize("kind", KINDS)
def test_a_text_only_pipeline_encodes_prompts_like_the_full_one_and_refuses_to_sample(pipes, kind):
    """Users precompute prompt embeddings on small machines with a pipeline of only its text components."""
    full = pipes[kind]
    tokenizer, encoder = full._text_components()
    parts = {"masked": ("vqvae", "transformer", "scheduler"), "flow": ("vae", "transformer", "scheduler"),
             "autoregressive": ("vqvae", "transformer")}[kind]
    text_only = type(full)(**{name: None for name in parts}, text_encoder=encoder, tokenizer=tokenizer)
    length = full.transformer.backbone_config.max_text_tokens
    mine, theirs = text_only.encode_prompt([PROMPT, "a blue square"], max_text_tokens=length)[0], \
        full.encode_prompt([PROMPT, "a blue square"])[0]
    assert torch.equal(mine.text, theirs.text) and torch.equal(mine.text_mask, theirs.text_mask)
    assert torch.equal(mine.pooled, theirs.pooled)
    video = full(prompt_embeds=mine, generator=torch.Generator().manual_seed(0), **SIZE, **STEPS[kind]).frames
    assert np.array_equal(video, full([PROMPT, "a blue square"], generator=torch.Generator().manual_seed(0), **SIZE,
                                      **STEPS[kind]).frames)
    with pytest.raises(InvalidInputError, match="transformer.*built without"):
        text_only(PROMPT, **SIZE)

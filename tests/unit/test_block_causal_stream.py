"""The one block-causal chunk loop (``vidgen.generators.stream_loop.stream_chunks``) drives a diffusers Wan made
block-causal (``BlockCausal.stream``) as it drives vidgen's own ``ChunkStream`` (``stream_latents``): every chunk of the
stream equals an uncached reference loop (the whole sequence so far under the block-causal mask, per-chunk timesteps,
the same noise and Euler steps) within fp32 tolerance, with guidance, a shorter last chunk, window evictions and a
prompt switch (re-cache); given first frames are kept exactly and the continuation equals the reference with them as
clean context."""
from __future__ import annotations

import pytest
import torch

from vidgen.adapters.causal import block_causal
from vidgen.errors import InvalidInputError
from vidgen.generators import Conditioning
from vidgen.generators.causal import CausalFlowVideoTransformer
from vidgen.generators.causal_stream import stream_latents
from vidgen.generators.sampling import guide
from vidgen.testing import perturb_weights

from helpers.tiny_models import causal_wan

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 2e-5


@pytest.fixture(scope="module")
def wan():
    return causal_wan()


def _sigmas(steps: int) -> list:
    from diffusers import FlowMatchEulerDiscreteScheduler
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.tolist()


def reference_stream(whole, frames: int, c: int, steps: int, seed: int, shape: tuple, first=None, scale=1.0,
                     text_at=lambda i: None):
    """The stream made without a cache: each chunk denoised by Euler steps of ``whole(x, timesteps, text)`` (the
    whole sequence so far, clean chunks at timestep 0, the chunk at its level), its velocity the last chunk's;
    ``scale`` > 1: ``whole`` returns ``[uncond; cond]`` rows, guided. The noise is drawn as the stream draws it."""
    g, sigmas = torch.Generator().manual_seed(seed), _sigmas(steps)
    video = first if first is not None else torch.zeros(*shape[:2], 0, *shape[2:])
    for i in range(video.shape[2] // c, -(-frames // c)):
        n = min(c, frames - i * c)
        x = torch.randn(*shape[:2], n, *shape[2:], generator=g)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            seq = torch.cat([video, x], dim=2)
            t = torch.zeros(seq.shape[0], i + 1)
            t[:, i] = s * 1000
            rows = torch.cat([seq, seq]) if scale != 1 else seq
            v = whole(rows, t.repeat(2, 1) if scale != 1 else t, text_at(i))[:, :, -n:].float()
            v = guide(*v.chunk(2), scale) if scale != 1 else v
            x = x + (s_next - s) * v
        video = torch.cat([video, x], dim=2)
    return video


def _close(got, want):
    assert want.abs().max() > 1e-2 and (got - want).abs().max() <= TOL, (got - want).abs().max()


@pytest.mark.parametrize("window, sink, frames", [(1, 1, 7), (0, 0, 6)])
def test_the_wan_stream_through_the_one_loop_equals_the_uncached_reference(wan, window, sink, frames):
    """Guided (``[negative; text]`` rows in one pass), past evictions and a shorter last chunk."""
    g = torch.Generator().manual_seed(2)
    text, negative = torch.randn(1, 5, 8, generator=g), torch.randn(1, 5, 8, generator=g)
    causal = block_causal(wan, chunk_frames=2, window_chunks=window, sink_chunks=sink)
    try:
        bar = []
        chunks = list(causal.stream(text, negative=negative, frames=frames, hw=(4, 4), num_inference_steps=2,
                                    guidance_scale=2.0, generator=torch.Generator().manual_seed(3),
                                    progress=lambda it: bar.append(len(it)) or it))
        assert [x.shape[2] for x in chunks] == [2] * (frames // 2) + [1] * (frames % 2) and bar == [len(chunks)]
        want = reference_stream(lambda x, t, _: causal.reference(x, t, torch.cat([negative, text])), frames, 2, 2,
                                3, (1, 4, 4, 4), scale=2.0)
        _close(torch.cat(chunks, dim=2), want)
    finally:
        causal.remove()


def test_a_wan_prompt_switch_re_caches_and_equals_the_reference_under_the_new_prompt(wan):
    g = torch.Generator().manual_seed(4)
    first, second = torch.randn(1, 5, 8, generator=g), torch.randn(1, 5, 8, generator=g)
    causal = block_causal(wan, chunk_frames=2)
    try:
        got = torch.cat(list(causal.stream(first, frames=8, hw=(4, 4), num_inference_steps=2,
                                           prompts={2: (second, None)}, generator=torch.Generator().manual_seed(5))), 2)
        want = reference_stream(lambda x, t, text: causal.reference(x, t, text), 8, 2, 2, 5, (1, 4, 4, 4),
                                text_at=lambda i: first if i < 2 else second)
        _close(got, want)
    finally:
        causal.remove()


def test_wan_first_frames_are_kept_and_the_continuation_attends_them_as_clean_context(wan):
    g = torch.Generator().manual_seed(6)
    text, given = torch.randn(1, 5, 8, generator=g), torch.randn(1, 4, 4, 4, 4, generator=g)
    causal = block_causal(wan, chunk_frames=2, window_chunks=1, sink_chunks=1)
    try:
        stopped = []
        chunks = list(causal.stream(text, frames=10, hw=(4, 4), num_inference_steps=2, first_frames=given,
                                    generator=torch.Generator().manual_seed(7)))
        got = torch.cat(chunks, dim=2)
        assert len(chunks) == 5 and torch.equal(got[:, :, :4], given)
        want = reference_stream(lambda x, t, _: causal.reference(x, t, text), 10, 2, 2, 7, (1, 4, 4, 4), first=given)
        _close(got[:, :, 4:], want[:, :, 4:])
        interrupted = list(causal.stream(  # an interrupt ends the stream after the chunk it came in
            text, frames=10, hw=(4, 4), num_inference_steps=2, first_frames=given,
            callback=lambda i, t, kw: stopped.append(i) or {"interrupt": i == 2}))
        assert len(interrupted) == 4 and stopped == [0, 1, 2, 3]
        with pytest.raises(InvalidInputError, match="first_frames: .* a multiple of the chunk's 2 latent frames"):
            causal.stream(text, frames=10, hw=(4, 4), first_frames=given[:, :, :3])
        with pytest.raises(InvalidInputError, match="negative: guidance_scale=3.0 guides against"):
            causal.stream(text, frames=10, hw=(4, 4), guidance_scale=3.0)
    finally:
        causal.remove()


def _model():
    torch.manual_seed(0)
    model = CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, chunk_frames=1, window_chunks=2,
                                                   sink_chunks=1, max_grid=(8, 4, 4), text_dim=8)
    return perturb_weights(model, seed=3, scale=0.1).eval()


def test_vidgen_first_frames_are_kept_and_the_continuation_attends_them_as_clean_context():
    model = _model()
    g = torch.Generator().manual_seed(8)
    cond = Conditioning(torch.randn(1, 5, 8, generator=g), torch.ones(1, 5, dtype=torch.bool),
                        torch.randn(1, 8, generator=g))
    given = torch.randn(1, 4, 2, 4, 4, generator=g)
    got = torch.cat(list(stream_latents(model, cond, frames=6, hw=(4, 4), num_inference_steps=2, first_frames=given,
                                        generator=torch.Generator().manual_seed(9))), dim=2)
    assert got.shape == (1, 4, 6, 4, 4) and torch.equal(got[:, :, :2], given)
    with torch.no_grad():
        want = reference_stream(lambda x, t, _: model(x, t, cond).sample, 6, 1, 2, 9, (1, 4, 4, 4), first=given)
    _close(got[:, :, 2:], want[:, :, 2:])

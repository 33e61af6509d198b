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


def _tiny_wan_vae():
    """The tiny Wan family folder's VAE (16 latent channels, 8 pixels a latent cell, 4 frames a latent frame)."""
    from diffusers import AutoencoderKLWan

    from vidgen.tokenizers import DiffusersVideoVAE
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    return DiffusersVideoVAE(perturb_weights(vae, seed=2, scale=0.05).eval())


def test_a_wan_stream_from_an_image_commits_its_latent_chunk_and_equals_the_reference_with_it_clamped():
    """The real-model path conditioned on a first frame: the image encoded by the Wan VAE as the first latent chunk
    (2 latent frames: the image held still for 5 frames), committed clean; every later chunk equals the uncached
    block-causal reference with that chunk clamped, and the decoded video's frame 0 is the VAE's round trip of the
    image."""
    from vidgen.pipelines import first_chunk_latents
    from vidgen.tokenizers.tokens import tokens_to_video, video_to_tokens
    wan16, vae = causal_wan(channels=16), _tiny_wan_vae()
    g = torch.Generator().manual_seed(10)
    text, image = torch.randn(1, 5, 8, generator=g), torch.rand(3, 32, 32, generator=g)
    causal = block_causal(wan16, chunk_frames=2, window_chunks=1, sink_chunks=1)
    try:
        first = first_chunk_latents(vae, image, height=32, width=32, chunk_frames=causal.latent_chunk_frames)
        assert first.shape == (1, 16, 2, 4, 4)
        got = torch.cat(list(causal.stream(text, frames=6, hw=(4, 4), num_inference_steps=2, first_frames=first,
                                           generator=torch.Generator().manual_seed(11))), dim=2)
        assert torch.equal(got[:, :, :2], first)
        want = reference_stream(lambda x, t, _: causal.reference(x, t, text), 6, 2, 2, 11, (1, 16, 4, 4), first=first)
        _close(got[:, :, 2:], want[:, :, 2:])
        other = first_chunk_latents(vae, image.flip(-1), height=32, width=32, chunk_frames=2)
        moved = torch.cat(list(causal.stream(text, frames=6, hw=(4, 4), num_inference_steps=2, first_frames=other,
                                             generator=torch.Generator().manual_seed(11))), dim=2)
        assert (moved[:, :, 2:] - got[:, :, 2:]).abs().max() > 1e-3  # the image reaches the chunks after it
    finally:
        causal.remove()
    with torch.no_grad():
        video = tokens_to_video(vae, got, 21, 32, 32)
        round_trip = tokens_to_video(vae, video_to_tokens(vae, image[None, :, None] * 2 - 1), 1, 32, 32)
    assert video.shape == (1, 3, 21, 32, 32)
    assert (video[:, :, 0] - round_trip[:, :, 0]).abs().max() < 1e-4


def test_an_image_to_video_wan_transformer_is_refused_by_name():
    """Condition channels besides the latents (Wan 2.1 / 2.2 image-to-video and first-last-frame transformers):
    the stream feeds latents only."""
    from vidgen.errors import UnsupportedError
    with pytest.raises(UnsupportedError, match=r"block_causal: WanTransformer3DModel reads 36 input channels, its 16 "
                                               r"latent channels and 20 of condition .*first_chunk_latents"):
        block_causal(causal_wan(channels=16, in_channels=36), chunk_frames=2)

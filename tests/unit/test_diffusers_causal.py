"""A diffusers Wan transformer made block-causal: a chunk streamed against the rolling KV cache (absolute RoPE
positions, the sink and the window) equals the uncached whole-sequence forward under the block-causal mask with
per-chunk timesteps; the model's own processors come back on remove()."""
from __future__ import annotations

import pytest
import torch

from helpers.tiny_models import causal_wan
from vidgen.adapters.causal import block_causal
from vidgen.errors import InvalidInputError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wan():
    return causal_wan()


@pytest.mark.parametrize("window, sink", [(0, 0), (1, 1)])
def test_a_streamed_chunk_equals_the_masked_whole_sequence(wan, window, sink):
    g = torch.Generator().manual_seed(2)
    clean, text = torch.randn(1, 4, 8, 4, 4, generator=g), torch.randn(1, 5, 8, generator=g)
    causal = block_causal(wan, chunk_frames=2, window_chunks=window, sink_chunks=sink)
    try:
        i = 3  # the last of 4 chunks: with window 1 and a sink it attends chunks 0, 2 and itself
        noisy = clean.clone()
        noisy[:, :, 2 * i:] = torch.randn(1, 4, 2, 4, 4, generator=g)
        timestep = torch.zeros(1, 4)
        timestep[:, i] = 700.0
        want = causal.reference(noisy, timestep, text)[:, :, 2 * i:]
        for j in range(i):
            causal.commit(clean[:, :, 2 * j:2 * j + 2], text)
        got = causal.predict(noisy[:, :, 2 * i:], 700.0, text)
        assert want.abs().max() > 1e-2 and (got - want).abs().max() <= 1e-5
        assert len(causal.cache) == (i if window == 0 else sink + window)
        whole = causal.reference(noisy, timestep, text)
        causal.remove()
        dense = wan(hidden_states=noisy, timestep=timestep.repeat_interleave(8, 1), encoder_hidden_states=text,
                    return_dict=False)[0]
        assert (dense - whole).abs().max() > 1e-4  # the mask matters: the dense model sees later chunks
    finally:
        causal.remove()


def test_bad_chunks_are_refused_by_name(wan):
    causal = block_causal(wan, chunk_frames=2)
    try:
        with pytest.raises(InvalidInputError, match="a chunk holds 2 latent frames, got 3"):
            causal.predict(torch.zeros(1, 4, 3, 4, 4), 500.0, torch.zeros(1, 5, 8))
        with pytest.raises(InvalidInputError, match="already swapped by vidgen"):
            block_causal(wan, chunk_frames=1)
    finally:
        causal.remove()

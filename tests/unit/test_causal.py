"""The block-causal flow generator: a chunk streamed against the rolling KV cache equals the uncached whole-sequence
forward (fp32, 1e-5), past the window's evictions too; RoPE positions stay bounded over 10,000 latent frames and the
cache holds no more bytes there than at 1,025; a prompt switch re-caches; chunk layouts it cannot run are refused by name."""
from __future__ import annotations

import pytest
import torch

import vidgen.generators.causal_stream as causal_stream
from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators import Conditioning
from vidgen.generators.causal import CausalFlowVideoTransformer, attended_chunks, swap_context
from vidgen.generators.causal_stream import ChunkStream, stream_latents
from vidgen.testing import perturb_weights


def _model(chunk_frames=1, window_chunks=2, sink_chunks=1, t=8, **arch):
    torch.manual_seed(0)
    model = CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, chunk_frames=chunk_frames,
                                                  window_chunks=window_chunks, sink_chunks=sink_chunks,
                                                  max_grid=(t, 4, 4), text_dim=8, **arch)
    return perturb_weights(model, seed=3, scale=0.1).eval()  # live: the zero-initialised gates and head opened


def _cond(seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    return Conditioning(torch.randn(batch, 5, 8, generator=g), torch.ones(batch, 5, dtype=torch.bool),
                        torch.randn(batch, 8, generator=g))


def test_attended_chunks_keep_the_sink_and_the_window():
    assert attended_chunks(0, 1, 2) == [0]
    assert attended_chunks(3, 1, 2) == [0, 1, 2, 3]
    assert attended_chunks(6, 1, 2) == [0, 4, 5, 6]
    assert attended_chunks(6, 0, 2) == [4, 5, 6]
    assert attended_chunks(4, 2, 0) == [0, 1, 2, 3, 4]  # no window: every earlier chunk


@pytest.mark.parametrize("chunk_frames", [1, 2])
def test_a_streamed_chunk_equals_the_uncached_forward(chunk_frames):
    model = _model(chunk_frames=chunk_frames, t=8)
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(1, 4, 8, 4, 4, generator=g)
    cond = _cond()
    n = 8 // chunk_frames
    for i in (1, n - 1):  # before any eviction, and after chunks left the window
        noisy = clean.clone()
        lo, hi = i * chunk_frames, (i + 1) * chunk_frames
        noisy[:, :, lo:hi] = torch.randn(1, 4, chunk_frames, 4, 4, generator=g)
        timestep = torch.zeros(1, n)
        timestep[:, i:] = 700.0
        with torch.no_grad():
            reference = model(noisy, timestep, cond).sample[:, :, lo:hi]
            stream = ChunkStream(model, cond, (4, 4))
            for j in range(i):
                stream.commit(clean[:, :, j * chunk_frames:(j + 1) * chunk_frames])
            stream.predict(torch.randn_like(noisy[:, :, lo:hi]), 900.0)  # an earlier step: the next reuses its keys
            streamed = stream.predict(noisy[:, :, lo:hi], 700.0)
        assert reference.abs().max() > 1e-2  # a live prediction
        assert (streamed - reference).abs().max() <= 1e-5, i
        assert len(stream.cache) <= 1 + 2  # the sink and the window


def test_a_windowed_model_trains_on_clips_longer_than_its_max_grid():
    """With a window every chunk attends at most max_grid[0] frames laid end to end, so a clip of any length is one
    forward, and each chunk's output is the one a stream (which never holds more than the window) computes."""
    model = _model(window_chunks=2, sink_chunks=1, t=4)  # attends (1 + 2 + 1) = 4 frames = max_grid t
    g = torch.Generator().manual_seed(2)
    clean, cond = torch.randn(1, 4, 9, 4, 4, generator=g), _cond()
    for i in (4, 8):
        noisy = clean.clone()
        noisy[:, :, i:] = torch.randn(1, 4, 9 - i, 4, 4, generator=g)
        timestep = torch.zeros(1, 9)
        timestep[:, i:] = 600.0
        with torch.no_grad():
            reference = model(noisy, timestep, cond).sample[:, :, i:i + 1]  # 9 token frames, max_grid t = 4
            stream = ChunkStream(model, cond, (4, 4))
            for j in range(i):
                stream.commit(clean[:, :, j:j + 1])
            streamed = stream.predict(noisy[:, :, i:i + 1], 600.0)
        assert reference.abs().max() > 1e-2
        assert (streamed - reference).abs().max() <= 1e-5, i
    full = _model(window_chunks=0, sink_chunks=0, t=4)  # every earlier chunk: positions grow with the clip
    with pytest.raises(InvalidInputError, match=r"token grid \(9, 2, 2\) exceeds this model's max_grid \(4, 4, 4\)"):
        full(clean, torch.zeros(1, 9), cond)


@pytest.mark.parametrize("chunk_frames", [1, 2])
def test_a_deferred_cache_pass_equals_its_own_pass(chunk_frames, monkeypatch):
    """``commit_later`` (a chunk's cache pass inside the next chunk's first call, as ``stream_latents`` streams)
    against ``commit`` (its own pass, the reference), past evictions, a prompt switch and guidance (fp32, 1e-5)."""
    model = _model(chunk_frames=chunk_frames, t=8)
    prompts = {3: (_cond(1, batch=2), None)}  # chunk 3 switches the prompt (re-cache)

    def stream():
        return torch.cat(list(stream_latents(model, _cond(0, batch=2), frames=7 * chunk_frames - 1, hw=(4, 4),
                                             batch=2, num_inference_steps=2, guidance_scale=2.0, prompts=prompts,
                                             generator=torch.Generator().manual_seed(6))), dim=2)
    deferred = stream()
    monkeypatch.setattr(ChunkStream, "commit_later", ChunkStream.commit)
    reference = stream()
    assert deferred.shape == reference.shape == (2, 4, 7 * chunk_frames - 1, 4, 4)
    assert reference.abs().max() > 1e-2 and (deferred - reference).abs().max() <= 1e-5


def test_a_step_with_gradient_after_steps_without_reaches_the_text_layers():
    """The stream embeds its prompt once for steps without gradient; a step with gradient (Self-Forcing's kept step)
    still trains the text projection and each block's text keys and values."""
    model = _model()
    stream = ChunkStream(model, _cond(), (4, 4))
    x = torch.randn(1, 4, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        stream.commit(x)
        stream.predict(x, 900.0)
    stream.predict(x, 500.0).square().sum().backward()
    assert model.backbone.blocks[0].cross.kv.weight.grad.abs().sum() > 0
    embed = model.cond_embed
    assert all(p.grad.abs().sum() > 0 for p in (embed.text_proj[0].weight, embed.pooled_proj[0].weight))


def _held_bytes(tensors) -> tuple[int, int]:
    """The bytes ``tensors`` keep alive (each storage once: a slice keeps its whole base), and their own bytes."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values()), sum(t.nbytes for t in tensors)


def _cache_tensors(stream: ChunkStream) -> list:
    """What a stream holds between chunks: the rolling cache's keys and values and the committed latents."""
    return [t for layer in stream.cache.layers for kv in layer.values() for t in kv] + list(stream.clean.values())


@pytest.mark.parametrize("frames, reference", [(400, 100), pytest.param(10_000, 1_025, marks=pytest.mark.slow)])
def test_positions_and_the_cache_stay_bounded_over_ten_thousand_latent_frames(frames, reference, monkeypatch,
                                                                              one_thread):
    """Positions stay within the trained context, and the cache's bytes (the memory its tensors keep alive, read
    after every chunk) never exceed what they were by ``reference`` latent frames (1,025, the length the
    100-to-1,025 memory figure goes to) and end equal to it."""
    model = _model(chunk_frames=4, window_chunks=2, sink_chunks=1, t=16, depth=1)
    widest, streams = [], []
    angles = causal_stream.rope3d_angles
    monkeypatch.setattr(causal_stream, "rope3d_angles",
                        lambda grid, *a, **k: widest.append(grid[0]) or angles(grid, *a, **k))

    class Recorded(ChunkStream):  # the stream stream_latents makes, kept to read its cache
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            streams.append(self)
    monkeypatch.setattr(causal_stream, "ChunkStream", Recorded)
    chunks = stream_latents(model, None, frames=frames, hw=(2, 2), num_inference_steps=1,
                            generator=torch.Generator().manual_seed(0))
    total, held = 0, []
    for x in chunks:
        total += x.shape[2]
        assert torch.isfinite(x).all()
        kept, own = _held_bytes(_cache_tensors(streams[-1]))
        assert kept == own, total  # nothing beyond the cached tensors' own bytes
        held.append((total, kept))
    assert total == frames and len(streams) == 1
    assert max(widest) - 1 == model.max_position() == (1 + 2 + 1) * 4 - 1
    at_reference = max(b for n, b in held if n <= reference)
    assert at_reference > 0 and max(b for _, b in held) == at_reference == held[-1][1], (at_reference, held[-1])


def test_a_prompt_switch_re_caches_the_held_chunks_under_the_new_prompt():
    model = _model(window_chunks=6, sink_chunks=0)
    clean = torch.randn(1, 4, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    first, second = _cond(0), _cond(1)
    with torch.no_grad():
        switched = ChunkStream(model, first, (4, 4))
        fresh = ChunkStream(model, second, (4, 4))
        for j in range(3):
            switched.commit(clean[:, :, j:j + 1])
            fresh.commit(clean[:, :, j:j + 1])
        before = switched.cache.layers[1][2][0].clone()
        switched.recache(second)
    after = switched.cache.layers[1][2][0]
    assert (after - before).abs().max() > 1e-4  # the keys changed with the prompt
    assert torch.equal(after, fresh.cache.layers[1][2][0]) and switched.next == 3


def test_chunk_layouts_it_cannot_run_are_refused_by_name():
    with pytest.raises(ConfigError, match="chunk_frames must be an int >= 1, got 0"):
        _model(chunk_frames=0)
    with pytest.raises(ConfigError, match="sink_chunks=1 needs a window"):
        _model(window_chunks=0, sink_chunks=1)
    with pytest.raises(ConfigError, match="attends 16 token frames, more than the trained context"):
        _model(chunk_frames=4, window_chunks=2, sink_chunks=1, t=8)


def test_the_diffusion_forcing_loss_trains_and_sample_streams_guided_chunks():
    model = _model().train()
    x0 = torch.randn(2, 4, 6, 4, 4, generator=torch.Generator().manual_seed(4))
    loss, logs = model.loss(x0, _cond(batch=2), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and model.patch.proj.weight.grad.abs().sum() > 0
    model.eval()
    calls = [model.sample((6, 4, 4), 2, _cond(batch=2), num_inference_steps=2, guidance_scale=3.0,
                          generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert calls[0].shape == (2, 4, 6, 4, 4) and torch.isfinite(calls[0]).all() and torch.equal(*calls)


def test_a_context_swap_takes_the_first_chunks_from_another_clip_and_scores_only_the_own():
    """Prompt switches in training: a swapped clip's first chunks (the sink always among them) are another row's,
    never its own; the rest and every unswapped row are untouched, and the mask marks each row's own frames."""
    x0 = torch.arange(4.0)[:, None, None, None, None].expand(4, 2, 6, 2, 2).clone()  # row i holds the value i
    swap = torch.tensor([True, False, True, True])
    out, own = swap_context(x0, swap, torch.tensor([0.0, 0.5, 0.99, 0.5]), torch.tensor([0.0, 0.0, 0.99, 0.5]),
                            chunk_frames=2)  # 3 chunks: rows keep chunks 1.., -, 2.., 2..
    firsts = {0: 1, 2: 2, 3: 2}
    for row in range(4):
        values = out[row, 0, :, 0, 0]
        k = firsts.get(row, 0) * 2  # frames taken from the donor
        assert (values[k:] == row).all() and (values[:k] != row).all() and len(set(values[:k].tolist())) <= 1
        assert own[row].tolist() == [0.0] * k + [1.0] * (6 - k)
    assert torch.equal(out[1], x0[1])
    model = _model(t=6).train()
    x = torch.randn(4, 4, 6, 4, 4, generator=torch.Generator().manual_seed(4))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain, _ = model.loss(x, _cond(batch=4), generator=g())
    assert torch.equal(plain, model.loss(x, _cond(batch=4), generator=g(), context_swap=0.0)[0])
    swapped, _ = model.loss(x, _cond(batch=4), generator=g(), context_swap=1.0)
    swapped.backward()
    assert torch.isfinite(swapped) and not torch.equal(swapped, plain)


@pytest.mark.parametrize("deferred", [False, True])
def test_the_cache_holds_the_same_bytes_at_100_and_1025_latent_frames(deferred, one_thread):
    """Counted by the memory the held tensors keep alive (a slice keeps its whole base), for chunks cached by their
    own pass and by a pass riding on the next chunk's call."""
    model = _model(chunk_frames=1, window_chunks=2, sink_chunks=1, depth=1)
    stream = ChunkStream(model, _cond(), (2, 2))
    held = []

    with torch.no_grad():
        for i in range(1025):
            x = torch.randn(1, 4, 1, 2, 2, generator=torch.Generator().manual_seed(i))
            if deferred:
                stream.predict(x, 500.0)  # runs the previous chunk's deferred pass
                stream.commit_later(x)
            else:
                stream.commit(x)
            kept, own = _held_bytes(_cache_tensors(stream))
            assert kept == own, i  # nothing beyond the cached tensors' own bytes
            held.append(kept)
    assert max(held[:100]) == max(held) == held[-1] > 0  # flat: the sink and the window, whatever the length


def test_init_from_a_flow_model_carries_its_weights_over():
    """``init_from`` a bidirectional flow model (CausVid's start): with one chunk holding every frame the block-causal
    model computes what the flow model computes (live weights), so everything it shares was carried over, the patch
    embedding's columns of the noisy latents included; a model of another backbone is refused."""
    from vidgen.generators import FlowVideoTransformer
    from vidgen.training.checkpoint import copy_weights
    torch.manual_seed(0)
    flow = perturb_weights(FlowVideoTransformer.from_preset("tiny", in_channels=4, num_classes=5, max_grid=(4, 4, 4)),
                           seed=4, scale=0.1).eval()
    model = CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, num_classes=5, max_grid=(4, 4, 4),
                                                   chunk_frames=4, window_chunks=0, sink_chunks=0).eval()
    copy_weights(model, flow, "flow", ignore=set(model.training_only_config))
    x, cond = torch.randn(2, 4, 4, 4, 4, generator=torch.Generator().manual_seed(5)), _cond_classes(2)
    with torch.no_grad():
        t = torch.tensor([300.0, 800.0])
        want, got = flow(x, t, cond).sample, model(x, t, cond).sample
    assert want.abs().max() > 1e-2 and (got - want).abs().max() <= 1e-5
    wider = FlowVideoTransformer.from_preset("tiny", in_channels=4, num_classes=5, max_grid=(4, 4, 4), depth=3)
    with pytest.raises(ConfigError, match="init_from: other holds a FlowVideoTransformer that differs"):
        copy_weights(model, wider, "other", ignore=set(model.training_only_config))


def _cond_classes(batch):
    return Conditioning(class_labels=torch.arange(batch) % 5)

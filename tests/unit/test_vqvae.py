"""Discrete causal tokenizers: one token-id interface over VQ / FSQ / LFQ / BSQ (and residual FSQ / VQ)."""
import pytest
import torch

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.testing import perturb_weights
from vidgen.tokenizers.quantizers import CodebookUsage
from vidgen.tokenizers.vqvae import CausalVQVAE

QUANTIZERS = ["fsq", "lfq", "bsq", "vq"]


def make(quantizer, live: bool = True, **kw):
    """Tiny tokenizer; ``live``: perturbed weights, so the zero-initialised residual branches (temporal convs
    included) contribute and chunking / streaming / causality claims are tested where they can fail."""
    torch.manual_seed(0)
    tok = CausalVQVAE.from_preset("tiny", quantizer=quantizer, **kw).eval()
    return perturb_weights(tok, seed=3, scale=0.05) if live else tok


def video(b=2, t=7, h=20, w=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_detokenize_equals_straight_through_forward(quantizer):
    tok, x = make(quantizer), video()
    ids = tok.tokenize(x)
    assert ids.dtype == torch.long and ids.shape == (2, *tok.latent_grid(7, 20, 24))
    assert ids.min() >= 0 and ids.max() < tok.vocab_size
    with torch.no_grad():
        straight_through = tok(x).sample
    decoded = tok.detokenize(ids, num_frames=7, height=20, width=24)
    assert decoded.shape == x.shape
    torch.testing.assert_close(decoded, straight_through, atol=1e-5, rtol=0)


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_chunked_tokenize_equals_one_shot(quantizer):
    tok, x = make(quantizer), video(b=1, t=10)
    ids = tok.tokenize(x)
    for chunk in (1, 3, 4):
        assert torch.equal(tok.tokenize(x, chunk_frames=chunk), ids), f"chunk_frames={chunk}"


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_save_load_round_trip_gives_identical_ids(quantizer, tmp_path):
    tok, x = make(quantizer), video(b=1)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = CausalVQVAE.from_pretrained(tmp_path).eval()
    assert loaded.config.quantizer == quantizer
    assert torch.equal(loaded.tokenize(x), tok.tokenize(x))
    ids = tok.tokenize(x)
    assert torch.equal(loaded.detokenize(ids), tok.detokenize(ids))


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_gradients_reach_the_encoder(quantizer):
    tok = make(quantizer).train()
    out = tok.reconstruct(video(b=2, t=5, h=16, w=16))
    loss = (out.sample - 0.3).abs().mean() + out.bottleneck.loss
    loss.backward()
    grad = tok.encoder.stem.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_residual_fsq_has_a_depth_axis():
    tok, x = make("fsq", num_quantizers=2), video(b=1)
    ids = tok.tokenize(x)
    assert ids.shape == (1, *tok.latent_grid(7, 20, 24), 2)
    assert tok.bits_per_token == pytest.approx(2 * torch.log2(torch.tensor(1000.0)).item())
    with torch.no_grad():
        torch.testing.assert_close(tok.detokenize(ids, num_frames=7, height=20, width=24), tok(x).sample, atol=1e-5, rtol=0)


def test_stream_decoder_equals_detokenize():
    tok, x = make("fsq"), video(b=1, t=13)
    ids = tok.tokenize(x)
    stream = tok.stream_decoder(height=20, width=24)
    pieces = [stream.push(ids[:, s : s + 2]) for s in range(0, ids.shape[1], 2)]
    torch.testing.assert_close(torch.cat(pieces, dim=2), tok.detokenize(ids, height=20, width=24), atol=1e-5, rtol=0)


def test_tokenize_never_updates_the_vq_codebook():
    tok = make("vq").train()
    before = [b.clone() for b in tok.bottleneck.quantizer.buffers()]
    tok.tokenize(video())
    assert all(torch.equal(a, b) for a, b in zip(before, tok.bottleneck.quantizer.buffers()))


def test_image_is_a_one_frame_video():
    tok, x = make("lfq"), video(b=1, t=9)
    assert torch.equal(tok.tokenize(x[:, :, :1]), tok.tokenize(x)[:, :1])


def test_bad_ids_and_configs_raise_clear_errors():
    tok = make("fsq")
    grid = (1, 2, 3, 3)
    with pytest.raises(InvalidInputError, match=r"\[0, 1000\)"):
        tok.detokenize(torch.full(grid, 1000))
    with pytest.raises(InvalidInputError, match="int64"):
        tok.detokenize(torch.zeros(grid))
    with pytest.raises(InvalidInputError, match="shape"):
        tok.detokenize(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="3 \\(RGB\\) channels"):
        tok.tokenize(torch.zeros(1, 4, 3, 16, 16))
    with pytest.raises(ConfigError, match="quantizer"):
        CausalVQVAE(quantizer="kmeans")
    with pytest.raises(ConfigError, match="residual"):
        CausalVQVAE(quantizer="lfq", num_quantizers=2)


def test_codebook_usage_statistics():
    usage = CodebookUsage(8)
    usage.update(torch.tensor([0, 1, 2, 3]))
    assert usage.utilization == 0.5
    assert usage.perplexity == pytest.approx(4.0)
    usage.update(torch.tensor([[0, 0], [0, 0]]))
    assert usage.total == 8 and usage.perplexity < 4.0


def test_fsq_level_usage_matches_fsq_index_layout():
    from vector_quantize_pytorch import FSQ

    levels = (4, 3, 5)
    fsq = FSQ(levels=list(levels))
    ids = torch.randint(0, 60, (500,), generator=torch.Generator().manual_seed(0))
    usage = CodebookUsage(60)
    usage.update(ids)
    per_axis = fsq.indices_to_level_indices(ids)  # (500, 3): FSQ's own decomposition of the ids
    shares = usage.level_usage(levels)
    for axis, n in enumerate(levels):
        expected = torch.bincount(per_axis[:, axis].long(), minlength=n).double() / 500
        assert shares[axis] == pytest.approx(expected.tolist())
    with pytest.raises(ConfigError, match="vocab_size"):
        usage.level_usage((8, 8))


def test_independent_axes_utilization():
    levels = (4, 3)
    fully_correlated = CodebookUsage(12)
    fully_correlated.update(torch.tensor([0, 5, 10] * 200))  # (level0, level1) = (0,0), (1,1), (2,2) only
    assert fully_correlated.utilization == 0.25
    # the marginals alone (levels 0-2 on both axes, equally often) would fill all 9 of their combinations
    assert fully_correlated.independent_axes_utilization(levels) == pytest.approx(9 / 12)
    uniform = CodebookUsage(12)
    uniform.update(torch.arange(12).repeat(100))
    assert uniform.independent_axes_utilization(levels) == pytest.approx(1.0)


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_ids_are_causal_on_live_weights(quantizer):
    """A prefix of the video gives the prefix of the ids, and later frames never change earlier ids."""
    tok, x = make(quantizer), video(b=1, t=13)
    ids = tok.tokenize(x)
    for k in range(3):
        assert torch.equal(tok.tokenize(x[:, :, : 1 + 4 * k]), ids[:, : 1 + k]), f"prefix of {1 + 4 * k} frames"
    later = x.clone()
    later[:, :, 5:] = video(b=1, t=8, seed=7)
    assert torch.equal(tok.tokenize(later)[:, :2], ids[:, :2])
    assert not torch.equal(tok.tokenize(later), ids)  # the later frames do reach the later ids


def test_fsq_entropy_term_spreads_correlated_axes_over_the_codebook():
    """The FSQ code-usage remedy: starting from perfectly correlated axes (every axis carries the same value, so
    only a handful of the 1000 level combinations occur), minimising the term alone spreads the rounded codes
    over most of the codebook; its soft assignment sits on FSQ's own pre-rounding values."""
    from vector_quantize_pytorch import FSQ

    from vidgen.tokenizers.quantizers import fsq_entropy_loss

    levels = (8, 5, 5, 5)
    fsq = FSQ(levels=list(levels))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1024, 1, generator=g).repeat(1, 4).requires_grad_(True)

    def used(values):
        with torch.no_grad():
            return fsq(values[None])[1].unique().numel()

    before = used(z)
    opt = torch.optim.Adam([z], lr=0.05)
    losses = []
    for _ in range(150):
        loss = fsq_entropy_loss(z, levels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = used(z)
    assert before <= 20 and after >= 400, (before, after)  # 1024 uniform draws would hit ~640 codes
    assert losses[-1] < losses[0] - 1.0
    with pytest.raises(ConfigError, match="fsq_entropy_weight"):
        CausalVQVAE.from_preset("tiny", quantizer="lfq", fsq_entropy_weight=0.1)
    tok = make("fsq", fsq_entropy_weight=0.1).train()  # the term reaches the bottleneck loss in training only
    assert tok.reconstruct(video(b=1, t=5, h=16, w=16)).bottleneck.loss.item() != 0.0
    with torch.no_grad():
        assert tok.reconstruct(video(b=1, t=5, h=16, w=16)).bottleneck.loss.item() == 0.0

"""Random draws and losses do not depend on how a batch is split over processes (vidgen.rng.RowGenerator): the
in-process half of the data-parallel guarantee; tests/integration/test_distributed_equivalence.py runs the real 2-process one."""
import pytest
import torch

from vidgen.errors import InvalidInputError
from vidgen.generators import AutoregressiveVideoTransformer, Conditioning, FlowVideoTransformer, MaskedVideoTransformer
from vidgen.rng import RowGenerator, rows
from vidgen.testing import perturb_weights
from vidgen.training.losses import PerceptualLoss


def _split(draw, world: int = 2, seed: int = 3):
    """``draw(RowGenerator)`` once whole (batch 4) and as ``world`` shares, re-interleaved into global order."""
    whole = draw(RowGenerator(torch.Generator().manual_seed(seed)), 4)
    shares = [draw(RowGenerator(torch.Generator().manual_seed(seed), r, world), 4 // world) for r in range(world)]
    joined = torch.stack(shares, 1).flatten(0, 1)  # rank r's row i is global row i * world + r
    return whole, joined


@pytest.mark.parametrize("kind", ["rand", "randn", "randint"])
def test_row_shares_are_rows_of_the_global_draw(kind):
    draw = {"rand": lambda g, b: g.rand(b, 3, 2), "randn": lambda g, b: g.randn(b, 5),
            "randint": lambda g, b: g.randint(7, b, 2)}[kind]
    whole, joined = _split(draw)
    assert torch.equal(whole, joined)


def test_one_process_draws_what_torch_draws():
    assert torch.equal(rows(torch.Generator().manual_seed(5)).randn(3, 4),
                       torch.randn(3, 4, generator=torch.Generator().manual_seed(5)))
    with pytest.raises(InvalidInputError, match="rank"):
        RowGenerator(None, rank=2, world=2)
    with pytest.raises(InvalidInputError, match="generator"):
        rows(42)


def _build(kind: str):
    torch.manual_seed(0)
    kw = {"text_dim": 8, "max_text_tokens": 3, "max_grid": (3, 4, 4), "cond_dropout": 0.3, "task_prob": 0.7}
    if kind == "flow":
        model = FlowVideoTransformer.from_preset("tiny", in_channels=4, **kw)
        x = torch.randn(4, 4, 3, 4, 4)
    else:
        cls = MaskedVideoTransformer if kind == "masked" else AutoregressiveVideoTransformer
        kw.pop("task_prob") if kind == "ar" else None
        model = cls.from_preset("tiny", vocab_size=32, **kw)
        x = torch.randint(0, 32, (4, 3, 4, 4))
    cond = Conditioning(torch.randn(4, 3, 8), torch.ones(4, 3, dtype=torch.bool), torch.randn(4, 8))
    return perturb_weights(model, seed=1, scale=0.05).eval(), x, cond


@pytest.mark.parametrize("kind", ["masked", "flow", "ar"])
def test_generator_loss_is_the_same_however_the_batch_is_split(kind):
    """Per-sample noise / timesteps / masks / CFG dropout and per-sample loss means: the mean of the 2 processes'
    losses (what DDP's gradient average optimises) equals the loss of the whole batch."""
    model, x, cond = _build(kind)
    with torch.no_grad():
        whole, _ = model.loss(x, cond, RowGenerator(torch.Generator().manual_seed(9)))
        halves = [model.loss(x[r::2], _rows_of(cond, r), RowGenerator(torch.Generator().manual_seed(9), r, 2))[0]
                  for r in range(2)]
    torch.testing.assert_close(torch.stack(halves).mean(), whole, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the draws matter (the check above is not vacuous): other seeds give other losses
        others = [model.loss(x, cond, RowGenerator(torch.Generator().manual_seed(s)))[0] for s in range(10, 16)]
    assert any(not torch.allclose(o, whole) for o in others)


def _rows_of(cond: Conditioning, r: int) -> Conditioning:
    return Conditioning(cond.text[r::2], cond.text_mask[r::2], cond.pooled[r::2])


def test_perceptual_frames_are_drawn_per_video():
    class Dist(torch.nn.Module):
        def forward(self, a, b):
            return (a - b).abs().flatten(1).mean(1)

    loss = PerceptualLoss(Dist(), frames_per_video=2)
    x, y = torch.randn(4, 3, 5, 8, 8), torch.randn(4, 3, 5, 8, 8)
    whole = loss(x, y, RowGenerator(torch.Generator().manual_seed(2)))
    halves = [loss(x[r::2], y[r::2], RowGenerator(torch.Generator().manual_seed(2), r, 2)) for r in range(2)]
    torch.testing.assert_close(torch.stack(halves).mean(), whole)


def test_deterministic_mode_covers_training_and_sampling():
    """Under torch's deterministic algorithms (what `deterministic: true` turns on) every op of the generator
    losses, their backward and sampling has a deterministic implementation (an op without one would raise)."""
    from vidgen.rng import enable_deterministic
    try:
        enable_deterministic()
        assert torch.are_deterministic_algorithms_enabled()
        for kind in ("masked", "flow", "ar"):
            model, x, cond = _build(kind)
            loss, _ = model.loss(x, cond, torch.Generator().manual_seed(0))
            loss.backward()
            with torch.no_grad():
                model.sample((3, 4, 4), 1, Conditioning(cond.text[:1], cond.text_mask[:1], cond.pooled[:1]),
                             guidance_scale=2.0, generator=torch.Generator().manual_seed(0),
                             **({"num_inference_steps": 2} if kind != "ar" else {}))
    finally:
        torch.use_deterministic_algorithms(False)


def test_color_jitter_tints_grayscale_keeps_range_and_neutral_is_identity():
    from vidgen.training.data import _augment, color_jitter
    g = torch.Generator().manual_seed(0)
    gray = (torch.rand(1, 1, 2, 8, 8, generator=g) * 1.6 - 0.8).expand(4, 3, 2, 8, 8)
    colour = torch.rand(4, 3, 2, 8, 8, generator=g) * 2 - 1
    neutral = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5]]).expand(4, 5)  # angle 0, saturation 1, gains 1
    torch.testing.assert_close(color_jitter(colour, neutral), colour.clamp(-1, 1), atol=1e-5, rtol=0)
    u = torch.rand(4, 5, generator=g)
    out = color_jitter(gray, u)
    assert out.min() >= -1 and out.max() <= 1
    assert (out.max(1).values - out.min(1).values).mean() > 0.02  # grayscale clips get chroma
    assert not torch.allclose(color_jitter(colour, u), colour, atol=0.05)
    # per clip, whatever the split over processes; off by default (no extra draws, batches unchanged)
    whole = _augment(colour, 0, RowGenerator(torch.Generator().manual_seed(4)), color=1.0)
    halves = [_augment(colour[r::2], 0, RowGenerator(torch.Generator().manual_seed(4), r, 2), color=1.0)
              for r in range(2)]
    assert torch.equal(torch.stack(halves, 1).flatten(0, 1), whole)
    plain = _augment(colour, 0, RowGenerator(torch.Generator().manual_seed(4)))
    assert torch.equal(plain, _augment(colour, 0, RowGenerator(torch.Generator().manual_seed(4)), color=0.0))


def test_zoom_aug_downscales_before_the_crop_and_is_off_by_default():
    from vidgen.training.data import _augment
    g = torch.Generator().manual_seed(1)
    clips = torch.rand(6, 3, 2, 16, 16, generator=g) * 2 - 1
    # zoom=1: every clip is the 2x area downscale, then the same crop and flip an unzoomed 8x8 clip would get
    zoomed = _augment(clips, 4, RowGenerator(torch.Generator().manual_seed(5)), zoom=1.0)
    small = torch.nn.functional.avg_pool3d(clips, (1, 2, 2))
    assert zoomed.shape == (6, 3, 2, 4, 4)
    torch.testing.assert_close(zoomed, _augment(small, 4, RowGenerator(torch.Generator().manual_seed(5))),
                               atol=0, rtol=0)
    # zoom=0.5: some clips zoomed, some not, per clip whatever the split over processes
    half = _augment(clips, 4, RowGenerator(torch.Generator().manual_seed(7)), zoom=0.5)
    halves = [_augment(clips[r::2], 4, RowGenerator(torch.Generator().manual_seed(7), r, 2), zoom=0.5)
              for r in range(2)]
    assert torch.equal(torch.stack(halves, 1).flatten(0, 1), half)
    zooms = RowGenerator(torch.Generator().manual_seed(7))
    zooms.rand(6, 2), zooms.rand(6)
    picked = (zooms.rand(6) < 0.5).tolist()
    assert 0 < sum(picked) < 6
    for clip, out, was_zoomed in zip(clips, half, picked):  # each output is a crop of the clip at its own scale
        source = torch.nn.functional.avg_pool3d(clip, (1, 2, 2)) if was_zoomed else clip
        windows = source.unfold(2, 4, 1).unfold(3, 4, 1)  # (3, T, h', w', 4, 4)
        candidates = [windows[:, :, y, x] for y in range(windows.shape[2]) for x in range(windows.shape[3])]
        assert any(torch.equal(out, c) or torch.equal(out, c.flip(-1)) for c in candidates)
    # off by default: no extra draws, so runs without it keep their batches
    plain = _augment(clips, 4, RowGenerator(torch.Generator().manual_seed(4)))
    assert torch.equal(plain, _augment(clips, 4, RowGenerator(torch.Generator().manual_seed(4)), zoom=0.0))


def test_color_aug_config_is_a_probability():
    from vidgen.errors import ConfigError
    from vidgen.training.config import load_config
    with pytest.raises(ConfigError, match="color_aug"):
        load_config(None, ["data.color_aug=1.5"])
    with pytest.raises(ConfigError, match="zoom_aug"):
        load_config(None, ["data.zoom_aug=-0.1"])

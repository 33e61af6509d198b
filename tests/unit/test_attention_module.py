"""Attention3D / CrossAttention modules and the 3D rotary embedding."""
import pytest
import torch

from vidgen.attention import Attention3D, Attention3DConfig, CrossAttention
from vidgen.attention.rope import apply_rope, rope3d_angles, rope_axis_dims
from vidgen.errors import ConfigError, InvalidInputError

GRID = (3, 4, 5)


def _module(**overrides):
    cfg = dict(dim=32, num_heads=2, window=(3, 3, 3), qk_norm=True)
    cfg.update(overrides)
    return Attention3D(Attention3DConfig(**cfg))


def test_attention3d_shapes_and_backends_agree():
    model = _module()
    x = torch.randn(2, 2 + 60, 32, requires_grad=True)
    out_ref = model(x, GRID, num_prefix_tokens=2, backend="reference")
    out_cpu = model(x, GRID, num_prefix_tokens=2, backend="cpu")
    assert out_ref.shape == x.shape
    torch.testing.assert_close(out_cpu, out_ref, atol=1e-5, rtol=1e-5)
    out_cpu.sum().backward()
    assert x.grad is not None and model.qkv.weight.grad.abs().sum() > 0


def test_per_call_pattern_override():
    model = _module(window=None)
    x = torch.randn(1, 60, 32)
    spatial = model(x, GRID, window=(1, None, None))
    frames_alone = torch.cat([model(x[:, 20 * t:20 * (t + 1)], (1, 4, 5)) for t in range(3)], dim=1)
    torch.testing.assert_close(spatial, frames_alone, atol=1e-5, rtol=1e-5)


def test_causal_module_does_not_leak_the_future_even_through_prefix_tokens():
    """Two stacked causal layers with prefix tokens: frame 0 (and the prefix) must not depend on later frames."""
    layers = [_module(window=None, causal=True) for _ in range(2)]
    x = torch.randn(1, 3 + 60, 32)
    y = x.clone()
    y[:, 3 + 20:] += torch.randn(1, 40, 32)  # change frames 1 and 2
    outs = []
    for inp in (x, y):
        for layer in layers:
            inp = inp + layer(inp, GRID, num_prefix_tokens=3)
        outs.append(inp)
    torch.testing.assert_close(outs[0][:, :3 + 20], outs[1][:, :3 + 20])
    assert not torch.allclose(outs[0][:, 3 + 20:], outs[1][:, 3 + 20:])


def test_rope_scores_depend_only_on_offsets():
    head_dim = 12
    angles = rope3d_angles((3, 3, 3), head_dim)  # (27, 6)
    q_vec, k_vec = torch.randn(head_dim), torch.randn(head_dim)
    q = apply_rope(q_vec.expand(1, 1, 27, head_dim), angles)[0, 0]
    k = apply_rope(k_vec.expand(1, 1, 27, head_dim), angles)[0, 0]
    scores = q @ k.T

    def idx(t, h, w):
        return t * 9 + h * 3 + w

    # same offset (1, -1, 2) at two different places -> same score
    torch.testing.assert_close(scores[idx(1, 1, 2), idx(0, 2, 0)], scores[idx(2, 1, 2), idx(1, 2, 0)])
    assert not torch.allclose(scores[idx(1, 1, 2), idx(0, 2, 0)], scores[idx(1, 1, 2), idx(0, 1, 0)])
    torch.testing.assert_close(q.norm(dim=-1), q_vec.norm().expand(27))  # rotations keep the norm


def test_rope_leaves_prefix_tokens_alone():
    x = torch.randn(1, 2, 3 + 8, 12)
    out = apply_rope(x, rope3d_angles((2, 2, 2), 12), num_prefix_tokens=3)
    assert torch.equal(out[:, :, :3], x[:, :, :3])
    assert rope_axis_dims(64) == (24, 20, 20)


@pytest.mark.parametrize("cfg,match", [
    (dict(dim=30, num_heads=4), "multiple of num_heads"),
    (dict(dim=36, num_heads=4), "even head dim"),  # head dim 9
    (dict(dim=8, num_heads=2), "even head dim"),  # head dim 4 < 6
    (dict(dim=32, num_heads=0), "multiple of num_heads"),
    (dict(dim=32, num_heads=2, backend="cuda"), "backend"),
])
def test_bad_config(cfg, match):
    with pytest.raises(ConfigError, match=match):
        Attention3DConfig(**cfg)


def test_bad_module_inputs():
    model = _module()
    with pytest.raises(InvalidInputError, match="expected num_prefix_tokens"):
        model(torch.randn(1, 61, 32), GRID)
    with pytest.raises(InvalidInputError, match=r"\(B, N, 32\)"):
        model(torch.randn(1, 60, 16), GRID)


def test_cross_attention_mask_hides_padding():
    layer = CrossAttention(dim=32, context_dim=16, num_heads=2, qk_norm=True)
    x, ctx = torch.randn(2, 10, 32), torch.randn(2, 6, 16)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    out = layer(x, ctx, mask)
    ctx2 = ctx.clone()
    ctx2[0, 4:] = torch.randn(2, 16)  # padded tokens of sample 0 change: output must not
    torch.testing.assert_close(layer(x, ctx2, mask), out)
    torch.testing.assert_close(layer(x[:1], ctx[:1, :4]), out[:1], atol=1e-6, rtol=1e-5)
    with pytest.raises(InvalidInputError, match="context"):
        layer(x, torch.randn(2, 6, 8))
    with pytest.raises(InvalidInputError, match="at least one"):
        layer(x, ctx, torch.zeros(2, 6, dtype=torch.bool))

"""Tile-aligned windows (``attention3d(..., tile=)``, STA / NATTEN's strided windows): the pattern equals a brute-force
definition over tile coordinates (partial border tiles and prefix tokens included), so a tile of queries sees whole
tiles of keys; the reference and flex backends agree forward and backward; the others refuse by name; decode calls
know how far a tile window reaches; bad tile arguments are named."""
from __future__ import annotations

import itertools

import pytest
import torch

from vidgen.attention import attention3d
from vidgen.attention.api import backend_support, choose_backend
from vidgen.attention.cpu_blocked import _block_mask, plan_blocks
from vidgen.attention.masks import decode_violation, make_pattern, pattern_mask
from vidgen.errors import InvalidInputError, UnsupportedError

CASES = [((5, 6, 7), (3, 1, 3), (2, 3, 4), 0, False), ((4, 8, 8), (1, 3, 3), (1, 4, 4), 3, False),
         ((6, 4, 4), (3, 3, 3), (1, 2, 2), 2, "frame"), ((3, 5, 5), (3, None, 1), (2, 2, 2), 0, False)]


def _brute(grid, window, tile, prefix, causal) -> torch.Tensor:
    coords = list(itertools.product(*(range(n) for n in grid)))
    n = prefix + len(coords)
    mask = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            if j < prefix:
                mask[i, j] = True
            elif i < prefix:
                mask[i, j] = not causal
            else:
                q, k = coords[i - prefix], coords[j - prefix]
                ok = all(w is None or abs(a // s - b // s) <= w // 2 for a, b, s, w in zip(q, k, tile, window))
                mask[i, j] = ok and (not causal or k[0] <= q[0])
    return mask


@pytest.mark.parametrize("grid,window,tile,prefix,causal", CASES)
def test_the_pattern_is_the_tile_definition(grid, window, tile, prefix, causal):
    pattern = make_pattern(grid, window, causal, prefix, tile)
    mask = pattern_mask(pattern)
    assert torch.equal(mask, _brute(grid, window, tile, prefix, causal))
    assert abs(pattern.density() - mask.double().mean().item()) < 1e-12
    video = mask[prefix:, prefix:].reshape(*grid, *grid)
    t, h, w = grid
    for a, b, c in itertools.product(range(0, t, tile[0]), range(0, h, tile[1]), range(0, w, tile[2])):
        rows = video[a:a + tile[0], b:b + tile[1], c:c + tile[2]].reshape(-1, t * h * w)
        if not causal:
            assert (rows == rows[0]).all()  # every query of a tile sees the same keys: no mask inside a tile
    for q_end in range(1, pattern.num_tokens + 1):  # the decode check's reach: a key at >= q_end seen before it
        assert (decode_violation(pattern, 0, q_end) is None) == (not mask[:q_end, q_end:].any())


@pytest.mark.parametrize("grid,window,tile,prefix,causal", CASES[:3])
def test_reference_and_flex_agree_forward_and_backward(grid, window, tile, prefix, causal):
    n = prefix + grid[0] * grid[1] * grid[2]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, n, 16, generator=g, requires_grad=True) for _ in range(3))
    kw = dict(grid=grid, window=window, causal=causal, num_prefix_tokens=prefix, tile=tile)
    out = attention3d(q, k, v, backend="reference", **kw)
    dense = torch.softmax((q @ k.transpose(-1, -2)) / 4.0 + torch.where(
        _brute(grid, window, tile, prefix, causal), 0.0, float("-inf")), -1) @ v
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    dense_grads = torch.autograd.grad(dense.square().sum(), (q, k, v))
    for a, b in zip(grads, dense_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    blocked = attention3d(q, k, v, backend="cpu", **kw)  # tiles as its query blocks, whole tiles of halo
    torch.testing.assert_close(blocked, out, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(blocked.square().sum(), (q, k, v)), grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # flex has no CPU backward in this torch
        flex = attention3d(*(x.detach() for x in (q, k, v)), backend="flex", **kw)
        torch.testing.assert_close(flex, out.detach(), rtol=1e-5, atol=1e-5)


def test_the_fused_backends_refuse_tiles_by_name_and_auto_picks_the_blocked_path():
    q = torch.randn(1, 2, 4 * 8 * 8, 16)
    support = backend_support(q, q, q, (4, 8, 8), (1, 3, 3), tile=(1, 4, 4))
    assert support["reference"] is None and support["cpu"] is None
    assert "tile-aligned windows (tile=) run on the reference, cpu, flex and triton backends" in support["cpu_fused"]
    with pytest.raises(UnsupportedError, match="backend 'cpu_fused' cannot run this call: tile-aligned windows"):
        attention3d(q, q, q, (4, 8, 8), (1, 3, 3), backend="cpu_fused", tile=(1, 4, 4))
    big = torch.randn(1, 1, 8 * 16 * 16, 16)  # from 2048 tokens on, auto takes the blocked path
    pattern = make_pattern((8, 16, 16), (1, 3, 3), False, 0, (2, 4, 4))
    assert choose_backend(big, big, big, pattern) == "cpu"
    mask = _block_mask(pattern, plan_blocks(pattern), "cpu")  # only the grid's borders: one row for every query
    assert (mask == mask[:, :, :1]).all() and mask[:, 0, 0].float().mean() < 1
    torch.testing.assert_close(attention3d(big, big, big, (8, 16, 16), (1, 3, 3), tile=(2, 4, 4)),
                               attention3d(big, big, big, (8, 16, 16), (1, 3, 3), tile=(2, 4, 4), backend="reference"),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(window=None, tile=(1, 2, 2)), r"tile=\(1, 2, 2\) needs a window counted in tiles"),
    (dict(window=(1, 3, 3), tile=(1, 0, 2)), r"tile must be None or three positive ints"),
    (dict(window=(1, 3, 3), tile=(2, 2, 2), causal="frame"), r"tiles must be one frame deep"),
    (dict(window=(1, 3, 3), tile=(1, 2, 2), causal="token"), r"no causal='token' form"),
])
def test_bad_tile_arguments_are_named(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        make_pattern((4, 8, 8), kwargs.pop("window"), kwargs.pop("causal", False), 0, **kwargs)

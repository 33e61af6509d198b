"""Helpers to check a backend against the reference: per-dtype tolerances and random pattern cases."""
from __future__ import annotations

import random
from typing import Callable, List, Tuple

import torch

from vidgen.attention.masks import AttentionPattern, make_pattern
from vidgen.attention.reference import reference_attention

# Max abs/rel error of a backend run in `dtype` vs the float64 reference on the same (rounded) inputs.
TOLERANCES = {
    torch.float64: dict(atol=1e-10, rtol=1e-8),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=1e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=5e-2, rtol=5e-2),
}


def random_patterns(count: int, seed: int, max_video_tokens: int = 160) -> List[AttentionPattern]:
    """Random grids (often not multiples of any block size), windows (some larger than the grid, some even,
    some None per axis), causal on/off and 0-3 prefix tokens."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        grid = tuple(rng.randint(1, 7) for _ in range(3))
        if grid[0] * grid[1] * grid[2] > max_video_tokens:
            continue
        window = None if rng.random() < 0.15 else tuple(
            None if rng.random() < 0.25 else rng.randint(1, 9) for _ in range(3))
        out.append(make_pattern(grid, window, rng.random() < 0.5, rng.choice([0, 0, 1, 3])))
    return out


def random_qkv(pattern: AttentionPattern, batch: int = 2, heads: int = 2, head_dim: int = 16,
               dtype=torch.float32, seed: int = 0, requires_grad: bool = True,
               device="cpu") -> Tuple[torch.Tensor, ...]:
    """Leaf q, k, v on ``device``, drawn on the CPU so every device gets the same values."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, heads, pattern.num_tokens, head_dim)
    return tuple(torch.randn(shape, generator=gen).to(device, dtype).requires_grad_(requires_grad)
                 for _ in range(3))


def check_against_reference(fn: Callable, pattern: AttentionPattern, q, k, v, grads: bool = True,
                            scale=None) -> None:
    """Assert ``fn(q, k, v)`` and its input gradients match the float64 reference within TOLERANCES."""
    tol = TOLERANCES[q.dtype]
    out = fn(q, k, v)
    q64, k64, v64 = (x.detach().double().requires_grad_(grads) for x in (q, k, v))
    ref = reference_attention(q64, k64, v64, pattern, scale)
    torch.testing.assert_close(out.double(), ref, **tol, msg=lambda m: f"output vs reference, {pattern}: {m}")
    if not grads:
        return
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(q.device, q.dtype)
    got = torch.autograd.grad(out, (q, k, v), grad_out)
    want = torch.autograd.grad(ref, (q64, k64, v64), grad_out.double())
    for name, g, w in zip("qkv", got, want):
        torch.testing.assert_close(g.double(), w, **tol, msg=lambda m: f"d{name} vs reference, {pattern}: {m}")

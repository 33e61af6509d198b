"""Which (query tile, key tile) pairs the fused Triton kernel visits: a pure-PyTorch mirror of its skip test.

Used by the benchmark to report the fraction of tiles skipped per pattern (GPU timings cannot be taken here),
and by the tests, which check it against the kernel's own visit counter and against the dense mask.
"""
from __future__ import annotations

import torch

from vidgen.attention.masks import AttentionPattern


def _span(lo: torch.Tensor, hi: torch.Tensor, p: int, hw: int, w: int, h: int):
    """Conservative (t, h, w) bounding box of the video tokens among flat indices lo..hi (inclusive)."""
    a = lo.clamp(min=p) - p
    b = hi - p
    ta, tb = a // hw, b // hw
    same_t = ta == tb
    ha = torch.where(same_t, (a % hw) // w, 0)
    hb = torch.where(same_t, (b % hw) // w, h - 1)
    same_row = (a // w) == (b // w)
    wa = torch.where(same_row, a % w, 0)
    wb = torch.where(same_row, b % w, w - 1)
    return ta, tb, ha, hb, wa, wb


def tile_visit_map(pattern: AttentionPattern, block_m: int, block_n: int) -> torch.Tensor:
    """(num_query_tiles, num_key_tiles) bool: True where the kernel computes the tile pair."""
    n, p = pattern.num_tokens, pattern.num_prefix_tokens
    t, h, w = pattern.grid
    radii = [size if r is None else r for size, r in zip(pattern.grid, pattern.radii)]
    q_lo = torch.arange(0, n, block_m)[:, None]
    k_lo = torch.arange(0, n, block_n)[None, :]
    q_hi, k_hi = (q_lo + block_m).clamp(max=n) - 1, (k_lo + block_n).clamp(max=n) - 1
    q_span, k_span = _span(q_lo, q_hi, p, h * w, w, h), _span(k_lo, k_hi, p, h * w, w, h)
    k_video = k_hi >= p
    ok = (q_hi >= p) & k_video
    for axis, radius in enumerate(radii):
        qa, qb = q_span[2 * axis], q_span[2 * axis + 1]
        ka, kb = k_span[2 * axis], k_span[2 * axis + 1]
        ok = ok & (ka <= qb + radius) & (kb >= qa - radius)
    extra = k_lo < p
    if pattern.causal:
        ok = ok & (k_span[0] <= q_span[1])
    else:
        extra = extra | ((q_lo < p) & k_video)
    return ok | extra


def tile_skip_fraction(pattern: AttentionPattern, block_m: int = 64, block_n: int = 64) -> float:
    """Fraction of all (query tile, key tile) pairs the kernel skips."""
    return 1.0 - tile_visit_map(pattern, block_m, block_n).float().mean().item()


def needed_tile_map(pattern: AttentionPattern, mask: torch.Tensor, block_m: int, block_n: int) -> torch.Tensor:
    """(num_query_tiles, num_key_tiles) bool: tile pairs holding at least one allowed pair of the dense mask."""
    n = pattern.num_tokens
    nq, nk = -(-n // block_m), -(-n // block_n)
    padded = mask.new_zeros(nq * block_m, nk * block_n)
    padded[:n, :n] = mask
    return padded.view(nq, block_m, nk, block_n).any(dim=3).any(dim=1)

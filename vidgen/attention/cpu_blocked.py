"""Blocked-neighbourhood attention: the fast path on CPU (pure PyTorch, so it also runs on any device).

The video grid is cut into 3D query blocks. For each block we gather only the keys in its window halo
(``block + 2*radius`` along every windowed axis, ``block + radius`` behind it along t when causal) and run
SDPA on that small problem with the exact mask of the block. Tile-aligned windows (``pattern.tile``) take the tiles
as query blocks and whole tiles as the halo: no mask is left but the grid's borders. Every block then has the same shape, so all
blocks go through one batched SDPA call; gathering is one ``index_select`` per tensor, so autograd gives the
backward pass for free. Work drops from ``N^2`` to about ``N * halo`` while the result stays exact.

Why this design and not a custom autograd function: ``docs/attention.md`` ("Design notes"),
``eval/bench_attention.py`` -> ``docs/results/bench_attention.json``.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from vidgen.attention.masks import AttentionPattern
from vidgen.errors import InvalidInputError

# Cost model constants (in "query-key pair" units), set from timings at 4k-16k tokens: a fixed overhead per
# block (one SDPA tile, kernel dispatch) and a per-row overhead (softmax, gather copies).
BLOCK_OVERHEAD = 4096.0
ROW_OVERHEAD = 64.0


@dataclass(frozen=True)
class AxisPlan:
    """How one grid axis is tiled: ``block`` queries per block, ``before``/``after`` halo keys around it;
    ``tile``: the pattern's tile along the axis (its radius counts tiles; 1 for exact windows)."""

    size: int
    block: int
    before: int
    after: int
    radius: Optional[int]
    causal: bool
    tile: int = 1

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.size / self.block)

    @property
    def keys(self) -> int:
        return self.block + self.before + self.after

    def axis_mask(self, device) -> torch.Tensor:
        """(num_blocks, block, keys) bool: may query ``a`` of block ``i`` see halo key ``j`` along this axis.
        Padded queries (past the grid end) see every real key so that no row is empty (no NaN in backward)."""
        blk = torch.arange(self.num_blocks, device=device)[:, None, None]
        a = torch.arange(self.block, device=device)[None, :, None]
        j = torch.arange(self.keys, device=device)[None, None, :]
        q_pos = blk * self.block + a
        k_pos = blk * self.block - self.before + j
        k_valid = (k_pos >= 0) & (k_pos < self.size)
        ok = k_valid.expand(-1, self.block, -1)
        if self.radius is not None:
            ok = ok & ((k_pos // self.tile - q_pos // self.tile).abs() <= self.radius)
        if self.causal:
            ok = ok & (k_pos <= q_pos)
        return torch.where(q_pos < self.size, ok, k_valid)


def _axis_plan(n: int, radius: Optional[int], block: int, causal: bool, tile: int = 1) -> AxisPlan:
    if radius is None:  # unrestricted axis: one block spans it, no halo (causality is left to the mask)
        return AxisPlan(n, n, 0, 0, None, causal)
    if tile > 1:  # one tile a block, whole tiles of halo
        return AxisPlan(n, tile, radius * tile, 0 if causal else radius * tile, radius, causal, tile)
    return AxisPlan(n, block, radius, 0 if causal else radius, radius, causal)


def _candidates(n: int, radius: Optional[int]):
    if radius is None:
        return [n]
    sizes = {n} | {2 ** i for i in range(8) if 2 ** i < n}
    return sorted(sizes)


def plan_blocks(pattern: AttentionPattern, block: Optional[Tuple[int, int, int]] = None) -> Tuple[AxisPlan, ...]:
    """Pick query block sizes minimising the cost model (or use ``block`` if given)."""
    if block is not None and (len(block) != 3 or not all(isinstance(b, int) and b >= 1 for b in block)):
        raise InvalidInputError(f"block must be three positive ints (bt, bh, bw), got {block!r}")
    return _plan_blocks(pattern, None if block is None else tuple(block))


@functools.lru_cache(maxsize=256)  # called for every layer and step: the search is cheap but not free
def _plan_blocks(pattern: AttentionPattern, block: Optional[Tuple[int, int, int]]) -> Tuple[AxisPlan, ...]:
    causal_axis = (pattern.causal, False, False)
    if pattern.tile is not None:  # the blocks are the tiles
        return tuple(_axis_plan(n, r, b, c, b) for n, r, b, c in zip(pattern.grid, pattern.radii, pattern.tile,
                                                                       causal_axis))
    if block is not None:
        return tuple(_axis_plan(n, r, min(b, n), c)
                     for n, r, b, c in zip(pattern.grid, pattern.radii, block, causal_axis))
    best, best_cost = None, float("inf")
    options = [_candidates(n, r) for n, r in zip(pattern.grid, pattern.radii)]
    for choice in itertools.product(*options):
        plans = tuple(_axis_plan(n, r, b, c) for n, r, b, c in zip(pattern.grid, pattern.radii, choice, causal_axis))
        nb = math.prod(p.num_blocks for p in plans)
        lq = math.prod(p.block for p in plans)
        lk = math.prod(p.keys for p in plans) + pattern.num_prefix_tokens
        cost = nb * (lq * lk + BLOCK_OVERHEAD + ROW_OVERHEAD * (lq + lk))
        if cost < best_cost:
            best, best_cost = plans, cost
    return best


def blocked_work(pattern: AttentionPattern, block: Optional[Tuple[int, int, int]] = None) -> int:
    """Query-key pairs the blocked path computes (auto's cost estimate and the benchmark's accounting)."""
    p = pattern.num_prefix_tokens
    prefix_rows = p * (p if pattern.causal else pattern.num_tokens)
    plans = plan_blocks(pattern, block)
    nb = math.prod(pl.num_blocks for pl in plans)
    lq = math.prod(pl.block for pl in plans)
    lk = math.prod(pl.keys for pl in plans) + p
    return nb * lq * lk + prefix_rows


_MASKS: dict = {}
_HALO_INDEX: dict = {}


def _block_mask(pattern: AttentionPattern, plans, device) -> Optional[torch.Tensor]:
    """(num_blocks, 1, Lq, P + Lk) bool mask shared by all blocks' SDPA calls, or None if all True."""
    key = (pattern, plans, str(device))
    if key in _MASKS:
        return _MASKS[key]
    mt, mh, mw = (p.axis_mask(device) for p in plans)
    m = (mt[:, None, None, :, None, None, :, None, None]
         & mh[None, :, None, None, :, None, None, :, None]
         & mw[None, None, :, None, None, :, None, None, :])  # (nT,nH,nW, bt,bh,bw, kt,kh,kw)
    nb = math.prod(p.num_blocks for p in plans)
    lq = math.prod(p.block for p in plans)
    m = m.reshape(nb, lq, -1)
    if pattern.num_prefix_tokens:
        m = torch.cat([m.new_ones(nb, lq, pattern.num_prefix_tokens), m], dim=-1)
    m = None if bool(m.all()) else m[:, None]
    if len(_MASKS) >= 16:
        _MASKS.pop(next(iter(_MASKS)))
    _MASKS[key] = m
    return m


def _query_blocks(x: torch.Tensor, plans) -> torch.Tensor:
    """(B*h, T, H, W, D) -> (nb, B*h, Lq, D): pad the grid to whole blocks and group each block's queries.
    Blocks lead so that the per-block mask (nb, 1, Lq, Lk) broadcasts over batch and heads."""
    bh, d = x.shape[0], x.shape[-1]
    pt, ph, pw = plans
    x = F.pad(x, (0, 0, 0, pw.num_blocks * pw.block - pw.size, 0, ph.num_blocks * ph.block - ph.size,
                  0, pt.num_blocks * pt.block - pt.size))
    x = x.view(bh, pt.num_blocks, pt.block, ph.num_blocks, ph.block, pw.num_blocks, pw.block, d)
    x = x.permute(1, 3, 5, 0, 2, 4, 6, 7)  # (nT, nH, nW, B*h, bt, bh, bw, D)
    return x.reshape(-1, bh, pt.block * ph.block * pw.block, d)


def _halo_index(plans, device) -> torch.Tensor:
    """(nb * Lk,) flat video-token index of every block's halo keys; ``T*H*W`` (a zero row) outside the grid."""
    key = (plans, str(device))
    if key not in _HALO_INDEX:
        pos = []
        for p in plans:
            blk = torch.arange(p.num_blocks, device=device)[:, None]
            pos.append(blk * p.block - p.before + torch.arange(p.keys, device=device)[None, :])  # (nb_i, keys_i)
        t = pos[0][:, None, None, :, None, None]
        h = pos[1][None, :, None, None, :, None]
        w = pos[2][None, None, :, None, None, :]
        sizes = [p.size for p in plans]
        inside = (t >= 0) & (t < sizes[0]) & (h >= 0) & (h < sizes[1]) & (w >= 0) & (w < sizes[2])
        flat = torch.where(inside, (t * sizes[1] + h) * sizes[2] + w, sizes[0] * sizes[1] * sizes[2])
        if len(_HALO_INDEX) >= 16:
            _HALO_INDEX.pop(next(iter(_HALO_INDEX)))
        _HALO_INDEX[key] = flat.reshape(-1)
    return _HALO_INDEX[key]


def _key_blocks(x: torch.Tensor, plans) -> torch.Tensor:
    """(B*h, T*H*W, D) -> (nb, B*h, Lk, D): each block's halo of keys (zeros outside the grid).

    One index_select over token rows of width B*h*D: its backward is a row-wise index_add, several times
    faster than the backward of nested unfolds (which materialises the overlapping windows per axis)."""
    bh, n, d = x.shape
    rows = x.transpose(0, 1).reshape(n, bh * d)
    rows = torch.cat([rows, rows.new_zeros(1, bh * d)])  # row n: the zero key outside the grid
    index = _halo_index(plans, x.device)
    nb = math.prod(p.num_blocks for p in plans)
    return rows.index_select(0, index).view(nb, index.numel() // nb, bh, d).transpose(1, 2)


def _unblock(o: torch.Tensor, plans) -> torch.Tensor:
    """Inverse of :func:`_query_blocks`, cropping the padding: (nb, B*h, Lq, D) -> (B*h, T*H*W, D)."""
    pt, ph, pw = plans
    bh, d = o.shape[1], o.shape[-1]
    o = o.view(pt.num_blocks, ph.num_blocks, pw.num_blocks, bh, pt.block, ph.block, pw.block, d)
    o = o.permute(3, 0, 4, 1, 5, 2, 6, 7).reshape(
        bh, pt.num_blocks * pt.block, ph.num_blocks * ph.block, pw.num_blocks * pw.block, d)
    return o[:, :pt.size, :ph.size, :pw.size].reshape(bh, -1, d)


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: AttentionPattern,
                      scale: Optional[float] = None, block: Optional[Tuple[int, int, int]] = None) -> torch.Tensor:
    """Exact 3D-pattern attention computing only each query block's key halo. q, k, v: (B, heads, N, D)."""
    plans = plan_blocks(pattern, block)
    bsz, nh, n, d = q.shape
    p = pattern.num_prefix_tokens
    video = [x.reshape(bsz * nh, n, d)[:, p:] for x in (q, k, v)]  # (B*h, T*H*W, D): batch and heads folded
    qb = _query_blocks(video[0].reshape(bsz * nh, *pattern.grid, d), plans)  # (nb, B*h, Lq, D)
    kb, vb = _key_blocks(video[1], plans), _key_blocks(video[2], plans)  # (nb, B*h, Lk, D)
    if p:
        def with_prefix(blocks, x):
            prefix = x[:, :, :p].reshape(1, bsz * nh, p, d).expand(blocks.shape[0], -1, -1, -1)
            return torch.cat([prefix, blocks], dim=2)
        kb, vb = with_prefix(kb, k), with_prefix(vb, v)
    mask = _block_mask(pattern, plans, q.device)  # (nb, 1, Lq, P + Lk), shared by batch and heads
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=scale)
    video_out = _unblock(out, plans).reshape(bsz, nh, -1, d)
    if not p:
        return video_out
    # Prefix queries: all keys, or (causal: the prefix counts as the past) only the prefix keys.
    keys_end = p if pattern.causal else pattern.num_tokens
    prefix_out = F.scaled_dot_product_attention(q[:, :, :p], k[:, :, :keys_end], v[:, :, :keys_end], scale=scale)
    return torch.cat([prefix_out, video_out], dim=2)


TOKEN_CAUSAL_REASON = ("the blocked cpu backend implements frame-level causality only (causal=True / 'frame'), not "
                       "causal='token': a token-causal mask does not factor over its (t, h, w) query blocks; use "
                       "backend='reference' or 'flex'")


def unsupported_reason(q: torch.Tensor, pattern: AttentionPattern) -> Optional[str]:
    if pattern.token_causal:
        return TOKEN_CAUSAL_REASON
    return None  # pure PyTorch: any device, dtype and shape

"""Token layouts and tile lists of the fused Triton kernel, in pure PyTorch.

The kernel reads q, k, v in a *layout*: the prefix tokens first, padded to a whole tile, then the video tokens either in
raster order or in 3D *boxes* of ``bt x bh x bw`` tokens (raster order inside each box; the grid is padded to whole
boxes). A tile of a box layout is a small 3D box of the video, so a window touches far fewer tiles than in raster order,
where a tile is a sliver of a row. Padding slots are never attended by a real query and their outputs are dropped.

Each slot carries its (t, h, w) coordinate; prefix slots have t = ``PREFIX_T`` and padding slots t = ``PAD_T``, both
far outside any window. From the coordinates, :func:`tile_lists` lists for every query tile the key tiles it must
visit, split into *full* tiles (every pair allowed: no mask is computed) and *partial* ones (the exact mask is
recomputed from coordinates). The lists are exact for box tiles and conservative (bounding boxes) for raster ones; they
never leave out a tile holding an allowed pair (tests/unit/test_attention_triton.py checks both against the dense mask).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from vidgen.attention.masks import AttentionPattern

PREFIX_T = -(1 << 20)
PAD_T = 1 << 21
# Layout choice (choose_box): visited tile pairs, each partial pair counted 1 + PARTIAL_EXTRA (its mask). A chosen
# weight, not a measurement: eval/bench_attention_gpu.py times the chosen layout beside raster order.
PARTIAL_EXTRA = 0.25


@dataclass(frozen=True)
class Layout:
    """Where each token sits in the kernel's padded sequence of ``length`` slots."""
    box: Optional[Tuple[int, int, int]]  # None: raster order
    length: int
    prefix_slots: int
    dst: torch.Tensor  # (num_tokens,) long: the slot of each token
    coords: torch.Tensor  # (3, length) int32: t, h, w of each slot (PREFIX_T / PAD_T in t for prefix / padding)

    @property
    def identity(self) -> bool:
        return self.box is None and self.length == self.dst.numel()  # raster without padding: dst = arange


def _video_slots(grid, box):
    """(coords (3, M) of the video slots, token index of each slot or -1 for padding)."""
    t, h, w = grid
    if box is None:
        ct, ch, cw = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
        return torch.stack([ct.flatten(), ch.flatten(), cw.flatten()]), torch.arange(t * h * w)
    padded = [-(-n // b) * b for n, b in zip(grid, box)]
    ct, ch, cw = torch.meshgrid(*(torch.arange(n) for n in padded), indexing="ij")
    shape = (padded[0] // box[0], box[0], padded[1] // box[1], box[1], padded[2] // box[2], box[2])
    ct, ch, cw = (x.reshape(shape).permute(0, 2, 4, 1, 3, 5).flatten() for x in (ct, ch, cw))
    valid = (ct < t) & (ch < h) & (cw < w)
    token = torch.where(valid, (ct * h + ch) * w + cw, -1)
    return torch.stack([torch.where(valid, ct, PAD_T), ch, cw]), token


def make_layout(pattern: AttentionPattern, box: Optional[Tuple[int, int, int]], align: int, device=None) -> Layout:
    """The layout with prefix and video each padded to a multiple of ``align`` slots (a power of two; a box holds
    ``align`` tokens, so every aligned run of 2^k <= ``align`` slots is itself a box)."""
    if box is not None and math.prod(box) != align:
        raise ValueError(f"a box of the layout must hold align={align} tokens, got {box}")
    p = pattern.num_prefix_tokens
    prefix_slots = -(-p // align) * align
    coords, token = _video_slots(pattern.grid, box)
    video_slots = -(-coords.shape[1] // align) * align
    tail = video_slots - coords.shape[1]
    coords = torch.cat([coords, torch.tensor([[PAD_T], [0], [0]]).expand(3, tail)], dim=1)
    token = torch.cat([token + p, torch.full((tail,), -1)])
    token = torch.where(token >= p, token, -1)
    pre_t = torch.where(torch.arange(prefix_slots) < p, PREFIX_T, PAD_T)
    coords = torch.cat([torch.stack([pre_t, torch.zeros_like(pre_t), torch.zeros_like(pre_t)]), coords], dim=1)
    token = torch.cat([torch.where(torch.arange(prefix_slots) < p, torch.arange(prefix_slots), -1), token])
    dst = torch.empty(pattern.num_tokens, dtype=torch.long)
    slots = torch.nonzero(token >= 0).flatten()
    dst[token[slots]] = slots
    return Layout(box, token.numel(), prefix_slots, dst.to(device),
                  coords.to(device=device, dtype=torch.int32))


def _tile_bounds(coords: torch.Tensor, block: int):
    """Per tile of ``block`` slots: (lo (3, n), hi (3, n)) over its video slots, all-video, any-video, all-prefix,
    any-prefix (real tokens only)."""
    c = coords.view(3, -1, block)
    video = (c[0] >= 0) & (c[0] < PAD_T)
    prefix = c[0] == PREFIX_T
    big = torch.iinfo(torch.int32).max
    lo = torch.where(video, c, big).amin(dim=2)
    hi = torch.where(video, c, -big).amax(dim=2)
    return lo, hi, video.all(1), video.any(1), prefix.all(1), prefix.any(1)


def _pattern_coords(pattern: AttentionPattern, coords: torch.Tensor) -> torch.Tensor:
    """The slots' coordinates in the units the pattern's radii count: tokens, or the tiles of a tile-aligned window
    (prefix and padding slots keep their sentinels)."""
    if pattern.tile is None:
        return coords
    video = (coords[0] >= 0) & (coords[0] < PAD_T)
    tile = torch.tensor(pattern.tile, dtype=coords.dtype, device=coords.device)[:, None]
    return torch.where(video[None], torch.div(coords, tile, rounding_mode="floor"), coords)


def tile_maps(pattern: AttentionPattern, layout: Layout, block_q: int, block_k: int):
    """(visit, full): (query tiles, key tiles) bools. visit: the pair holds an allowed (real query, key) pair (exact
    for box tiles, a superset for raster tiles); full: every (query, key) pair of it is allowed, every key real.
    A tile-aligned window's radii count the pattern's tiles: a box of the layout that is one of them is all or
    nothing against another."""
    radii = [n if r is None else r for n, r in zip(pattern.grid, pattern.radii)]
    coords = _pattern_coords(pattern, layout.coords)
    qlo, qhi, q_all_v, q_any_v, _, q_any_p = (x[..., :, None] for x in _tile_bounds(coords, block_q))
    klo, khi, k_all_v, k_any_v, k_all_p, k_any_p = (x[..., None, :] for x in _tile_bounds(coords, block_k))
    near = q_any_v & k_any_v
    reach = q_all_v.new_ones(())
    for axis, r in enumerate(radii):
        near = near & (klo[axis] <= qhi[axis] + r) & (khi[axis] >= qlo[axis] - r)
        reach = reach & (torch.maximum(qhi[axis] - klo[axis], khi[axis] - qlo[axis]) <= r)
    full = k_all_v & reach & near
    q_real = q_any_v | q_any_p
    visit = near | (k_any_p & q_real)  # every query attends the prefix
    full = full | (k_all_p & q_real)
    if pattern.causal:
        visit = visit & ((klo[0] <= qhi[0]) | k_any_p)
        full = full & ((khi[0] <= qlo[0]) | k_all_p)
    else:  # prefix queries attend every key
        visit = visit | (q_any_p & k_any_v)
        full = full | (q_any_p & ~q_any_v & k_all_v)
    return visit, full & visit


def _as_lists(tiles: torch.Tensor):
    """(count per row (rows,) int32, column indices in ascending order (rows, max count) int32) of a bool map."""
    counts = tiles.sum(dim=1)
    order = torch.argsort((~tiles).to(torch.int8), dim=1, stable=True)[:, :max(1, int(counts.max()))]
    return counts.to(torch.int32).contiguous(), order.to(torch.int32).contiguous()


@dataclass(frozen=True)
class TileLists:
    """Per row tile: the full and the partial column tiles to visit (counts and indices, ascending)."""
    full_count: torch.Tensor
    full_index: torch.Tensor
    partial_count: torch.Tensor
    partial_index: torch.Tensor


def tile_lists(pattern: AttentionPattern, layout: Layout, block_q: int, block_k: int, transpose: bool = False):
    """The kernel's :class:`TileLists`: per query tile its key tiles or, ``transpose``, per key tile its query tiles."""
    visit, full = tile_maps(pattern, layout, block_q, block_k)
    if transpose:
        visit, full = visit.T, full.T
    return TileLists(*_as_lists(full), *_as_lists(visit & ~full))


def candidate_boxes(grid, align: int):
    """Boxes of ``align`` tokens (powers of two per axis) no axis of which exceeds twice the grid's."""
    k = int(math.log2(align))
    for a, b in itertools.product(range(k + 1), repeat=2):
        if a + b <= k:
            box = (2 ** a, 2 ** b, 2 ** (k - a - b))
            if all(n <= 2 * max(g, 1) for n, g in zip(box, grid)):
                yield box


def layout_cost(pattern: AttentionPattern, layout: Layout, block_q: int, block_k: int) -> float:
    visit, full = tile_maps(pattern, layout, block_q, block_k)
    return float(visit.sum() + PARTIAL_EXTRA * (visit & ~full).sum()) * block_q * block_k


def choose_box(pattern: AttentionPattern, block_q: int, block_k: int, device=None) -> Optional[Tuple[int, int, int]]:
    """The box (or None: raster) whose layout visits the least work, partial tiles weighted by PARTIAL_EXTRA; raster
    order wins ties. Patterns without a window (full / frame-causal full attention) keep raster order."""
    if all(r is None for r in pattern.radii):
        return None
    align = max(block_q, block_k)
    best, best_cost = None, layout_cost(pattern, make_layout(pattern, None, align, device), block_q, block_k)
    for box in candidate_boxes(pattern.grid, align):
        cost = layout_cost(pattern, make_layout(pattern, box, align, device), block_q, block_k)
        if cost < best_cost:
            best, best_cost = box, cost
    return best


def _resolve(pattern: AttentionPattern, block_q: int, block_k: int, box):
    return choose_box(pattern, block_q, block_k) if box == "auto" else box


def needed_tile_map(pattern: AttentionPattern, mask: torch.Tensor, block_q: int, block_k: int, box="auto"):
    """(query tiles, key tiles) bool: the tile pairs of the layout of ``box`` holding at least one allowed pair of the
    dense (N, N) ``mask`` (padding slots allow nothing)."""
    layout = make_layout(pattern, _resolve(pattern, block_q, block_k, box), max(block_q, block_k), mask.device)
    n = layout.length
    slots = mask.new_zeros(n, n)
    slots[layout.dst[:, None], layout.dst[None, :]] = mask
    return slots.view(n // block_q, block_q, n // block_k, block_k).any(dim=3).any(dim=1)


def tile_visit_map(pattern: AttentionPattern, block_q: int, block_k: int, box="auto") -> torch.Tensor:
    """(query tiles, key tiles) bool: the tile pairs the kernel computes in the layout of ``box`` ("auto": the one
    the kernel chooses, None: raster)."""
    layout = make_layout(pattern, _resolve(pattern, block_q, block_k, box), max(block_q, block_k))
    return tile_maps(pattern, layout, block_q, block_k)[0]


def tile_skip_fraction(pattern: AttentionPattern, block_q: int = 64, block_k: int = 64, box="auto") -> float:
    """Fraction of all (query tile, key tile) pairs of the padded layout the kernel skips."""
    return 1.0 - tile_visit_map(pattern, block_q, block_k, box).float().mean().item()


@dataclass(frozen=True)
class KernelPlan:
    """Everything the kernels read besides q, k, v: the layout, the forward's lists (per query tile of
    ``block_m``, key tiles of ``block_n``) and the backward's (square tiles of ``backward_block``)."""
    layout: Layout
    forward: TileLists
    backward_kv: TileLists  # per key tile, its query tiles
    backward_q: TileLists  # per query tile, its key tiles
    backward_block: int


_PLANS: dict = {}
_BOXES: dict = {}
CACHE_ENTRIES = 16


def cache_get(cache: dict, key, make):
    """``cache[key]``, made by ``make()`` on a miss; the oldest entry goes once CACHE_ENTRIES are held."""
    if key not in cache:
        if len(cache) >= CACHE_ENTRIES:
            cache.pop(next(iter(cache)))
        cache[key] = make()
    return cache[key]


def cached_choose_box(pattern: AttentionPattern, block_q: int, block_k: int, device=None):
    """:func:`choose_box`, cached per (pattern, tiles, device): models call the same pattern every layer and step."""
    return cache_get(_BOXES, (pattern, block_q, block_k, str(device)),
                   lambda: choose_box(pattern, block_q, block_k, device))


def kernel_plan(pattern: AttentionPattern, box, block_m: int, block_n: int, backward_block: int,
                device=None) -> KernelPlan:
    """The cached :class:`KernelPlan` of a pattern in the layout of ``box`` (None: raster)."""
    def make():
        layout = make_layout(pattern, box, max(block_m, block_n, backward_block), device)
        return KernelPlan(layout, tile_lists(pattern, layout, block_m, block_n),
                          tile_lists(pattern, layout, backward_block, backward_block, transpose=True),
                          tile_lists(pattern, layout, backward_block, backward_block), backward_block)
    return cache_get(_PLANS, (pattern, box, block_m, block_n, backward_block, str(device)), make)

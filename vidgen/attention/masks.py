"""Attention patterns over a (T, H, W) token grid: validation, the dense reference mask, FlexAttention mask_mod.

Semantics (every backend implements exactly these, so each can be checked against :func:`attention_mask3d`):

* the sequence is ``num_prefix_tokens`` prefix tokens (text / class / register tokens) followed by the
  ``T*H*W`` video tokens in (t, h, w) row-major order;
* a video query at (t, h, w) may attend a video key at (t', h', w') iff ``|t-t'| <= wt//2``,
  ``|h-h'| <= wh//2`` and ``|w-w'| <= ww//2`` for ``window=(wt, wh, ww)`` (``None`` = unlimited along that
  axis, ``window=None`` = full attention), and additionally
  - ``t' <= t`` when ``causal=True`` or ``causal="frame"`` (frame-causal: a token sees its whole own frame),
  - ``j <= i`` when ``causal="token"`` (token-causal, GPT-style: ``i``, ``j`` are the video indices of query
    and key in (t, h, w) raster order, so a token sees the earlier tokens of its own frame and itself);
* tile-aligned windows (``tile=(tt, th, tw)``, STA / NATTEN's strided windows): the grid is cut into tiles of
  ``tt x th x tw`` tokens (the last along an axis may be partial) and the window counts tiles: a query in tile
  ``(a, b, c)`` attends every key of the tiles ``(a', b', c')`` with ``|a-a'| <= wt//2``, ``|b-b'| <= wh//2`` and
  ``|c-c'| <= ww//2``; so a tile of queries sees whole tiles of keys, with no mask inside a tile. With
  ``causal="frame"`` the tiles are one frame deep (``tt = 1``); ``causal="token"`` has no tile form;
* every query attends every prefix key; prefix queries attend every key, except that with either causal
  mode the prefix counts as the past (time before frame 0), so prefix queries then attend only the prefix
  (all of it). (Letting the prefix see future frames would leak the future into frame 0 through the next layer.)

Decode calls (``attention3d(..., q_start=s)``) compute rows ``[s, e)`` of this pattern from keys ``[0, e)``;
they are exact only when no query in ``[s, e)`` may attend a key at ``>= e`` (:func:`decode_violation`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence, Tuple, Union

import torch

from vidgen.errors import InvalidInputError

Grid = Tuple[int, int, int]
Window = Optional[Sequence[Optional[int]]]
Causal = Union[bool, Literal["frame", "token"]]  # True == "frame"
AXES = ("t", "h", "w")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class AttentionPattern:
    """A validated 3D attention pattern. ``radii[i]`` is ``window[i] // 2`` or ``None`` when the window does
    not restrict that axis (``None`` in the window, or a window at least as large as the grid).
    ``causal`` is True for both causal modes; ``token_causal`` narrows it to token level (see :attr:`causal_mode`).
    ``tile``: tile-aligned windows (the radii then count tiles of this size), or None for exact windows."""

    grid: Grid
    radii: Tuple[Optional[int], Optional[int], Optional[int]]
    causal: bool = False
    num_prefix_tokens: int = 0
    token_causal: bool = False
    tile: Optional[Grid] = None

    def __post_init__(self):
        if self.token_causal and not self.causal:
            raise InvalidInputError("token_causal=True needs causal=True (token causality implies frame causality)")

    @property
    def causal_mode(self) -> Causal:
        """``False``, ``"frame"`` or ``"token"``."""
        return "token" if self.token_causal else ("frame" if self.causal else False)

    @property
    def num_video_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_video_tokens

    @property
    def is_full(self) -> bool:
        """True when every query may attend every key (no mask needed)."""
        if self.token_causal:
            return self.num_tokens == 1
        no_window = all(r is None for r in self.radii)
        return no_window and (not self.causal or (self.grid[0] == 1 and self.num_prefix_tokens == 0))

    def window_size(self, axis: int) -> int:
        """Number of keys a query can see along ``axis`` away from the borders (ignoring causality)."""
        r, step = self.radii[axis], self.tile_size(axis)
        return self.grid[axis] if r is None else min((2 * r + 1) * step, self.grid[axis])

    def tile_size(self, axis: int) -> int:
        """Tokens per tile along ``axis`` (1 for exact windows: every token its own tile)."""
        return 1 if self.tile is None else self.tile[axis]

    def density(self) -> float:
        """Fraction of (query, key) pairs that are allowed: the FLOP ratio windowed / dense."""
        all_pairs, before = [], []  # per axis: pairs within the window, and those with the key strictly before
        for axis, n in enumerate(self.grid):
            pos = torch.arange(n)
            diff = pos[None, :] - pos[:, None]  # key - query
            tiles = pos // self.tile_size(axis)
            ok = torch.ones(n, n, dtype=torch.bool)
            if self.radii[axis] is not None:
                ok &= (tiles[None, :] - tiles[:, None]).abs() <= self.radii[axis]
            all_pairs.append(int(ok.sum()))
            before.append(int((ok & (diff < 0)).sum()))
        (nt, nh, nw), (at, ah, aw), (bt, bh, bw) = self.grid, all_pairs, before
        if self.token_causal:  # raster order: earlier frame, or same frame and earlier row, or same row and w' <= w
            video_pairs = bt * ah * aw + nt * bh * aw + nt * nh * (bw + nw)
        elif self.causal:
            video_pairs = (bt + nt) * ah * aw
        else:
            video_pairs = at * ah * aw
        p, nv = self.num_prefix_tokens, self.num_video_tokens
        prefix_rows = p * (p if self.causal else p + nv)
        allowed = video_pairs + nv * p + prefix_rows
        return allowed / float(self.num_tokens ** 2)

    def as_kwargs(self) -> dict:
        """Keyword arguments of :func:`vidgen.attention.attention3d` that reproduce this pattern."""
        window = None
        if any(r is not None for r in self.radii):
            window = tuple(None if r is None else 2 * r + 1 for r in self.radii)
        causal = "token" if self.token_causal else self.causal
        tile = {} if self.tile is None else {"tile": self.tile}
        return dict(grid=self.grid, window=window, causal=causal, num_prefix_tokens=self.num_prefix_tokens, **tile)


def normalize_causal(causal) -> Causal:
    """``False``, ``"frame"`` or ``"token"`` from an accepted ``causal`` value (True == "frame")."""
    if isinstance(causal, bool):
        return "frame" if causal else False
    if isinstance(causal, str) and causal in ("frame", "token"):
        return causal
    raise InvalidInputError(f"causal must be False, True, 'frame' or 'token', got {causal!r}")


def make_pattern(grid, window: Window = None, causal: Causal = False, num_prefix_tokens: int = 0,
                 tile: Optional[Sequence[int]] = None) -> AttentionPattern:
    """Validate the arguments of ``attention3d`` and return the normalised :class:`AttentionPattern`. Arguments of
    exact types (tuples or lists of ints, bool or str ``causal``) are looked up in a cache first: models call the same
    pattern in every layer and step."""
    plain = (type(grid) in (tuple, list) and type(num_prefix_tokens) is int and type(causal) in (bool, str)
             and all(type(g) is int for g in grid)
             and (window is None or (type(window) in (tuple, list) and all(x is None or type(x) is int
                                                                            for x in window)))
             and (tile is None or (type(tile) in (tuple, list) and all(type(x) is int for x in tile))))
    if plain:
        return _cached_pattern(tuple(grid), None if window is None else tuple(window), causal, num_prefix_tokens,
                               None if tile is None else tuple(tile))
    return _make_pattern(grid, window, causal, num_prefix_tokens, tile)


def _check_tile(tile, window, mode) -> Optional[Grid]:
    """``tile`` as three positive ints, in a pattern that can have whole tiles (named errors otherwise)."""
    if tile is None:
        return None
    if not isinstance(tile, (tuple, list)) or len(tile) != 3 or not all(_is_int(x) and x > 0 for x in tile):
        raise InvalidInputError(f"tile must be None or three positive ints (tt, th, tw), got {tile!r}")
    if window is None:
        raise InvalidInputError(f"tile={tuple(tile)} needs a window counted in tiles (window=(wt, wh, ww))")
    if mode == "token":
        raise InvalidInputError("tile: tile-aligned windows have no causal='token' form (a tile would need a mask "
                                "inside it); use causal='frame' with tile t = 1, or exact windows")
    if mode == "frame" and tile[0] != 1:
        raise InvalidInputError(f"tile={tuple(tile)} with causal='frame': tiles must be one frame deep (tt = 1), "
                                "or a tile would need a causal mask inside it")
    return tuple(int(x) for x in tile)


def _make_pattern(grid, window: Window, causal: Causal, num_prefix_tokens: int,
                  tile: Optional[Sequence[int]] = None) -> AttentionPattern:
    if not isinstance(grid, (tuple, list)) or len(grid) != 3 or not all(_is_int(g) and g > 0 for g in grid):
        raise InvalidInputError(f"grid must be three positive ints (T, H, W), got {grid!r}")
    if not _is_int(num_prefix_tokens) or num_prefix_tokens < 0:
        raise InvalidInputError(f"num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r}")
    mode = normalize_causal(causal)
    tile = _check_tile(tile, window, mode)
    radii = [None, None, None]
    if window is not None:
        if not isinstance(window, (tuple, list)) or len(window) != 3:
            raise InvalidInputError(f"window must be None or three entries (wt, wh, ww), got {window!r}")
        for axis, (size, n) in enumerate(zip(window, grid)):
            if size is None:
                continue
            if not _is_int(size) or size < 1:
                raise InvalidInputError(
                    f"window[{axis}] (axis {AXES[axis]}) must be a positive int or None, got {size!r}")
            # A window reaching every position (tile) of the axis does not restrict it: normalise to None.
            tiles = n if tile is None else -(-n // tile[axis])
            radii[axis] = None if size // 2 >= tiles - 1 else size // 2
    if all(r is None for r in radii):
        tile = None  # nothing restricted: the full pattern, however it is tiled
    return AttentionPattern(tuple(int(g) for g in grid), tuple(radii), bool(mode), int(num_prefix_tokens),
                            mode == "token", tile)


_cached_pattern = functools.lru_cache(maxsize=256)(_make_pattern)  # exceptions are raised again, never cached


def _allowed(q_idx: torch.Tensor, kv_idx: torch.Tensor, pattern: AttentionPattern) -> torch.Tensor:
    """Whether query index ``q_idx`` may attend key index ``kv_idx`` (broadcasting integer tensors).
    Pure tensor ops (no data-dependent Python control flow) so FlexAttention can vmap it."""
    t_size, h_size, w_size = pattern.grid
    p = pattern.num_prefix_tokens
    hw = h_size * w_size
    qv, kv = (q_idx - p).clamp(min=0), (kv_idx - p).clamp(min=0)
    q_coords = (qv // hw, (qv % hw) // w_size, qv % w_size)
    k_coords = (kv // hw, (kv % hw) // w_size, kv % w_size)
    video_ok = torch.ones_like(q_idx - kv_idx, dtype=torch.bool)
    for axis, (radius, qc, kc) in enumerate(zip(pattern.radii, q_coords, k_coords)):
        if radius is not None:
            step = pattern.tile_size(axis)  # exact windows: 1, every token its own tile
            video_ok = video_ok & ((qc // step - kc // step).abs() <= radius)
    if pattern.causal:
        video_ok = video_ok & (k_coords[0] <= q_coords[0])
    if pattern.token_causal:
        video_ok = video_ok & (kv_idx <= q_idx)
    if p == 0:
        return video_ok
    q_prefix, k_prefix = q_idx < p, kv_idx < p
    prefix_query_ok = k_prefix if pattern.causal else torch.ones_like(video_ok)
    return k_prefix | torch.where(q_prefix, prefix_query_ok, video_ok)


def pattern_mask(pattern: AttentionPattern, device=None) -> torch.Tensor:
    """Dense ``(N, N)`` bool mask of ``pattern`` (True = may attend)."""
    idx = torch.arange(pattern.num_tokens, device=device)
    return pattern_mask_rows(pattern, idx, idx)


def pattern_mask_rows(pattern: AttentionPattern, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
    """``(len(q_idx), len(kv_idx))`` bool block of the dense mask at those query / key indices."""
    return _allowed(q_idx[:, None], kv_idx[None, :], pattern)


def last_allowed_key(pattern: AttentionPattern, q_idx: torch.Tensor) -> torch.Tensor:
    """Largest key index each query index in ``q_idx`` may attend (the allowed key latest in the sequence)."""
    _, h_size, w_size = pattern.grid
    p, hw = pattern.num_prefix_tokens, h_size * w_size
    qv = (q_idx - p).clamp(min=0)
    reach = []
    for axis, (coord, radius, size) in enumerate(zip((qv // hw, (qv % hw) // w_size, qv % w_size),
                                                     pattern.radii, pattern.grid)):
        step = pattern.tile_size(axis)
        if axis == 0 and pattern.causal:
            reach.append(coord)
        elif radius is None:
            reach.append(torch.full_like(coord, size - 1))
        else:  # the last token of the last tile in reach
            reach.append(((coord // step + radius + 1) * step - 1).clamp(max=size - 1))
    video_last = q_idx if pattern.token_causal else p + (reach[0] * h_size + reach[1]) * w_size + reach[2]
    prefix_last = p - 1 if pattern.causal else pattern.num_tokens - 1
    return torch.where(q_idx < p, torch.full_like(q_idx, prefix_last), video_last)


def decode_violation(pattern: AttentionPattern, q_start: int, q_end: int) -> Optional[Tuple[int, int]]:
    """``None`` if queries ``[q_start, q_end)`` attend only keys ``< q_end`` (a decode call with keys
    ``[0, q_end)`` is then exact), else ``(query, key)``: the first query that may attend a key ``>= q_end``."""
    p = pattern.num_prefix_tokens
    if pattern.token_causal:  # no tensor work on the decode hot path: only prefix queries look ahead (to p - 1)
        return (q_start, p - 1) if q_start < p and q_end < p else None
    last = last_allowed_key(pattern, torch.arange(q_start, q_end))
    bad = (last >= q_end).nonzero()
    if bad.numel() == 0:
        return None
    i = int(bad[0, 0])
    return q_start + i, int(last[i])


def attention_mask3d(grid, window: Window = None, causal: Causal = False, num_prefix_tokens: int = 0,
                     device=None, tile: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The dense boolean reference mask ``(N, N)``, ``N = num_prefix_tokens + T*H*W`` (True = may attend)."""
    return pattern_mask(make_pattern(grid, window, causal, num_prefix_tokens, tile), device)


def flex_mask_mod3d(grid, window: Window = None, causal: Causal = False, num_prefix_tokens: int = 0) -> Callable:
    """A FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` with the same pattern as :func:`attention_mask3d`."""
    return pattern_mask_mod(make_pattern(grid, window, causal, num_prefix_tokens))


def pattern_mask_mod(pattern: AttentionPattern) -> Callable:
    def mask_mod(b, h, q_idx, kv_idx):
        return _allowed(q_idx, kv_idx, pattern)

    causal = "t" if pattern.token_causal else int(pattern.causal)
    tile = "" if pattern.tile is None else f"_tile{pattern.tile}"
    mask_mod.__name__ = f"mask3d_{pattern.grid}_{pattern.radii}_c{causal}_p{pattern.num_prefix_tokens}{tile}"
    return mask_mod


# Named pattern factories (torchtitan-style): the common video attention layouts.
def full_pattern(grid, num_prefix_tokens: int = 0) -> AttentionPattern:
    """Every token attends every token."""
    return make_pattern(grid, None, False, num_prefix_tokens)


def spatial_pattern(grid, num_prefix_tokens: int = 0) -> AttentionPattern:
    """Each frame attends only itself (Latte / factorised 'spatial' blocks)."""
    return make_pattern(grid, (1, None, None), False, num_prefix_tokens)


def temporal_pattern(grid, num_prefix_tokens: int = 0, causal: Causal = False) -> AttentionPattern:
    """Each pixel position attends itself across time (factorised 'temporal' blocks)."""
    return make_pattern(grid, (None, 1, 1), causal, num_prefix_tokens)


def window_pattern(grid, window, causal: Causal = False, num_prefix_tokens: int = 0) -> AttentionPattern:
    """Local 3D neighbourhood attention (NATTEN-style, clipped at the borders)."""
    return make_pattern(grid, window, causal, num_prefix_tokens)


def causal_pattern(grid, num_prefix_tokens: int = 0, causal: Causal = "frame") -> AttentionPattern:
    """Causal full attention: a token sees every token of its own and earlier frames (``"frame"``), or every
    earlier token in raster order and itself (``"token"``, GPT-style)."""
    if not causal:
        raise InvalidInputError(f"causal must be True, 'frame' or 'token' for causal_pattern, got {causal!r}")
    return make_pattern(grid, None, causal, num_prefix_tokens)


PATTERN_FACTORIES = {
    "full": lambda grid: full_pattern(grid),
    "spatial": lambda grid: spatial_pattern(grid),
    "temporal": lambda grid: temporal_pattern(grid),
    "window": lambda grid: window_pattern(grid, (3, 7, 7)),
    "causal": lambda grid: causal_pattern(grid),
}

"""Packed slot codes: the fused kernel's mask of a (query, key) slot pair in five integer operations.

Each slot of a :class:`~vidgen.attention.tiles.Layout` gets one int32 code, ``t << 20 | h << 10 | w`` (bit 31 stays
0). Along each axis the window allows the offsets ``d = query - key`` in ``[-a, b]``: ``a = b = radius``, and
``a = 0`` on t when the pattern is causal. With ``G`` the top bit of each field (its *guard*)::

    c = code_q - code_k
    x = c + OFF_A    holds G + a + d in each field: >= G iff d >= -a
    y = OFF_B - c    holds G + b - d in each field: >= G iff d <= b

While every field value stays in ``[0, 2G)`` no field borrows from the next, so the window allows the pair iff
``x & y & GUARD == GUARD``: five integer operations (the coordinate test takes eleven), and of the query side only
its code stays live in the kernel's loop. Prefix and
padding slots carry sentinel t values for which this test says exactly what the coordinate test says for the
``PREFIX_T`` / ``PAD_T`` coordinates of :mod:`vidgen.attention.tiles`; the prefix rules are then OR-ed in from
per-slot flags, as with coordinates. :func:`pack` returns None when a grid or window is too large for the fields;
the kernel then tests coordinates. :func:`allowed_from_codes` and :func:`allowed_from_coords` compute both tests in
PyTorch, so tests can check that they agree on every pair of slots.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from vidgen.attention.masks import AttentionPattern
from vidgen.attention.tiles import PAD_T, PREFIX_T, Layout

FIELDS = ((20, 11), (10, 10), (0, 10))  # (shift, bits) of the t, h and w fields
GUARD = sum(1 << (shift + bits - 1) for shift, bits in FIELDS)


@dataclass(frozen=True)
class MaskCodes:
    codes: torch.Tensor  # (length,) int32: one code per slot of the layout
    off_a: int
    off_b: int
    prefix_code: int  # the code of every prefix slot
    video_end: int  # real video slots, and only they, have codes below it


def kernel_radii(pattern: AttentionPattern) -> List[int]:
    """The radii the kernel compares with: an unlimited axis gets the axis size (no offset exceeds it)."""
    return [n if r is None else r for n, r in zip(pattern.grid, pattern.radii)]


def pack(pattern: AttentionPattern, layout: Layout) -> Optional[MaskCodes]:
    """The codes of ``layout``'s slots, or None where a field cannot hold the grid and window."""
    radii = kernel_radii(pattern)
    low, high = list(radii), list(radii)
    if pattern.causal:
        low[0] = 0
    t, h, w = layout.coords.long().cpu()
    prefix, pad = t == PREFIX_T, t == PAD_T
    reach_t = max(low[0], high[0])
    prefix_t = pattern.grid[0] + reach_t  # beyond every real query's reach, both ways
    pad_t = prefix_t + low[0] + 1  # and a prefix query cannot reach a padding key either
    tops = [pad_t + 1, int(h.max()) + 1, int(w.max()) + 1]  # one past each field's largest value
    for (_, bits), top, lo, hi in zip(FIELDS, tops, low, high):
        if top + max(lo, hi) >= 1 << (bits - 1):  # keeps every field of x, y and the offset codes in [0, 2G)
            return None
    t_field = torch.where(prefix, prefix_t, torch.where(pad, pad_t, t))
    codes = (t_field << FIELDS[0][0]) | (h << FIELDS[1][0]) | (w << FIELDS[2][0])

    def offset(reach):
        return sum(((1 << (bits - 1)) + r) << shift for (shift, bits), r in zip(FIELDS, reach))
    return MaskCodes(codes.to(device=layout.coords.device, dtype=torch.int32), offset(low), offset(high),
                     prefix_t << FIELDS[0][0], pattern.grid[0] << FIELDS[0][0])


def _prefix_rules(window_ok, q_prefix, k_prefix, k_video, causal: bool):
    """Every query attends the prefix; without causality prefix queries attend every real key."""
    ok = window_ok | k_prefix[None, :]
    return ok if causal else ok | (q_prefix[:, None] & k_video[None, :])


def _pick(x: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
    return x if index is None else x[..., index]


def allowed_from_codes(mc: MaskCodes, pattern: AttentionPattern, rows: Optional[torch.Tensor] = None,
                       cols: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(query slots, key slots) bool: the kernel's packed test on the slots ``rows`` x ``cols`` (default: all)."""
    q, k = _pick(mc.codes.long(), rows), _pick(mc.codes.long(), cols)
    c = q[:, None] - k[None, :]
    x, y = c + mc.off_a, mc.off_b - c
    ok = (x & y & GUARD) == GUARD
    return _prefix_rules(ok, q == mc.prefix_code, k == mc.prefix_code, k < mc.video_end, bool(pattern.causal))


def allowed_from_coords(pattern: AttentionPattern, layout: Layout, rows: Optional[torch.Tensor] = None,
                        cols: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(query slots, key slots) bool: the kernel's coordinate test on the slots ``rows`` x ``cols`` (default: all)."""
    rt, rh, rw = kernel_radii(pattern)
    (qt, qh, qw), (kt, kh, kw) = _pick(layout.coords.long(), rows), _pick(layout.coords.long(), cols)
    dt = qt[:, None] - kt[None, :]
    ok = (dt.abs() <= rt) & ((qh[:, None] - kh[None, :]).abs() <= rh) & ((qw[:, None] - kw[None, :]).abs() <= rw)
    if pattern.causal:
        ok = ok & (dt >= 0)
    return _prefix_rules(ok, qt == PREFIX_T, kt == PREFIX_T, (kt >= 0) & (kt < PAD_T), bool(pattern.causal))

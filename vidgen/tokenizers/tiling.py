"""Spatial tiling with overlap blending, for frames too large to process at once.

Windows overlap by ``overlap`` input pixels; outputs are blended with weights that ramp across each overlap band
(only on sides that have a neighbour; zero near a window's own edge, where it lacks context), so every output
pixel is a convex combination of the windows covering it and no hard seam appears. Because the codec has no attention and only per-pixel norms,
a window differs from the full frame only within the receptive field of its border (where the ramp is low).
"""
from __future__ import annotations

from typing import Callable

import torch

from vidgen.errors import InvalidInputError


def window_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of windows of length ``tile`` covering ``[0, size)`` with at least ``overlap`` shared."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def _band_weights(n: int) -> torch.Tensor:
    """Weights rising across a shared band of ``n`` pixels (index 0 = this window's edge).

    Zero over the first quarter (pixels nearest the edge see zero padding instead of real context), linear over
    the middle half, one over the last quarter. The neighbour's weights are the mirror image, so the two sum
    to exactly one across the band.
    """
    pos = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # (0, 1)
    return ((pos - 0.25) / 0.5).clamp(0.0, 1.0).float()


def _ramp(length: int, start: int, end: int, total: int, band_before: int, band_after: int) -> torch.Tensor:
    """1D blend weight of a window ``[start, end)``; ramps over the bands shared with neighbours."""
    w = torch.ones(length)
    if start > 0 and band_before > 0:
        n = min(band_before, length)
        w[:n] = _band_weights(n)
    if end < total and band_after > 0:
        n = min(band_after, length)
        w[length - n:] = torch.minimum(w[length - n:], _band_weights(n).flip(0))
    return w


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
                scale: float, out: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` to overlapping spatial windows of ``x`` ``(B, C, T, H, W)`` and blend into ``out``.

    ``fn`` maps a window of ``h x w`` to ``h*scale x w*scale`` (any channels / frames, matching ``out``).
    """
    if not 0 <= overlap < tile:
        raise InvalidInputError(f"tile overlap must be in [0, tile), got tile={tile}, overlap={overlap}")
    h, w = x.shape[-2:]
    out.zero_()
    weight_sum = torch.zeros(out.shape[-2:], dtype=out.dtype)
    ys, xs = window_starts(h, tile, overlap), window_starts(w, tile, overlap)
    for i, y0 in enumerate(ys):
        y1 = min(y0 + tile, h)
        for j, x0 in enumerate(xs):
            x1 = min(x0 + tile, w)
            y_out = fn(x[..., y0:y1, x0:x1])
            oy0, ox0 = round(y0 * scale), round(x0 * scale)
            oh, ow = y_out.shape[-2:]
            # blend bands: the actual overlap with the previous / next window (last windows may overlap more)
            before_y = (ys[i - 1] + tile - y0) if i > 0 else 0
            after_y = (y1 - ys[i + 1]) if i + 1 < len(ys) else 0
            before_x = (xs[j - 1] + tile - x0) if j > 0 else 0
            after_x = (x1 - xs[j + 1]) if j + 1 < len(xs) else 0
            wy = _ramp(oh, y0, y1, h, round(before_y * scale), round(after_y * scale))
            wx = _ramp(ow, x0, x1, w, round(before_x * scale), round(after_x * scale))
            wgt = (wy[:, None] * wx[None, :]).to(out.dtype)
            out[..., oy0:oy0 + oh, ox0:ox0 + ow] += y_out * wgt
            weight_sum[oy0:oy0 + oh, ox0:ox0 + ow] += wgt
    return out.div_(weight_sum)

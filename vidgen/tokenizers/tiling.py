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


def _axis_windows(size: int, tile: int, overlap: int, scale: float) -> list[tuple[int, int, Callable]]:
    """``(input start, output start, weights(output length))`` of every window along one axis."""
    starts, out = window_starts(size, tile, overlap), []
    for i, s in enumerate(starts):
        e = min(s + tile, size)
        # blend bands: the actual overlap with the previous / next window (last windows may overlap more)
        before = round(((starts[i - 1] + tile - s) if i > 0 else 0) * scale)
        after = round(((e - starts[i + 1]) if i + 1 < len(starts) else 0) * scale)
        out.append((s, round(s * scale), lambda n, s=s, e=e, b=before, a=after: _ramp(n, s, e, size, b, a)))
    return out


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile, overlap,
                scale: float, out: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` to overlapping spatial windows of ``x`` ``(B, C, T, H, W)`` and blend into ``out``.

    ``tile`` / ``overlap``: an int (square windows) or ``(height, width)``, in units of ``x``. ``fn`` maps a
    window of ``h x w`` to ``h*scale x w*scale`` (any channels / frames, matching ``out``). Blending happens in
    ``out``'s dtype; the result has the tiles' dtype (``out`` itself when they agree).
    """
    (tile_h, tile_w), (over_h, over_w) = _pair(tile), _pair(overlap)
    if not (0 <= over_h < tile_h and 0 <= over_w < tile_w):
        raise InvalidInputError(f"tile overlap must be in [0, tile), got tile={tile}, overlap={overlap}")
    h, w = x.shape[-2:]
    out.zero_()
    weight_sum = torch.zeros(out.shape[-2:], dtype=out.dtype, device=out.device)
    tile_dtype = out.dtype
    for y0, oy0, wy in _axis_windows(h, tile_h, over_h, scale):
        for x0, ox0, wx in _axis_windows(w, tile_w, over_w, scale):
            y_out = fn(x[..., y0:y0 + tile_h, x0:x0 + tile_w])
            tile_dtype = y_out.dtype
            oh, ow = y_out.shape[-2:]
            wgt = (wy(oh)[:, None] * wx(ow)[None, :]).to(device=out.device, dtype=out.dtype)
            out[..., oy0:oy0 + oh, ox0:ox0 + ow] += y_out * wgt
            weight_sum[oy0:oy0 + oh, ox0:ox0 + ow] += wgt
    return out.div_(weight_sum).to(tile_dtype)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))

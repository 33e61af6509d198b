"""Input conversion and resizing for the feature networks (FVD's I3D, FID's Inception).

* :func:`to_signed_unit` - accept float ``[-1, 1]`` or uint8 ``[0, 255]``, return float32 ``[-1, 1]``; anything
  else (floats outside [-1, 1], other dtypes) is an error, never silently clamped.
* :func:`resize_short_side_center_crop` - FVD preprocessing as in StyleGAN-V: bilinear (align_corners=False,
  no antialias) so the short side is ``size`` (long side rounded up), then a centre crop (offsets rounded down);
  a no-op when frames already are size x size.
* :func:`tf1_bilinear_resize` - TensorFlow-1 ``resize_bilinear`` (align_corners=False, *no* half-pixel centres:
  source coordinate = i * in / out, clamped at the border), the resize NVIDIA's FID Inception expects.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vidgen.errors import InvalidInputError

_RANGE_TOLERANCE = 1e-3  # float rounding of decoded videos


def to_signed_unit(x: torch.Tensor, name: str = "videos", ndim: int = 5) -> torch.Tensor:
    """float in [-1, 1] (kept) or uint8 in [0, 255] (mapped) -> float32 in [-1, 1], shape checked."""
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    layout = "(N, 3, T, H, W)" if ndim == 5 else "(N, 3, H, W)"
    if x.ndim != ndim or x.shape[1] != 3:
        raise InvalidInputError(f"{name} must have shape {layout}, got {tuple(x.shape)}")
    if x.numel() == 0:
        raise InvalidInputError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise InvalidInputError(f"{name} must be float in [-1, 1] or uint8 in [0, 255], got dtype {x.dtype}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise InvalidInputError(f"{name} contains NaN or infinite values")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        raise InvalidInputError(f"{name} must be in [-1, 1] (or uint8), got values in [{lo:.3f}, {hi:.3f}]")
    return x.clamp(-1.0, 1.0)  # only removes rounding noise within the tolerance above


def resize_short_side_center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """``(M, C, H, W)`` -> ``(M, C, size, size)``: bilinear so min(H, W) == size, then centre crop."""
    h, w = frames.shape[-2:]
    if (h, w) == (size, size):
        return frames
    short = min(h, w)
    # the short side becomes exactly `size`; the long side is rounded up (as StyleGAN-V-derived code does)
    new_h, new_w = (size, -(-w * size // short)) if h == short else (-(-h * size // short), size)
    frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return frames[..., top: top + size, left: left + size]


def videos_to_frames(x: torch.Tensor) -> torch.Tensor:
    n, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(n * t, c, h, w)  # (N*T, C, H, W)


def frames_to_videos(frames: torch.Tensor, n: int) -> torch.Tensor:
    m, c, h, w = frames.shape
    return frames.reshape(n, m // n, c, h, w).transpose(1, 2)  # (N, C, T, H, W)


def _tf1_axis_weights(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src = torch.arange(n_out, dtype=torch.float64, device=device) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo, hi, (src - lo).float()


def tf1_bilinear_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(M, C, H, W)`` float -> ``(M, C, *size)``, TF1 legacy bilinear (see module docstring)."""
    h_lo, h_hi, h_frac = _tf1_axis_weights(images.shape[-2], size[0], images.device)
    w_lo, w_hi, w_frac = _tf1_axis_weights(images.shape[-1], size[1], images.device)
    rows = images[..., h_lo, :] + (images[..., h_hi, :] - images[..., h_lo, :]) * h_frac[:, None]
    return rows[..., w_lo] + (rows[..., w_hi] - rows[..., w_lo]) * w_frac


__all__ = ["frames_to_videos", "resize_short_side_center_crop", "tf1_bilinear_resize", "to_signed_unit",
           "videos_to_frames"]

"""Reconstruction metrics on video batches: PSNR, SSIM and a temporal flicker error.

All functions take two batches ``x`` (reference) and ``y`` (reconstruction) of shape ``(B, 3, T, H, W)``
with values in ``[-1, 1]`` and return one number per video, a float tensor of shape ``(B,)``.

Definitions (chosen to match how video tokenizer papers report these numbers):

* ``psnr``: per-frame PSNR with data range 2 (the width of ``[-1, 1]``, i.e. the same value as PSNR on
  ``[0, 1]`` images with data range 1), averaged over the frames of each video. A frame that is identical
  to its reference would be infinite; its MSE is floored at ``1e-10`` (PSNR <= ~106 dB) so averages stay finite.
* ``ssim``: Wang et al. SSIM per frame on each RGB channel with an 11x11 Gaussian window (sigma 1.5),
  K1=0.01, K2=0.03, data range 2, 'valid' filtering (no padding), averaged over channels, pixels and frames.
* ``temporal_flicker``: mean absolute difference between the frame differences of ``x`` and ``y``
  (``|(y[t+1]-y[t]) - (x[t+1]-x[t])|`` averaged), in the units of ``[-1, 1]``; 0 for a single frame.
  A reconstruction that is off by a constant per video scores 0, one that blinks between frames scores high.

Computation is done in float32 (float64 inputs stay float64) without gradients being blocked, so the functions
can also be used inside a loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vidgen.errors import InvalidInputError

DATA_RANGE = 2.0  # width of [-1, 1]
_MSE_FLOOR = 1e-10


def _check_pair(x: torch.Tensor, y: torch.Tensor, min_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise InvalidInputError(f"{name} must be a torch.Tensor of shape (B, 3, T, H, W), got {type(t).__name__}")
        if t.ndim != 5 or t.shape[1] != 3:
            raise InvalidInputError(f"{name} must have shape (B, 3, T, H, W), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise InvalidInputError(f"{name} must be a float tensor in [-1, 1], got dtype {t.dtype}")
        if t.numel() == 0:
            raise InvalidInputError(f"{name} is empty (shape {tuple(t.shape)})")
        if not torch.isfinite(t).all():
            raise InvalidInputError(f"{name} contains NaN or infinite values")
    if x.shape != y.shape:
        raise InvalidInputError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise InvalidInputError(f"frames must be at least {min_size}x{min_size} pixels, got {tuple(x.shape[-2:])}")
    dtype = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    return x.to(dtype), y.to(dtype)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-video mean of per-frame PSNR in dB (data range 2 for [-1, 1] inputs). Returns ``(B,)``."""
    x, y = _check_pair(x, y)
    mse = (x - y).pow(2).mean(dim=(1, 3, 4))  # (B, T)
    frame_psnr = 10.0 * torch.log10(DATA_RANGE**2 / mse.clamp_min(_MSE_FLOOR))
    return frame_psnr.mean(dim=1)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-video mean SSIM (per frame and channel, Gaussian window 11 / sigma 1.5, valid filtering). ``(B,)``."""
    if window_size < 1 or window_size % 2 == 0:
        raise InvalidInputError(f"window_size must be a positive odd integer, got {window_size}")
    x, y = _check_pair(x, y, min_size=window_size)
    b, c, t, h, w = x.shape
    # Frames become images: (B*T*3, 1, H, W); the separable Gaussian runs as two 1-D convolutions.
    xi = x.permute(0, 2, 1, 3, 4).reshape(b * t * c, 1, h, w)
    yi = y.permute(0, 2, 1, 3, 4).reshape(b * t * c, 1, h, w)
    g = _gaussian_window(window_size, sigma, x.dtype, x.device)
    gh, gw = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def blur(img: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(img, gh), gw)

    mu_x, mu_y = blur(xi), blur(yi)
    var_x = blur(xi * xi) - mu_x**2
    var_y = blur(yi * yi) - mu_y**2
    cov = blur(xi * yi) - mu_x * mu_y
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(b, -1).mean(dim=1)


def temporal_flicker(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between frame differences of ``x`` and ``y`` ([-1, 1] units). ``(B,)``; 0 if T == 1."""
    x, y = _check_pair(x, y)
    if x.shape[2] < 2:
        return x.new_zeros(x.shape[0])
    dx = x[:, :, 1:] - x[:, :, :-1]  # (B, 3, T-1, H, W)
    dy = y[:, :, 1:] - y[:, :, :-1]
    return (dy - dx).abs().mean(dim=(1, 2, 3, 4))


def reconstruction_metrics(x: torch.Tensor, y: torch.Tensor, perceptual=None) -> dict[str, torch.Tensor]:
    """All per-video reconstruction metrics as ``{name: (B,)}``: psnr, ssim, flicker and, if a
    :class:`~vidgen.metrics.perceptual.PerceptualDistance` is given, its per-frame mean under its own name
    (e.g. "ST-LPIPS-alex"), so a shift-tolerant variant is never reported as LPIPS."""
    out = {"psnr": psnr(x, y), "ssim": ssim(x, y), "flicker": temporal_flicker(x, y)}
    if perceptual is not None:
        from vidgen.metrics.perceptual import video_perceptual_distance

        out[perceptual.name] = video_perceptual_distance(perceptual, x, y)
    return out


__all__ = ["DATA_RANGE", "psnr", "reconstruction_metrics", "ssim", "temporal_flicker"]

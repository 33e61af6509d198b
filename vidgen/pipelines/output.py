"""Pipeline output (diffusers has no generic video output class)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffusers.utils import BaseOutput


@dataclass
class VideoPipelineOutput(BaseOutput):
    """``frames``: ``np`` (B, T, H, W, 3) in [0, 1], ``pt`` (B, T, 3, H, W) in [0, 1], ``pil`` list of lists of
    images, or ``latent`` (the generator's latents / ids)."""

    frames: Any

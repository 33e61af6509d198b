"""Pipeline outputs (diffusers has no generic video output class), their conversion to diffusers' output types, and
per-video sampling."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from diffusers.utils import BaseOutput

from vidgen.generators import Conditioning


@dataclass
class VideoPipelineOutput(BaseOutput):
    """``frames``: ``np`` (B, T, H, W, 3) in [0, 1], ``pt`` (B, T, 3, H, W) in [0, 1], ``pil`` list of lists of
    images, or ``latent`` (the generator's latents / ids)."""

    frames: Any


def to_output(video: torch.Tensor, output_type: str):
    """(B, 3, T, H, W) in [-1, 1] -> diffusers' video output formats."""
    x = ((video.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 1, 3, 4).cpu()  # (B, T, 3, H, W) in [0, 1]
    if output_type == "pt":
        return x
    frames = x.permute(0, 1, 3, 4, 2).numpy()  # (B, T, H, W, 3)
    if output_type == "np":
        return frames
    from PIL import Image
    return [[Image.fromarray((f * 255).round().astype(np.uint8)) for f in video] for video in frames]


def per_sample(sample_fn: Callable, generators: list, batch: int, sliced: dict) -> torch.Tensor:
    """Run ``sample_fn(rows, generator, **sliced_rows)`` once for the batch, or once per video with a generator list.
    ``sliced`` maps keyword names to per-video tensors / Conditioning (or None) to slice along the batch."""
    if len(generators) == 1:
        return sample_fn(batch, generators[0], **sliced)
    outs = []
    for i, g in enumerate(generators):
        part = {k: (None if v is None else (v.index(slice(i, i + 1)) if isinstance(v, Conditioning) else v[i:i + 1]))
                for k, v in sliced.items()}
        outs.append(sample_fn(1, g, **part))
    return torch.cat(outs)

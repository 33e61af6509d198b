"""Reference rows for the reconstruction benchmark that learn nothing.

``ResizeBaseline`` is "just resize it": bicubic (antialiased) spatial downsampling and keeping every ``temporal``-th
frame, then bicubic upsampling and linear interpolation between the kept frames. A learned tokenizer that stores
fewer values has to beat it clearly to be worth its compute (the default, ``bicubic``: 4x spatial and every other
frame, 32x fewer values, against a 4x8x8 VAE's 48x).
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from vidgen.errors import InvalidInputError

_NAME = re.compile(r"^bicubic(?:-(\d+)x(\d+))?$")


class ResizeBaseline(nn.Module):
    """Bicubic down/up by ``spatial`` and every ``temporal``-th frame (the first and last frame are always kept, so
    every dropped frame lies between two kept ones). ``encode`` returns the kept, shrunk frames; ``decode`` restores
    ``num_frames`` x ``height`` x ``width``."""

    def __init__(self, spatial: int = 4, temporal: int = 2):
        super().__init__()
        if spatial < 1 or temporal < 1:
            raise InvalidInputError(f"ResizeBaseline factors must be >= 1, got spatial={spatial}, temporal={temporal}")
        self.spatial, self.temporal = int(spatial), int(temporal)
        self.register_buffer("_dtype_probe", torch.zeros(()), persistent=False)

    @classmethod
    def from_name(cls, name: str) -> "ResizeBaseline":
        """``"bicubic"`` (4x spatial, every other frame) or ``"bicubic-SxT"``, e.g. ``"bicubic-4x2"``."""
        match = _NAME.match(str(name))
        if match is None:
            raise InvalidInputError(f"resize baseline name must be 'bicubic' or 'bicubic-SxT' (e.g. bicubic-4x2), got "
                                    f"{name!r}")
        return cls(int(match.group(1) or 4), int(match.group(2) or 2))

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype_probe.dtype

    def kept_frames(self, num_frames: int) -> list[int]:
        kept = list(range(0, num_frames, self.temporal))
        return kept if kept[-1] == num_frames - 1 else kept + [num_frames - 1]

    def encode(self, x: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> kept frames at ``1 / spatial`` size (``chunk_frames`` is accepted and unused:
        every frame is coded alone)."""
        b, c, t, h, w = x.shape
        if h % self.spatial or w % self.spatial:
            raise InvalidInputError(f"frame size {h}x{w} is not divisible by the baseline's {self.spatial}x resize")
        kept = x[:, :, self.kept_frames(t)]
        frames = kept.transpose(1, 2).flatten(0, 1).float()
        small = F.interpolate(frames, size=(h // self.spatial, w // self.spatial), mode="bicubic", antialias=True,
                              align_corners=False)
        return small.unflatten(0, (b, -1)).transpose(1, 2).to(x.dtype)

    def decode(self, z: torch.Tensor, num_frames: int, height: int, width: int,
               chunk_frames: int | None = None) -> torch.Tensor:
        b = z.shape[0]
        kept = self.kept_frames(num_frames)
        if z.shape[2] != len(kept):
            raise InvalidInputError(f"{z.shape[2]} coded frames cannot decode to {num_frames} frames "
                                    f"(that needs {len(kept)})")
        frames = z.transpose(1, 2).flatten(0, 1).float()
        big = F.interpolate(frames, size=(height, width), mode="bicubic", align_corners=False)
        big = big.unflatten(0, (b, -1)).transpose(1, 2)  # (B, 3, K, H, W)
        out = []
        for index in range(num_frames):  # linear in time between the two kept frames around each frame
            right = next(k for k, frame in enumerate(kept) if frame >= index)
            if kept[right] == index:
                out.append(big[:, :, right])
                continue
            left = right - 1
            weight = (index - kept[left]) / (kept[right] - kept[left])
            out.append(big[:, :, left] * (1 - weight) + big[:, :, right] * weight)
        return torch.stack(out, dim=2).clamp(-1, 1).to(z.dtype)

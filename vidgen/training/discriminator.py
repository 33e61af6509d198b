"""3D PatchGAN discriminator for videos (images are 1-frame videos): one logit per space-time patch."""
from __future__ import annotations

import torch
import torch.nn as nn


class PatchDiscriminator3D(nn.Module):
    """Strided 3D convs with GroupNorm and LeakyReLU; time is downsampled only while it is longer than 1."""

    def __init__(self, channels: int = 32, num_layers: int = 3, max_channels: int = 256):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv3d(3, channels, (3, 4, 4), (1, 2, 2), (1, 1, 1)), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(1, num_layers):
            c_next = min(c * 2, max_channels)
            layers += [nn.Conv3d(c, c_next, (3, 4, 4), (1, 2, 2), (1, 1, 1)), nn.GroupNorm(8 if c_next % 8 == 0 else 1, c_next),
                       nn.LeakyReLU(0.2)]
            c = c_next
        layers.append(nn.Conv3d(c, 1, (3, 3, 3), 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, 1, T, h, w)
        return self.net(x)

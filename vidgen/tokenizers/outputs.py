"""What every tokenizer's training entry point returns (``reconstruct``): its own module, so the bottlenecks
(KL, quantizers) and the models that use them import it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class BottleneckOutput:
    """What a bottleneck gives the training loop: the decoder input, its (weighted) extra loss, and logs."""

    latent: torch.Tensor
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class ReconstructionOutput:
    sample: torch.Tensor  # (B, 3, T, H, W), same shape as the input
    bottleneck: BottleneckOutput

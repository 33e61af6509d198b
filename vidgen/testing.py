"""Helpers for testing models on live weights.

Zero-initialised residual branches (DiT gates, the tokenizers' residual blocks) make a fresh model the identity, so
a guarantee tested on a fresh model can hold while the claim is false. :func:`perturb_weights` makes every layer
contribute before such a test.
"""
from __future__ import annotations

import torch


def perturb_weights(*models: torch.nn.Module, seed: int = 1, scale: float = 0.05):
    """Add ``scale * N(0, 1)`` noise (seeded) to every parameter of ``models``, in place; returns the first model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for model in models:
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return models[0] if models else None

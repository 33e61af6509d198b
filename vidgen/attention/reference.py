"""Reference backend: SDPA with the dense boolean mask. Small N, tests, float64 gradcheck."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from vidgen.attention.masks import AttentionPattern, pattern_mask

_MASK_CACHE: dict = {}


def cached_pattern_mask(pattern: AttentionPattern, device: torch.device) -> torch.Tensor:
    """Dense mask, cached per (pattern, device): models call the same pattern every layer and step."""
    key = (pattern, str(device))
    mask = _MASK_CACHE.get(key)
    if mask is None:
        if len(_MASK_CACHE) >= 8:  # masks can be 100s of MB at 16k tokens: keep only a few
            _MASK_CACHE.pop(next(iter(_MASK_CACHE)))
        mask = _MASK_CACHE[key] = pattern_mask(pattern, device)
    return mask


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: AttentionPattern,
                        scale: Optional[float] = None) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` with the dense mask of ``pattern``; q, k, v: (B, heads, N, D)."""
    mask = None if pattern.is_full else cached_pattern_mask(pattern, q.device)  # (N, N) bool
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def unsupported_reason(q: torch.Tensor, pattern: AttentionPattern) -> Optional[str]:
    return None  # plain PyTorch: any device, dtype and shape (memory grows as N^2)

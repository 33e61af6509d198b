"""Reference backend: SDPA with the dense boolean mask. Small N, tests, float64 gradcheck."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from vidgen.attention.masks import AttentionPattern, pattern_mask

_MASK_CACHE: dict = {}
MASK_CACHE_BYTES = 1 << 30  # dense masks are N^2 bytes (268 MB at 16k tokens): bound what stays cached


def cached_pattern_mask(pattern: AttentionPattern, device: torch.device) -> torch.Tensor:
    """Dense mask, cached per (pattern, device): models call the same pattern every layer and step."""
    key = (pattern, str(device))
    mask = _MASK_CACHE.get(key)
    if mask is None:
        mask = pattern_mask(pattern, device)
        while _MASK_CACHE and sum(m.numel() for m in _MASK_CACHE.values()) + mask.numel() > MASK_CACHE_BYTES:
            _MASK_CACHE.pop(next(iter(_MASK_CACHE)))  # oldest first
        if mask.numel() <= MASK_CACHE_BYTES:
            _MASK_CACHE[key] = mask
    return mask


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: AttentionPattern,
                        scale: Optional[float] = None) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` with the dense mask of ``pattern``; q, k, v: (B, heads, N, D)."""
    mask = None if pattern.is_full else cached_pattern_mask(pattern, q.device)  # (N, N) bool
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def unsupported_reason(q: torch.Tensor, pattern: AttentionPattern) -> Optional[str]:
    return None  # plain PyTorch: any device, dtype and shape (memory grows as N^2)

"""Reference backend: SDPA with the dense boolean mask. Small N, tests, float64 gradcheck; the decode path."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from vidgen.attention.masks import AttentionPattern, last_allowed_key, pattern_mask, pattern_mask_rows

_MASK_CACHE: dict = {}
MASK_CACHE_BYTES = 1 << 30  # dense masks are N^2 bytes (268 MB at 16k tokens): bound what stays cached
_DECODE_MASKS: dict = {}  # (pattern, q_start, q_end, device) -> rows mask or None; every layer of a step reuses it
DECODE_MASK_ENTRIES = 8


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


def decode_mask(pattern: AttentionPattern, q_start: int, q_end: int, device) -> Optional[torch.Tensor]:
    """Rows ``[q_start, q_end)`` x columns ``[0, q_end)`` of the dense mask, or ``None`` when every key in
    ``[0, q_end)`` is allowed for every query (the common decode step: token-causal full attention).

    Fast path without building anything: with no window, each query's allowed keys are one contiguous run
    from position 0 (prefix, whole earlier frames, earlier tokens) up to :func:`last_allowed_key`, so the rows
    are all True iff every query's last allowed key is at least ``q_end - 1``.
    """
    if pattern.is_full:
        return None
    key = (pattern, q_start, q_end, str(device))
    if key in _DECODE_MASKS:
        return _DECODE_MASKS[key]
    rows = torch.arange(q_start, q_end)
    if all(r is None for r in pattern.radii) and bool((last_allowed_key(pattern, rows) >= q_end - 1).all()):
        mask = None
    else:
        idx = torch.arange(q_end, device=device)
        mask = pattern_mask_rows(pattern, idx[q_start:], idx)
    if len(_DECODE_MASKS) >= DECODE_MASK_ENTRIES:
        _DECODE_MASKS.pop(next(iter(_DECODE_MASKS)))
    _DECODE_MASKS[key] = mask
    return mask


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: AttentionPattern,
                        scale: Optional[float] = None, q_start: Optional[int] = None) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` with the dense mask of ``pattern``; q, k, v: (B, heads, N, D).

    Decode (``q_start`` an int): q holds positions ``[q_start, q_start + Lq)`` and k, v positions
    ``[0, q_start + Lq)``; the mask is the matching row/column slice (none when nothing is masked out).
    The caller (:func:`vidgen.attention.attention3d`) checks that the slice is exact.
    """
    if q_start is not None:
        mask = decode_mask(pattern, q_start, q_start + q.shape[2], q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if pattern.is_full:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if pattern.token_causal and pattern.num_prefix_tokens == 0 and all(r is None for r in pattern.radii):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)  # plain GPT causal mask
    return F.scaled_dot_product_attention(q, k, v, attn_mask=cached_pattern_mask(pattern, q.device), scale=scale)


def unsupported_reason(q: torch.Tensor, pattern: AttentionPattern) -> Optional[str]:
    return None  # plain PyTorch: any device, dtype and shape (memory grows as N^2)

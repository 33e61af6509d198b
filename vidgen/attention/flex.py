"""FlexAttention backend: ``torch.nn.attention.flex_attention`` with a BlockMask built from the 3D mask_mod.

Forward only on CPU (torch has no FlexAttention backward on CPU); with a backward on CUDA.
"""
from __future__ import annotations

from typing import Optional

import warnings

import torch

from vidgen.attention.masks import AttentionPattern, pattern_mask_mod

_BLOCK_MASKS: dict = {}
_COMPILED: dict = {}


def _flex_module():
    try:
        from torch.nn.attention import flex_attention as module
    except ImportError:
        return None
    return module


def unsupported_reason(q, k, v, pattern: AttentionPattern) -> Optional[str]:
    if _flex_module() is None:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention"
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        return f"FlexAttention does not support dtype {q.dtype}"
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    if q.device.type == "cpu" and needs_grad:
        return ("FlexAttention has no backward pass on CPU in this torch; use backend='cpu' (blocked attention, "
                "with backward) or call under torch.no_grad()")
    return None


def _block_mask(pattern: AttentionPattern, device):
    key = (pattern, str(device))
    if key not in _BLOCK_MASKS:
        if len(_BLOCK_MASKS) >= 8:
            _BLOCK_MASKS.pop(next(iter(_BLOCK_MASKS)))
        n = pattern.num_tokens
        _BLOCK_MASKS[key] = _flex_module().create_block_mask(
            pattern_mask_mod(pattern), B=None, H=None, Q_LEN=n, KV_LEN=n, device=device)
    return _BLOCK_MASKS[key]


def flex_attention3d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: AttentionPattern,
                     scale: Optional[float] = None) -> torch.Tensor:
    """q, k, v: (B, heads, N, D) -> (B, heads, N, D). Fully masked 128x128 blocks are skipped by the BlockMask.

    On CUDA the fused kernel comes from ``torch.compile(flex_attention)``. On CPU we run it eagerly: compiling
    costs ~15 s and compiled CPU flex only matches dense SDPA speed (use backend="cpu" for speed there).
    """
    module = _flex_module()
    block_mask = _block_mask(pattern, q.device)
    if q.device.type == "cuda":
        if "fn" not in _COMPILED:
            _COMPILED["fn"] = torch.compile(module.flex_attention, dynamic=False)
        return _COMPILED["fn"](q, k, v, block_mask=block_mask, scale=scale)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return module.flex_attention(q, k, v, block_mask=block_mask, scale=scale)

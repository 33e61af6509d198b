"""FlexAttention backend: ``torch.nn.attention.flex_attention`` with a BlockMask built from the 3D mask_mod.

Forward only on CPU (torch has no FlexAttention backward on CPU); with a backward on CUDA.
On CUDA the BlockMask is built a few query blocks at a time (:func:`chunked_block_mask`): ``create_block_mask``
evaluates the whole (N, N) mask at once, which does not fit in GPU memory at video sizes (N = 115,200 tokens is
1.3e10 pairs, each intermediate of the mask_mod an int64 tensor of that size).
"""
from __future__ import annotations

from typing import Optional

import warnings

import torch

from vidgen.attention.masks import AttentionPattern, pattern_mask_mod, pattern_mask_rows

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
        _BLOCK_MASKS[key] = chunked_block_mask(pattern, device) if torch.device(device).type == "cuda" else \
            _flex_module().create_block_mask(pattern_mask_mod(pattern), B=None, H=None, Q_LEN=n, KV_LEN=n,
                                             device=device)
    return _BLOCK_MASKS[key]


def chunked_block_mask(pattern: AttentionPattern, device, block: int = 128, max_elements: int = 1 << 25):
    """The BlockMask ``create_block_mask`` builds (partial and full ``block`` x ``block`` tiles, the same index
    order), from the exact mask evaluated a few query blocks at a time: at most ``max_elements`` pairs at once."""
    n = pattern.num_tokens
    num_blocks = -(-n // block)
    rows = block * max(1, max_elements // (block * num_blocks * block))  # query rows per chunk
    keys = torch.arange(n, device=device)
    partial, full = [], []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        mask = pattern_mask_rows(pattern, torch.arange(start, stop, device=device), keys)
        padded = mask.new_zeros(-(-(stop - start) // block) * block, num_blocks * block)  # padding: never allowed
        padded[:stop - start, :n] = mask
        count = padded.view(-1, block, num_blocks, block).sum(dim=(1, 3))
        full.append(count == block * block)
        partial.append((count > 0) & (count < block * block))
    ordered = [_ordered(torch.cat(tiles)[None, None]) for tiles in (partial, full)]
    return _flex_module().BlockMask.from_kv_blocks(*ordered[0], *ordered[1], BLOCK_SIZE=block,
                                                   mask_mod=pattern_mask_mod(pattern), seq_lengths=(n, n))


def _ordered(tiles: torch.Tensor):
    """(number of tiles, their column indices first) per row of a (1, 1, rows, cols) bool tile map."""
    tiles = tiles.to(torch.int32)
    order = torch.argsort(tiles, dim=-1, descending=True, stable=True)
    return tiles.sum(dim=-1).to(torch.int32), order.to(torch.int32)


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

"""Attention3D (self-attention over prefix + video tokens, optional 3D RoPE) and CrossAttention modules."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vidgen.attention.api import BACKENDS, attention3d, check_decode_call
from vidgen.attention.kv_cache import KVCache
from vidgen.attention.masks import Causal, make_pattern
from vidgen.attention.rope import RotaryEmbedding3D
from vidgen.errors import ConfigError, InvalidInputError


@dataclass
class Attention3DConfig:
    dim: int
    num_heads: int = 8
    window: Optional[Tuple[Optional[int], Optional[int], Optional[int]]] = None  # None = full attention
    causal: Causal = False  # True / "frame": own and earlier frames; "token": earlier tokens (GPT-style)
    rope: bool = True  # 3D rotary embedding over (t, h, w)
    rope_theta: float = 10000.0
    qkv_bias: bool = False
    qk_norm: bool = False  # RMS-normalise q and k per head (stabilises large models / low precision)
    backend: str = "auto"
    tile: Optional[Tuple[int, int, int]] = None  # tile-aligned windows: ``window`` counts tiles of this size (STA)

    def __post_init__(self):
        if self.dim <= 0 or self.num_heads <= 0 or self.dim % self.num_heads:
            raise ConfigError(f"dim ({self.dim}) must be a positive multiple of num_heads ({self.num_heads})")
        hd = self.dim // self.num_heads
        if self.rope and (hd % 2 or hd < 6):
            raise ConfigError(f"rope needs an even head dim >= 6 (dim / num_heads), got {hd}; or set rope=False")
        if not (isinstance(self.causal, bool) or self.causal in ("frame", "token")):
            raise ConfigError(f"causal must be False, True, 'frame' or 'token', got {self.causal!r}")
        if self.backend != "auto" and self.backend not in BACKENDS:  # fail at build time, not at the first step
            raise ConfigError(f"backend must be 'auto' or one of {BACKENDS}, got {self.backend!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return rearrange(x, "b n (h d) -> b h n d", h=heads)


class Attention3D(nn.Module):
    """Multi-head self-attention over ``num_prefix_tokens`` prefix tokens followed by a (T, H, W) token grid."""

    def __init__(self, config: Attention3DConfig):
        super().__init__()
        self.config = config
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=config.qkv_bias)
        self.proj = nn.Linear(config.dim, config.dim)
        hd = config.head_dim
        # nn.RMSNorm also under bf16 autocast, despite PyTorch's one-time dtype-mismatch warning: its composite path
        # (fp32 statistics) is the most exact form and the fastest when sampling (experiments/rms_norm_paths.py).
        self.q_norm = nn.RMSNorm(hd) if config.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(hd) if config.qk_norm else nn.Identity()
        self.rope = RotaryEmbedding3D(hd, config.rope_theta) if config.rope else None

    def forward(self, x: torch.Tensor, grid, num_prefix_tokens: int = 0, window="config",
                causal: Optional[Causal] = None, backend: Optional[str] = None, kv_cache: Optional[KVCache] = None,
                start: int = 0) -> torch.Tensor:
        """x: (B, N, dim) with N = num_prefix_tokens + T*H*W -> (B, N, dim).
        ``window``/``causal``/``backend`` override the config for this call (e.g. alternating blocks).

        With ``kv_cache`` (autoregressive decoding): x is (B, L, dim), the tokens at sequence positions
        ``[start, start + L)``. Their keys and values (after qk-norm and RoPE at those positions) are written
        into the cache at ``start``, and the queries attend over the cached positions ``[0, start + L)``:
        the result equals rows ``[start, start + L)`` of the uncached call on the whole sequence, provided
        the pattern allows it (``causal="token"``, or frame-causal chunks of whole frames; see
        :func:`vidgen.attention.attention3d`, ``q_start``).
        """
        cfg = self.config
        if x.dim() != 3 or x.shape[-1] != cfg.dim:
            raise InvalidInputError(f"x must have shape (B, N, {cfg.dim}), got {tuple(x.shape)}")
        window = cfg.window if window == "config" else window
        causal = cfg.causal if causal is None else causal
        pattern = make_pattern(grid, window, causal, num_prefix_tokens, cfg.tile if window is not None else None)
        if kv_cache is None and start != 0:
            raise InvalidInputError(f"start={start!r} needs a kv_cache (without one, x is the whole sequence)")
        if kv_cache is None and x.shape[1] != pattern.num_tokens:
            raise InvalidInputError(f"x has {x.shape[1]} tokens, expected num_prefix_tokens + T*H*W = "
                                    f"{pattern.num_tokens} for grid {tuple(grid)}")
        if kv_cache is not None:  # before anything is written into the cache
            check_decode_call(start, x.shape[1], start + x.shape[1], pattern, name="start")
        q, k, v = (_split_heads(t, cfg.num_heads) for t in self.qkv(x).chunk(3, dim=-1))  # (B, nh, L, hd)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = self.rope(q, k, pattern.grid, num_prefix_tokens, start)
        backend = backend or cfg.backend
        if kv_cache is None:
            out = attention3d(q, k, v, backend=backend, **pattern.as_kwargs())
        else:
            kv_cache.write(start, k, v)
            k_all, v_all = kv_cache.view(start + x.shape[1])
            out = attention3d(q, k_all, v_all, backend=backend, q_start=start, **pattern.as_kwargs())
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Queries from the video tokens, keys/values from context tokens (e.g. text), with an optional padding mask."""

    def __init__(self, dim: int, context_dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_norm: bool = False):
        super().__init__()
        if dim <= 0 or num_heads <= 0 or dim % num_heads:
            raise ConfigError(f"dim ({dim}) must be a positive multiple of num_heads ({num_heads})")
        self.dim, self.context_dim, self.num_heads = dim, context_dim, num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.RMSNorm(dim // num_heads) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(dim // num_heads) if qk_norm else nn.Identity()

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys (normalised) and values of ``context`` (B, M, context_dim), each (B, heads, M, head_dim): pass
        them as ``context`` to attend the same context again without projecting it (e.g. a prompt over a stream)."""
        k, v = (_split_heads(t, self.num_heads) for t in self.kv(context).chunk(2, dim=-1))
        return self.k_norm(k), v

    def forward(self, x: torch.Tensor, context, context_mask: Optional[torch.Tensor] = None):
        """x: (B, N, dim), context: (B, M, context_dim) or its :meth:`context_kv`, context_mask: (B, M) bool,
        True = real token."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise InvalidInputError(f"x must have shape (B, N, {self.dim}), got {tuple(x.shape)}")
        projected = isinstance(context, tuple)  # keys and values made by context_kv
        if not projected and (context.dim() != 3 or context.shape[0] != x.shape[0]
                              or context.shape[-1] != self.context_dim):
            raise InvalidInputError(f"context must have shape ({x.shape[0]}, M, {self.context_dim}), "
                                    f"got {tuple(context.shape)}")
        tokens = (context[0].shape[0], context[0].shape[2]) if projected else tuple(context.shape[:2])  # (B, M)
        attn_mask = None
        if context_mask is not None:
            if context_mask.shape != tokens or context_mask.dtype != torch.bool:
                raise InvalidInputError(f"context_mask must be bool of shape {tokens}, "
                                        f"got {context_mask.dtype} {tuple(context_mask.shape)}")
            if not bool(context_mask.any(dim=1).all()):
                raise InvalidInputError("context_mask must keep at least one context token per sample")
            attn_mask = context_mask[:, None, None, :]  # (B, 1, 1, M)
        q = self.q_norm(_split_heads(self.q(x), self.num_heads))
        k, v = context if projected else self.context_kv(context)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))

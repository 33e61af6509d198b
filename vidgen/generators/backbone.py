"""The video transformer every generator owns: adaLN-single blocks over prefix + (t, h, w) tokens.

Design (DiT / PixArt / Latte, with the choices that measurement or parameter counts made):

* **adaLN-single** (PixArt-alpha, Latte): one shared MLP maps the conditioning vector to 6 modulation vectors
  (shift / scale / gate for attention and MLP); each block only adds its own learned ``(6, dim)`` table. DiT's
  per-block adaLN MLP costs ``6 * dim^2`` parameters per block (about a third of DiT-XL); here it is paid once.
* **Zero-initialised residual branches** (DiT): the shared modulation MLP's output layer and every block's table
  start at zero, so every gate is zero and each block starts as the identity.
* **Attention through** :mod:`vidgen.attention` only (3D RoPE, qk-norm, full / Latte spatial-temporal / window /
  frame-causal layouts; the owner may make every block token-causal for autoregression).
* **Text** joins self-attention as ``max_text_tokens`` prefix tokens (default) or enters through per-block
  cross-attention; ``eval/bench_generators.py`` reports parameters and speed of both.
* **KV cache**: the caller owns a :class:`~vidgen.attention.kv_cache.ModelKVCache` and passes it with ``start``
  (the position of the first new token); the backbone never allocates or stores one.

The backbone has no notion of which generator owns it: heads, conditioning and masks belong to the owner.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from vidgen.attention import Attention3D, Attention3DConfig, CrossAttention
from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.generators.config import BackboneConfig
from vidgen.generators.routing import check_routing, routed_attention
from vidgen.parallel.ulysses import check_split, gather_tokens, split_tokens, ulysses_attention


def per_token(v: torch.Tensor) -> torch.Tensor:
    """A modulation vector (B, d), shared by the tokens, as (B, 1, d); a per-token one (B, N, d) as it is."""
    return v[:, None] if v.dim() == 2 else v


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x: (B, N, d); shift, scale: (B, d), or (B, N, d) per token."""
    return x * (1 + per_token(scale)) + per_token(shift)


class Block(nn.Module):
    """``x + gate * attn(modulate(norm(x)))`` [+ cross-attention] ``+ gate * mlp(modulate(norm(x)))``."""

    def __init__(self, cfg: BackboneConfig, index: int, causal):
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention3D(Attention3DConfig(d, cfg.num_heads, window=cfg.block_window(index),
                                                  causal=cfg.block_causal(causal), rope=True, qk_norm=cfg.qk_norm,
                                                  backend=cfg.attention_backend))
        self.cross = None
        if cfg.text_dim and cfg.text_conditioning == "cross":
            self.norm_cross = nn.LayerNorm(d, eps=1e-6)
            self.cross = CrossAttention(d, d, cfg.num_heads, qk_norm=cfg.qk_norm)
            nn.init.zeros_(self.cross.proj.weight)
            nn.init.zeros_(self.cross.proj.bias)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.table = nn.Parameter(torch.zeros(6, d))  # this block's offset to the shared modulation

    def forward(self, x, mod, grid, num_prefix_tokens: int, context=None, kv_cache=None, start: int = 0,
                attend=None, sp=None):
        """x: (B, N, d); mod: (B, 6, d) shared modulation, or (B, N, 6, d) per token; context: (B, M, d) text tokens
        for cross-attention, or this block's ``CrossAttention.context_kv`` of them; ``attend(attn, y)``: the owner's
        own call of this block's attention module; ``sp``: a :class:`vidgen.parallel.SequenceParallel` when ``x`` is
        this rank's chunk of the sequence (Ulysses attention), None for the whole sequence."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (mod + self.table).unbind(-2)  # each (B, [N,] d)
        y = modulate(self.norm1(x), shift_a, scale_a)
        if attend is not None:
            h = attend(self.attn, y)
        elif sp is None:
            h = self.attn(y, grid, num_prefix_tokens, kv_cache=kv_cache, start=start)
        else:  # all-to-all to a head split, the same attention on the whole sequence, all-to-all back
            h = ulysses_attention(self.attn, y, grid, num_prefix_tokens, sp)
        x = x + per_token(gate_a) * h
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), context)
        return x + per_token(gate_m) * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class VideoTransformerBackbone(nn.Module):
    """Blocks over ``[prefix tokens] + video tokens``; returns the video tokens' final features (B, Nv, d).

    ``causal``: ``False`` (the layout decides), ``"frame"`` or ``"token"`` (set by the owning generator).
    """

    gradient_checkpointing = False

    def __init__(self, cfg: BackboneConfig, causal=False):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.blocks = nn.ModuleList(Block(cfg, i, causal) for i in range(cfg.depth))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))  # adaLN-single: shared by all blocks
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        nn.init.zeros_(self.final_modulation[1].weight)
        nn.init.zeros_(self.final_modulation[1].bias)

    def check_grid(self, grid) -> None:
        limit = self.cfg.max_grid
        if any(g > m for g, m in zip(grid, limit)):
            raise InvalidInputError(f"token grid {tuple(grid)} exceeds this model's max_grid {limit} (the extent it "
                                    "was built and trained for); use fewer frames / a smaller size, or a model with a "
                                    "larger max_grid")

    def forward(self, x: torch.Tensor, grid, cond: torch.Tensor, prefix: Optional[torch.Tensor] = None,
                num_prefix_tokens: Optional[int] = None, context: Optional[torch.Tensor] = None,
                kv_cache=None, start: int = 0, attend=None, sp=None, route=None) -> torch.Tensor:
        """x: (B, L, d) video tokens; cond: (B, d) adaLN vector, or (B, L, d) per video token (no prefix then);
        prefix: (B, P, d) tokens placed before x; context: (B, M, d) cross-attention tokens, or per block its
        ``CrossAttention.context_kv`` (a list: the keys and values projected once); ``attend(i, attn, y)``: the
        owner's own attention call in block ``i`` (a causal owner's chunked attention), instead of the block's.

        Without a cache, ``L == t*h*w``. With ``kv_cache`` (a ``ModelKVCache``), the tokens passed (prefix + x)
        sit at sequence positions ``[start, start + P + L)`` and attend the cached past; ``num_prefix_tokens``
        is then the prefix length of the whole sequence (default: ``prefix.shape[1]`` or 0).

        ``sp``: a :class:`vidgen.parallel.SequenceParallel` (every rank of its group calls with the same inputs): each
        rank runs the blocks on its chunk of the tokens (Ulysses attention) and the chunks are gathered after the last
        block, so every rank returns the whole output. None (default): the whole sequence on this process.

        ``route``: a :class:`vidgen.generators.routing.TokenRoute` (training only): blocks ``[route.start, route.end)``
        see the prefix tokens and the video tokens ``route.keep`` alone, at their grid positions; the other video
        tokens skip those blocks and rejoin after them. None (default): every token goes through every block.
        """
        if attend is None:  # an owner's own attention bounds its positions and checks its grid itself
            self.check_grid(grid)
        p_seq = num_prefix_tokens if num_prefix_tokens is not None else (prefix.shape[1] if prefix is not None else 0)
        p_in = prefix.shape[1] if prefix is not None else 0
        tokens = torch.cat([prefix.to(x.dtype), x], dim=1) if p_in else x  # (B, P + L, d)
        if cond.dim() == 3 and p_in:
            raise UnsupportedError("a per-token adaLN vector covers the video tokens only: pass the text through "
                                   "cross-attention (text_conditioning='cross'), not as prefix tokens")
        mod = self.modulation(cond).unflatten(-1, (6, -1))  # (B, [L,] 6, d)
        n = tokens.shape[1]
        if route is not None:
            check_routing(self, route, sp, kv_cache, attend)
        if sp is not None:
            check_split(sp, self.cfg.num_heads, kv_cache, attend)
            tokens = split_tokens(tokens, sp)
        full, block_mod = None, mod
        for i, block in enumerate(self.blocks):
            layer_cache = None if kv_cache is None else kv_cache.layers[i]
            ctx = context[i] if isinstance(context, list) else context  # a list: each block's context_kv
            block_attend = None if attend is None else (lambda attn, y, i=i: attend(i, attn, y))
            if route is not None and i == route.start:  # the routed tokens wait in `full` until the span ends
                full, tokens = tokens, route.gather(tokens, p_in)
                block_mod = route.gather(mod, 0) if mod.dim() == 4 else mod
            if full is not None:
                block_attend = lambda attn, y: routed_attention(attn, y, grid, p_seq, route.keep)  # noqa: E731
            if self.gradient_checkpointing and torch.is_grad_enabled() and kv_cache is None:
                tokens = self._gradient_checkpointing_func(block, tokens, block_mod, grid, p_seq, ctx, None, 0,
                                                           block_attend, sp)
            else:
                tokens = block(tokens, block_mod, grid, p_seq, ctx, layer_cache, start, block_attend, sp)
            if full is not None and i == route.end - 1:
                tokens, full, block_mod = route.scatter(full, tokens, p_in), None, mod
        if sp is not None:
            tokens = gather_tokens(tokens, n, sp)
        shift, scale = self.final_modulation(cond).chunk(2, dim=-1)
        return modulate(self.final_norm(tokens[:, p_in:]), shift, scale)

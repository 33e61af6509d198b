"""The autoregressive decode step without per-token Python overhead (gpt-fast's ``decode_one_token``).

The generic path (``model.forward_tokens`` with a :class:`~vidgen.attention.kv_cache.ModelKVCache`) validates and
rebuilds per token and per layer what does not change during a generation: the attention pattern and its decode
check, the mask slice, RoPE's cos / sin slices, the shared adaLN modulation (a function of the condition only), the
cache's shape / dtype checks: about half of a generic decode step is that overhead
(``eval/bench_generators.py``, "ar decode step"). :class:`KVDecodeStep` does all of it once per generation window:

* per block: the modulation vectors (``modulation(vec) + table``), and, for patterns where some earlier key is
  masked out (windows, Latte's spatial / temporal blocks), the dense ``(N, N)`` mask of the pattern (one per distinct
  pattern; 2336^2 bytes = 5.5 MB at 9x16x16 + 16 prefix tokens);
* RoPE cos / sin for every sequence position from fp32 angles (prefix positions: the identity), cast once to the
  compute dtype, exactly what :func:`vidgen.attention.rope.apply_rope` computes per call;
* the final modulation.

:meth:`KVDecodeStep.step` then writes one token's keys / values into the cache tensors in place and attends the
cached prefix ``[0, pos]`` with SDPA on 4-D q / k / v (the layout the CPU flash kernel takes). ``static=True``
attends all ``max_tokens`` positions with the pattern's mask row instead (masked future keys): every call then has
the same shapes, which is what ``torch.compile`` needs to compile the step once (``compile=True`` in
:func:`vidgen.generators.generate_tokens`). The generic path stays the reference: the prefill runs through it, and
the tests compare the tokens of both paths with the uncached whole-sequence path.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from vidgen.attention.masks import make_pattern, pattern_mask
from vidgen.attention.rope import rope3d_angles
from vidgen.generators.backbone import modulate


def _needs_mask(pattern) -> bool:
    """True unless a token-causal decode query may attend every earlier key (no window restricts it)."""
    return any(r is not None for r in pattern.radii)


def rope_tables(grid, head_dim: int, theta: float, num_prefix_tokens: int, dtype, device):
    """(cos, sin) of shape (P + T*H*W, head_dim // 2) in ``dtype``: angles in fp32 (as ``apply_rope``), the
    identity rotation (cos 1, sin 0) at prefix positions."""
    angles = rope3d_angles(grid, head_dim, theta, device)  # fp32
    pad = angles.new_zeros(num_prefix_tokens, angles.shape[1])
    angles = torch.cat([pad, angles])
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, heads, 1, D) rotated by cos / sin (D // 2,): rotate-half pairing, as ``apply_rope``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class KVDecodeStep:
    """One-token decode steps for one generation window; built after the prefill, from the same inputs.

    ``vec``: the adaLN vector (rows, d); ``context``: cross-attention context or None; ``cache``: the
    :class:`ModelKVCache` the prefill filled (its tensors are written in place). ``dtype``: the compute dtype
    (autocast's when on, else the weights'); the caller runs :meth:`step` under the same autocast state.
    """

    def __init__(self, model, grid, vec: torch.Tensor, context: Optional[torch.Tensor], cache, dtype,
                 static: bool = False):
        backbone, cfg = model.backbone, model.backbone_config
        self.model, self.cache, self.static, self.context = model, cache, static, context
        p = model.num_prefix_tokens
        self.num_tokens = p + grid[0] * grid[1] * grid[2]
        dev = vec.device
        with torch.no_grad():
            mod = backbone.modulation(vec).unflatten(1, (6, -1))  # (rows, 6, d), constant over the generation
            self.block_mod = [tuple(m.to(dtype) for m in (mod + blk.table[None]).unbind(1)) for blk in backbone.blocks]
            shift, scale = backbone.final_modulation(vec).chunk(2, dim=1)
            self.final_mod = (shift.to(dtype), scale.to(dtype))
        masks = {}
        self.masks = []
        for blk in backbone.blocks:
            acfg = blk.attn.config
            pattern = make_pattern(grid, acfg.window, acfg.causal, p)
            if static or _needs_mask(pattern):
                if pattern not in masks:
                    masks[pattern] = pattern_mask(pattern, dev)  # (N, N) bool; token-causal rows hide the future
                self.masks.append(masks[pattern])
            else:
                self.masks.append(None)
        theta = backbone.blocks[0].attn.config.rope_theta
        self.cos, self.sin = rope_tables(grid, cfg.head_dim, theta, p, dtype, dev)
        self.heads = cfg.num_heads

    def step(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """The input ``token`` at sequence position ``pos``: its id (rows,) -> logits (rows, vocab) in fp32, or its
        patch's ids (rows, P) -> (rows, P, vocab). Writes the step's keys / values at ``pos`` in every layer's cache;
        positions before ``pos`` must be there."""
        model, heads = self.model, self.heads
        x = model.embed_tokens(token[:, None])  # (rows, 1, d)
        static = self.static
        if static:  # pos: a 0-d tensor; index with a 1-element tensor (a 0-d index would read a Python scalar)
            idx = pos.reshape(1)
            cos, sin = self.cos[idx], self.sin[idx]
        else:
            cos, sin = self.cos[pos], self.sin[pos]
        for blk, (sa, ca, ga, sm, cm, gm), layer, mask in zip(model.backbone.blocks, self.block_mod,
                                                              self.cache.layers, self.masks):
            attn = blk.attn
            q, k, v = attn.qkv(modulate(blk.norm1(x), sa, ca)).unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)
            q, k = _rotate(attn.q_norm(q), cos, sin), _rotate(attn.k_norm(k), cos, sin)  # (rows, heads, 1, hd)
            if static:  # every position, future ones masked out by the token-causal row
                layer.k.index_copy_(2, idx, k.to(layer.k.dtype))
                layer.v.index_copy_(2, idx, v.to(layer.v.dtype))
                k_all, v_all, m = layer.k, layer.v, mask[idx]
            else:
                layer.k[:, :, pos] = k[:, :, 0]
                layer.v[:, :, pos] = v[:, :, 0]
                k_all, v_all = layer.k[:, :, :pos + 1], layer.v[:, :, :pos + 1]
                m = None if mask is None else mask[pos][None, :pos + 1]  # (1, L): CPU SDPA wants a 2-D+ mask
            out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=m)
            x = x + ga[:, None] * attn.proj(out.transpose(1, 2).flatten(2))
            if blk.cross is not None:
                x = x + blk.cross(blk.norm_cross(x), self.context)
            x = x + gm[:, None] * blk.mlp(modulate(blk.norm2(x), sm, cm))
        out = modulate(model.backbone.final_norm(x), *self.final_mod)
        logits = model.head(out)[:, 0].float()
        return logits.unflatten(-1, (model.patch.size, -1)) if token.dim() == 2 else logits

    def advance(self, pos: int) -> None:
        """Bookkeeping after :meth:`step` at ``pos`` (kept out of the step so a compiled step has no side effects
        on Python objects)."""
        for layer in self.cache.layers:
            layer.length = pos + 1
        self.cache.length = pos + 1

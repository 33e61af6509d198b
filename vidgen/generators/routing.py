"""Token routing in training (TREAD, arXiv 2501.04765): a random subset of each clip's video tokens skips a span of
the backbone's blocks and rejoins the others after it.

:func:`draw_route` picks, per sample, the video tokens that go through blocks ``[start, end)`` (the others are routed
around them) from the step's row generator; :class:`TokenRoute` carries that choice into
:meth:`VideoTransformerBackbone.forward`, which gathers the kept tokens (and every prefix token) before the span and
scatters them back after it, so a routed token leaves the span as it entered. Inside the span the kept tokens attend
one another with their own (t, h, w) positions (:func:`routed_attention`: RoPE at the true grid positions, full
attention). The settings are :class:`vidgen.training.routing.RoutingConfig` (any object with ``ratio``, ``start``,
``end`` and ``span(depth)``).

Supported: full attention in the routed blocks (``layout: full``), prefix tokens (always kept), cross-attention,
per-token adaLN vectors, gradient checkpointing. Refused by name (:func:`check_routing`): windowed, spatio-temporal or
causal attention inside the span, sequence parallelism, KV caches and an owner's own attention call.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from vidgen.attention import attention3d
from vidgen.errors import UnsupportedError


@dataclass
class TokenRoute:
    """``keep``: (B, K) indices (ascending) of the video tokens that go through blocks ``[start, end)``."""

    keep: torch.Tensor
    start: int
    end: int

    def gather(self, tokens: torch.Tensor, num_prefix: int) -> torch.Tensor:
        """The prefix tokens and the kept video tokens of ``tokens`` (B, P + L, ...)."""
        index = self.keep + num_prefix
        index = index.reshape(*index.shape, *([1] * (tokens.dim() - 2))).expand(-1, -1, *tokens.shape[2:])
        kept = tokens.gather(1, index)
        return torch.cat([tokens[:, :num_prefix], kept], dim=1) if num_prefix else kept

    def scatter(self, full: torch.Tensor, kept: torch.Tensor, num_prefix: int) -> torch.Tensor:
        """``full`` (B, P + L, d) with its prefix and kept video tokens replaced by ``kept`` (B, P + K, d), in the
        wider of their dtypes (under autocast the tokens entering the span can be bf16 and those leaving it fp32)."""
        dtype = torch.promote_types(full.dtype, kept.dtype)
        full, kept = full.to(dtype), kept.to(dtype)
        index = (self.keep + num_prefix)[..., None].expand(-1, -1, full.shape[-1])
        out = full.scatter(1, index, kept[:, num_prefix:])
        return torch.cat([kept[:, :num_prefix], out[:, num_prefix:]], dim=1) if num_prefix else out


def draw_route(routing, rows, batch: int, num_video: int, depth: int, device=None) -> TokenRoute | None:
    """The tokens each of ``batch`` samples keeps in the routed span, drawn from ``rows`` (a
    :class:`~vidgen.rng.RowGenerator`: the step's seeded draws); None when ``routing`` is off or routes no token."""
    if routing is None or not routing.ratio:
        return None
    start, end = routing.span(depth)
    routed = int(routing.ratio * num_video)
    if routed == 0:
        return None
    order = rows.rand(batch, num_video).argsort(dim=1)
    keep = order[:, :num_video - routed].sort(dim=1).values
    return TokenRoute(keep.to(device), start, end)


def check_routing(backbone, route, sp=None, kv_cache=None, attend=None) -> None:
    """Refuse (``UnsupportedError``, naming the setting and the fix) a routed call the backbone cannot make."""
    if sp is not None:
        raise UnsupportedError("routing.ratio > 0 with sequence parallelism (sp_size > 1): the routed tokens of a clip "
                               "would have to be split over the group; set routing.ratio=0 or sp_size=1")
    if kv_cache is not None or attend is not None:
        raise UnsupportedError("token routing is a training-time option of a whole-sequence forward: a KV cache or an "
                               "owner's own attention call (a causal generator) cannot be routed; set routing.ratio=0")
    for i in range(route.start, route.end):
        cfg = backbone.blocks[i].attn.config
        if cfg.window is not None or cfg.causal:
            raise UnsupportedError(
                f"routing: block {i} of the routed span [{route.start}, {route.end}) attends with "
                f"layout={backbone.cfg.layout!r} ({'causal' if cfg.causal else f'window {cfg.window}'}); token routing "
                "needs full attention in the routed blocks (the kept tokens no longer form a grid): set "
                "model.overrides.layout=full, or routing.ratio=0")


def _rotate(x: torch.Tensor, angles: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Rotate the video tokens of x (B, heads, P + K, D) by per-sample angles (B, K, D // 2), as
    :func:`vidgen.attention.rope.apply_rope` does for a whole grid."""
    prefix, video = x[:, :, :num_prefix], x[:, :, num_prefix:]
    cos, sin = angles.cos().to(x.dtype)[:, None], angles.sin().to(x.dtype)[:, None]
    x1, x2 = video.chunk(2, dim=-1)
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([prefix, rotated], dim=2) if num_prefix else rotated


def routed_attention(attn, y: torch.Tensor, grid, num_prefix: int, keep: torch.Tensor) -> torch.Tensor:
    """``attn`` (an :class:`~vidgen.attention.Attention3D` with full attention) over the prefix tokens and the kept
    video tokens ``y`` (B, P + K, d), the video tokens at their grid positions ``keep`` (B, K)."""
    cfg = attn.config
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=cfg.num_heads) for t in attn.qkv(y).chunk(3, dim=-1))
    q, k = attn.q_norm(q), attn.k_norm(k)
    if attn.rope is not None:
        angles = attn.rope.angles(grid, y.device)[keep]  # (B, K, D // 2)
        q, k = _rotate(q, angles, num_prefix), _rotate(k, angles, num_prefix)
    out = attention3d(q, k, v, grid=(1, 1, keep.shape[1]), num_prefix_tokens=num_prefix, backend=cfg.backend)
    return attn.proj(rearrange(out, "b h n d -> b n (h d)"))

"""3D (video) attention: one API over several backends, masks, and the Attention3D module.

``attention3d(q, k, v, grid=(T, H, W), window=None, causal=False, num_prefix_tokens=0, backend="auto",
q_start=None)``; ``causal`` in {False, True / "frame", "token"}; ``q_start`` = decode against a :class:`KVCache`.
Backends: ``reference`` (dense-mask SDPA), ``cpu`` (blocked neighbourhoods, fwd+bwd, any device),
``cpu_fused`` (a C window kernel compiled on first use: keys read in place, fwd+bwd, float32 or bf16 stored with
float32 sums, no prefix tokens),
``flex`` (FlexAttention), ``triton`` (fused flash-style kernel; imported lazily).
"""
from vidgen.attention.api import BACKENDS, attention3d, backend_support, choose_backend
from vidgen.attention.kv_cache import KVCache, ModelKVCache
from vidgen.attention.masks import (
    AttentionPattern,
    attention_mask3d,
    causal_pattern,
    flex_mask_mod3d,
    full_pattern,
    make_pattern,
    spatial_pattern,
    temporal_pattern,
    window_pattern,
)
from vidgen.attention.module import Attention3D, Attention3DConfig, CrossAttention

__all__ = [
    "BACKENDS",
    "Attention3D",
    "Attention3DConfig",
    "AttentionPattern",
    "CrossAttention",
    "KVCache",
    "ModelKVCache",
    "attention3d",
    "attention_mask3d",
    "backend_support",
    "causal_pattern",
    "choose_backend",
    "flex_mask_mod3d",
    "full_pattern",
    "make_pattern",
    "spatial_pattern",
    "temporal_pattern",
    "window_pattern",
]

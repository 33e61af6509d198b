"""Tiny models shared by test files (each builds in milliseconds)."""
from __future__ import annotations

import torch

from vidgen.testing import perturb_weights


def causal_wan():
    """A 2-block diffusers Wan transformer (2 heads of 12, 4 latent channels, a rotary table of 32 frames) with
    perturbed weights, in eval mode: the block-causal tests' model."""
    from diffusers import WanTransformer3DModel
    torch.manual_seed(0)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
                                  out_channels=4, text_dim=8, freq_dim=32, ffn_dim=16, num_layers=2,
                                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    return perturb_weights(model, seed=1, scale=0.05).eval()

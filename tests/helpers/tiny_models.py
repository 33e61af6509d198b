"""Tiny models shared by test files (each builds in milliseconds)."""
from __future__ import annotations

import torch

from vidgen.testing import perturb_weights


def causal_wan(channels: int = 4, in_channels: int | None = None):
    """A 2-block diffusers Wan transformer (2 heads of 12, ``channels`` latent channels, a rotary table of 32 frames)
    with perturbed weights, in eval mode: the block-causal tests' model. ``in_channels``: more input channels (an
    image-to-video transformer's condition channels)."""
    from diffusers import WanTransformer3DModel
    torch.manual_seed(0)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                  in_channels=in_channels or channels, out_channels=channels, text_dim=8, freq_dim=32,
                                  ffn_dim=16, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                  rope_max_seq_len=32)
    return perturb_weights(model, seed=1, scale=0.05).eval()


def diffusers_student(pipeline_class, folder, final):
    """diffusers' own ``pipeline_class`` from the base ``folder`` with a distilled LoRA student of ``final`` loaded
    as its users load it: the adapter, and the student's scheduler."""
    import diffusers
    native = pipeline_class.from_pretrained(folder)
    native.set_progress_bar_config(disable=True)
    native.load_lora_weights(final)
    native.scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(final, subfolder="scheduler")
    return native


def live_tiny_vae(folder):
    """A tiny CausalVAE saved to ``folder`` with small random weights everywhere (its residual branches start at zero,
    which would make a training test's gradients vanish); returns the folder."""
    from vidgen.tokenizers import CausalVAE
    torch.manual_seed(0)
    model = CausalVAE.from_preset("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(folder)
    return folder

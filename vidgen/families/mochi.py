"""Mochi (``AutoencoderKLMochi``), VAE-only: per-channel latent statistics in the VAE's config."""
from __future__ import annotations

from vidgen.families.base import Family, VaeSpec

FAMILY = Family(
    name="mochi", vae="AutoencoderKLMochi",
    vae_spec=VaeSpec(stats="config",
                     width=lambda c: max(c.encoder_block_out_channels[0], c.decoder_block_out_channels[0])),
)

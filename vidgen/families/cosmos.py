"""Cosmos (``AutoencoderKLCosmos``), VAE-only: latent statistics per channel *and* latent frame in the VAE's config.
Its pipelines also scale by the scheduler's ``sigma_data``, a sampling-side factor that is not the VAE's and is not
applied by :class:`~vidgen.tokenizers.DiffusersVideoVAE`."""
from __future__ import annotations

from vidgen.families.base import Family, VaeSpec

FAMILY = Family(
    name="cosmos", vae="AutoencoderKLCosmos",
    vae_spec=VaeSpec(
        stats="config",
        width=lambda c: max(c.encoder_block_out_channels[0], c.decode_block_out_channels[0]) / c.patch_size ** 2,
        temporal=lambda v: v.config.temporal_compression_ratio, spatial=lambda v: v.config.spatial_compression_ratio),
)

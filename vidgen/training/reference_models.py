"""Anchor architectures made trainable by vidgen's tokenizer loop, for same-recipe comparisons.

``CogVideoXReferenceVAE`` is diffusers' ``AutoencoderKLCogVideoX`` with the two hooks the loop needs
(``reconstruct`` and ``last_decoder_layer``); everything else (save/load, encode/decode) is diffusers' own.
Use it through the config: ``model.kind: cogvideox`` (``model.overrides`` are constructor kwargs).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKLCogVideoX

from vidgen.errors import InvalidInputError
from vidgen.rng import rows
from vidgen.tokenizers.vae import BottleneckOutput, ReconstructionOutput

# Matched to vidgen's CausalVAE "base" preset: 4x8x8, 16 latent channels, widths (64, 128, 256, 256).
COGVIDEOX_MATCHED = dict(block_out_channels=(64, 128, 256, 256), latent_channels=16, temporal_compression_ratio=4)


class CogVideoXReferenceVAE(AutoencoderKLCogVideoX):
    """CogVideoX's causal VAE trained with vidgen's recipe (same KL weighting as :class:`vidgen.tokenizers.CausalVAE`)."""

    kl_weight: float = 1e-6

    def reconstruct(self, x: torch.Tensor, sample_posterior: bool = True, generator=None) -> ReconstructionOutput:
        t = x.shape[2]
        if (t - 1) % self.config.temporal_compression_ratio:
            # CogVideoX has no internal padding: say so instead of returning a different frame count.
            raise InvalidInputError(f"x has {t} frames; AutoencoderKLCogVideoX needs 1 + "
                                    f"{self.config.temporal_compression_ratio}k frames")
        post = self.encode(x).latent_dist
        # the same per-sample posterior noise as vidgen's VAE (diffusers' sampler takes only a torch.Generator)
        z = post.mean + post.std * rows(generator).randn(*post.mean.shape).to(post.mean) if sample_posterior \
            else post.mode()
        kl = post.kl().mean() / post.mean[0].numel()
        y = self.decode(z).sample
        if y.shape[2] != t:  # e.g. 5 frames -> 2 latents -> 8 frames: its upsamplers double even frame counts
            raise InvalidInputError(f"x has {t} frames but AutoencoderKLCogVideoX returns {y.shape[2]}; "
                                    "it reproduces 1 + 8k frames")
        logs = {"kl": kl.item(), "z_std": z.detach().std().item()}
        return ReconstructionOutput(y, BottleneckOutput(z, self.kl_weight * kl, logs))

    @property
    def last_decoder_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.conv.weight

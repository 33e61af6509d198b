"""Generators on one video-transformer backbone and one token interface.

* :class:`MaskedVideoTransformer` (MaskGIT / MAGVIT) on tokenizer ids, sampled by :func:`generate_ids`;
* :class:`DiffusionVideoTransformer` (latent flow matching / DDPM, DiT / Latte) on VAE latents,
  sampled by :func:`generate_latents` with any matching diffusers scheduler;
* :class:`AutoregressiveVideoTransformer` (GPT with a KV cache) on tokenizer ids, sampled by
  :func:`generate_tokens` / :func:`iter_frames`.

Each owns a :class:`VideoTransformerBackbone` and takes the tokenizer object itself
(``gen.encode_videos(tokenizer, video)`` / ``gen.decode_videos(tokenizer, x, T, H, W)``).
"""
from vidgen.errors import ConfigError
from vidgen.generators.autoregressive import AutoregressiveVideoTransformer, generate_tokens, iter_frames
from vidgen.generators.backbone import Block, VideoTransformerBackbone
from vidgen.generators.config import GENERATOR_PRESETS, LAYOUTS, BackboneConfig
from vidgen.generators.embeddings import Conditioning
from vidgen.generators.flow import DiffusionVideoTransformer, check_scheduler, generate_latents
from vidgen.generators.masked import MaskedVideoTransformer, generate_ids, make_scheduler

#: generator name (as in training configs) -> class
GENERATORS = {
    "masked": MaskedVideoTransformer,
    "diffusion": DiffusionVideoTransformer,
    "autoregressive": AutoregressiveVideoTransformer,
}


def generator_class(name: str):
    if name not in GENERATORS:
        raise ConfigError(f"generator={name!r} is unknown; choose from {sorted(GENERATORS)}")
    return GENERATORS[name]


__all__ = [
    "GENERATORS",
    "GENERATOR_PRESETS",
    "LAYOUTS",
    "AutoregressiveVideoTransformer",
    "BackboneConfig",
    "Block",
    "Conditioning",
    "DiffusionVideoTransformer",
    "MaskedVideoTransformer",
    "VideoTransformerBackbone",
    "check_scheduler",
    "generate_ids",
    "generate_latents",
    "generate_tokens",
    "generator_class",
    "iter_frames",
    "make_scheduler",
]

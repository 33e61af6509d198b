"""Generators on one video-transformer backbone and one token interface.

* :class:`MaskedVideoTransformer` (MaskGIT / MAGVIT) on tokenizer ids, sampled by :func:`generate_ids`;
* :class:`FlowVideoTransformer` (latent flow matching / DDPM, DiT / Latte) on VAE latents, sampled by
  :func:`generate_latents` with any matching diffusers scheduler;
* :class:`AutoregressiveVideoTransformer` (GPT with a KV cache) on tokenizer ids, sampled by
  :func:`generate_tokens` / :func:`iter_frames`;
* :class:`CausalFlowVideoTransformer` (block-causal flow over chunks of latent frames, a rolling KV cache) on VAE
  latents, streamed chunk by chunk by :func:`stream_latents`.

Each sampling function takes the model, the conditioning and the generator's sampling config
(:class:`MaskedSamplingConfig`, :class:`FlowSamplingConfig`, :class:`AutoregressiveSamplingConfig`,
:class:`CausalSamplingConfig`).

Each owns a :class:`VideoTransformerBackbone` and takes the tokenizer object itself
(``gen.encode_videos(tokenizer, video)`` / ``gen.decode_videos(tokenizer, x, T, H, W)``).
"""
import warnings

from vidgen.errors import ConfigError
from vidgen.generators.autoregressive import (AutoregressiveSamplingConfig, AutoregressiveVideoTransformer,
                                              generate_tokens, iter_frames)
from vidgen.generators.backbone import Block, VideoTransformerBackbone
from vidgen.generators.causal import CausalFlowVideoTransformer, CausalSamplingConfig
from vidgen.generators.causal_stream import stream_latents
from vidgen.generators.config import GENERATOR_PRESETS, LAYOUTS, BackboneConfig
from vidgen.generators.embeddings import Conditioning
from vidgen.generators.flow import FlowSamplingConfig, FlowVideoTransformer, check_scheduler, generate_latents
from vidgen.generators.masked import MaskedSamplingConfig, MaskedVideoTransformer, generate_ids, make_scheduler
from vidgen.generators.sampling_config import SAMPLING_CONFIG_NAME, SamplingConfig

#: generator name (training configs, CLI, demo, make_pretrained) -> class; one name per generator
GENERATORS = {
    "masked": MaskedVideoTransformer,
    "flow": FlowVideoTransformer,
    "autoregressive": AutoregressiveVideoTransformer,
    "causal": CausalFlowVideoTransformer,
}

#: former generator names still read from training configs, with a FutureWarning (DeprecationWarning is hidden
#: outside ``__main__``, and the reader of this one is whoever runs a config, not a developer)
DEPRECATED_GENERATOR_NAMES = {"diffusion": "flow"}
#: the vidgen version that stops reading the deprecated names
DEPRECATED_NAMES_REMOVED_IN = "0.3"


def generator_name(name: str, where: str = "generator") -> str:
    """The registry name for ``name``: itself, or the current name of a deprecated alias (with a warning naming
    the fix); ConfigError naming ``where`` and the choices if it is neither."""
    if name in DEPRECATED_GENERATOR_NAMES:
        new = DEPRECATED_GENERATOR_NAMES[name]
        warnings.warn(f"{where}={name!r} is deprecated, write {where}: {new} (the old name is removed in vidgen "
                      f"{DEPRECATED_NAMES_REMOVED_IN})", FutureWarning, stacklevel=3)
        return new
    if name not in GENERATORS:
        raise ConfigError(f"{where}={name!r} is unknown; choose from {sorted(GENERATORS)}")
    return name


def generator_class(name: str):
    """The generator class registered as ``name`` (a deprecated alias warns and still resolves)."""
    return GENERATORS[generator_name(name)]


def __getattr__(name: str):
    """The flow generator's former class name still resolves, with a FutureWarning."""
    if name == "DiffusionVideoTransformer":
        from vidgen.generators import flow
        return flow.DiffusionVideoTransformer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEPRECATED_GENERATOR_NAMES",
    "SAMPLING_CONFIG_NAME",
    "AutoregressiveSamplingConfig",
    "CausalSamplingConfig",
    "FlowSamplingConfig",
    "FlowVideoTransformer",
    "MaskedSamplingConfig",
    "SamplingConfig",
    "GENERATORS",
    "GENERATOR_PRESETS",
    "LAYOUTS",
    "AutoregressiveVideoTransformer",
    "BackboneConfig",
    "Block",
    "CausalFlowVideoTransformer",
    "Conditioning",
    "MaskedVideoTransformer",
    "VideoTransformerBackbone",
    "check_scheduler",
    "generate_ids",
    "generate_latents",
    "generate_tokens",
    "generator_class",
    "generator_name",
    "iter_frames",
    "make_scheduler",
    "stream_latents",
]

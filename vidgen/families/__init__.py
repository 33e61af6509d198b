"""Real-model families as adapter files: one module per diffusers family (``wan.py``, ``cogvideox.py``, ``ltx.py``,
``hunyuan_video.py``, ``mochi.py``; ``cosmos.py`` VAE-only), each one :class:`Family` object holding all that is
specific to it: the latent layout and model call, timesteps, guidance, scheduler step, prompt encoding, defaults,
window-attention processor, LoRA targets, caption rules, tiny test components, the VAE's latent statistics and the
features it refuses. The rest of vidgen finds a family through :mod:`vidgen.families.registry`."""
from vidgen.families.base import DEFAULT_TARGET_MODULES, Family, PromptEmbeddings, VaeSpec, WindowProcessor
from vidgen.families.registry import (DIFFUSERS_VIDEO_VAES, FAMILIES, PIPELINE_FAMILIES, family_named,
                                      folder_family, pipeline_family, transformer_family, vae_family)

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "DIFFUSERS_VIDEO_VAES",
    "FAMILIES",
    "PIPELINE_FAMILIES",
    "Family",
    "PromptEmbeddings",
    "VaeSpec",
    "WindowProcessor",
    "family_named",
    "folder_family",
    "pipeline_family",
    "transformer_family",
    "vae_family",
]

"""Tiny random diffusers video pipelines, one per family of :mod:`vidgen.families` that has tiny components, built
offline the way diffusers' own pipeline tests size them: a few layers of a few channels, random weights, small text
encoders, and the offline MiniLM tokenizer standing in for the family's. For tests, ``--quick`` benchmarks and
examples; never for results.

    native = tiny_native_pipeline(family.name)    # the family's diffusers pipeline (for Wan, a WanPipeline)
    native.save_pretrained(folder)                # a folder load_pipeline() and that class both read
"""
from __future__ import annotations

from typing import Optional

import torch

from vidgen.errors import InvalidInputError
from vidgen.families import FAMILIES, family_named

#: the families with a tiny test pipeline
TINY_FAMILIES = tuple(f.name for f in FAMILIES if f.tiny_size is not None)
#: a (num_frames, height, width) each tiny family samples quickly and decodes exactly
TINY_SIZES = {f.name: f.tiny_size for f in FAMILIES if f.tiny_size is not None}


def tiny_components(family: str, seed: int = 0) -> dict:
    """The components of a tiny ``family`` pipeline (one of :data:`TINY_FAMILIES`), seeded (the global random state
    is left as it was)."""
    if family not in TINY_FAMILIES:
        raise InvalidInputError(f"family must be one of {TINY_FAMILIES}, got {family!r}")
    with torch.random.fork_rng():
        return family_named(family).tiny_components(_tokenizer(), seed)


def _tokenizer():
    """The offline MiniLM tokenizer the tiny pipelines use."""
    from transformers import AutoTokenizer

    from vidgen.text import default_text_encoder_path
    return AutoTokenizer.from_pretrained(str(default_text_encoder_path()))


def tiny_native_pipeline(family: str, seed: int = 0, pipeline_class: Optional[str] = None,
                         variant: Optional[str] = None):
    """A tiny diffusers pipeline of ``family`` (its own class: ``WanPipeline``, ...) with random weights;
    ``pipeline_class``: one of its conditioned classes instead (``Family.conditioned``), in the model ``variant``
    the family names (``Family.tiny_conditioned_components``)."""
    import diffusers
    if pipeline_class is None or pipeline_class == family_named(family).pipeline:
        parts = tiny_components(family, seed)
    elif family not in TINY_FAMILIES:
        raise InvalidInputError(f"family must be one of {TINY_FAMILIES}, got {family!r}")
    else:
        with torch.random.fork_rng():
            parts = family_named(family).tiny_conditioned_components(pipeline_class, _tokenizer(), seed, variant)
    pipe = getattr(diffusers, pipeline_class or family_named(family).pipeline)(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe

"""The diffusers pipeline classes :class:`~vidgen.pipelines.DiffusersVideoPipeline` loads, samples and saves: each
family's text-to-video class and its conditioned classes (``Family.conditioned``: image-to-video, first-last-frame,
video-to-video), their ``__call__`` defaults, the folder test, and the arguments no family serves."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from vidgen.errors import UnsupportedError
from vidgen.families import PIPELINE_FAMILIES

#: diffusers pipeline class -> (default sampling settings, default (num_frames, height, width)), for every class of
#: every family (its text-to-video class and its conditioned ones)
NATIVE_PIPELINES = {name: (f.pipeline_class(name).sampling_defaults, f.pipeline_class(name).default_size)
                    for f in PIPELINE_FAMILIES for name in (f.pipeline, *f.conditioned)}
#: __call__ arguments of vidgen's other pipelines that no diffusers family here can serve, and why (each family adds
#: its own refusals: ``Family.refused``, ``Family.call_options``)
REFUSED = {
    "class_labels": "the model is text-conditioned only",
    "conditioning_frames": "the family's pipelines take no given latent frames; an image-to-video pipeline folder of "
                           "the family takes image=",
    "conditioning_latent_indices": "the family's pipelines take no given latent frames",
    "context_frames": "stories and long videos need a causal stream decoder and a conditioning path",
    "guidance_interval": "the family guides every step as its diffusers pipeline does",
}


def native_class_name(folder) -> Optional[str]:
    """The diffusers pipeline class a folder's ``model_index.json`` names, if it is one of
    :data:`NATIVE_PIPELINES`."""
    index = Path(folder) / "model_index.json"
    try:
        name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if name in NATIVE_PIPELINES else None


def family_inputs(family) -> dict:
    """``{class name: the condition inputs it takes}`` for each pipeline class of ``family``."""
    return {name: family.pipeline_class(name).inputs for name in (family.pipeline, *family.conditioned)}


def check_class_options(pipeline_class: str, spec, given: dict) -> None:
    """Refuse, by name, the family's call options (given) that the loaded class does not take."""
    bad = sorted(k for k in given if k not in spec.call_options)
    if bad:
        raise UnsupportedError(f"{', '.join(bad)}: not available for {pipeline_class} (it takes "
                               f"{list(spec.call_options) or 'none of the family options'})")

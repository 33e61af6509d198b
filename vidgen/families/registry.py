"""The families vidgen knows, and the lookups the generic code goes through: by name, by diffusers pipeline class
name, by transformer or VAE instance (its class or any base class, so subclasses match)."""
from __future__ import annotations

from typing import Optional

from vidgen.families import cogvideox, cosmos, hunyuan_video, ltx, mochi, wan
from vidgen.families.base import Family

#: every family, one module of this package each (VAE-only ones last; the order is that of error messages)
FAMILIES: tuple[Family, ...] = tuple(m.FAMILY for m in (cogvideox, wan, ltx, hunyuan_video, mochi, cosmos))
#: the families with a text-to-video pipeline vidgen samples, trains and saves
PIPELINE_FAMILIES: tuple[Family, ...] = tuple(f for f in FAMILIES if f.pipeline and f.transformer)
#: the diffusers VAE classes :class:`~vidgen.tokenizers.DiffusersVideoVAE` wraps (subclasses included)
DIFFUSERS_VIDEO_VAES: tuple[str, ...] = tuple(f.vae for f in FAMILIES if f.vae_spec is not None)


def folder_family(folder) -> Optional[Family]:
    """The family of a diffusers pipeline folder (its ``model_index.json``'s ``_class_name``), else None (no such
    file, not JSON, or another pipeline): the one test of "is this a real-model folder" that loading, fine-tuning,
    distillation and caption encoding make."""
    import json
    from pathlib import Path
    try:
        return pipeline_family(json.loads((Path(folder) / "model_index.json").read_text()).get("_class_name"))
    except (OSError, ValueError, AttributeError):
        return None


def family_named(name) -> Optional[Family]:
    """The family called ``name`` (``"wan"``, ...), else None."""
    return next((f for f in FAMILIES if f.name == name), None)


def pipeline_family(class_name) -> Optional[Family]:
    """The family of a diffusers pipeline class name (``model_index.json``'s ``_class_name``: the family's
    text-to-video class or one of its conditioned classes, ``Family.conditioned``), else None."""
    return next((f for f in PIPELINE_FAMILIES if f.pipeline == class_name or class_name in f.conditioned), None)


def _by_class(obj, attribute: str) -> Optional[Family]:
    for cls in type(obj).__mro__:
        family = next((f for f in FAMILIES if getattr(f, attribute) == cls.__name__), None)
        if family is not None:
            return family
    return None


def transformer_family(model) -> Optional[Family]:
    """The family of a diffusers transformer (or of a subclass), else None."""
    family = _by_class(model, "transformer")
    return family if family is not None and family.pipeline else None


def vae_family(vae) -> Optional[Family]:
    """The family of a diffusers video VAE (or of a subclass) whose :class:`~vidgen.families.base.VaeSpec` vidgen
    has, else None."""
    family = _by_class(vae, "vae")
    return family if family is not None and family.vae_spec is not None else None

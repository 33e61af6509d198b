"""One ``__call__`` of a video pipeline as a typed, frozen object: each pipeline's ``__call__`` builds its call once
from its arguments and hands it to the recipe (:meth:`~vidgen.pipelines.VideoPipelineBase._recipe`), which reads it
top to bottom; nothing downstream changes it (a step that needs a different value makes a new one with
:func:`dataclasses.replace`).

The classes nest as the pipelines' arguments do: :class:`VideoCall` holds what every pipeline takes (the condition
inputs ``image`` / ``last_image`` / ``video`` / ``strength`` too, refused by name where a pipeline has no such
path), :class:`TextToVideoCall` adds starting latents, prompt embeddings and decode chunking,
:class:`ConditionedCall` the class labels, conditioning frames and story context of vidgen's own generators.
``settings`` holds the sampling settings the call gave (:data:`~vidgen.generators.sampling_config.UNSET` where it
left one to the folder's ``sampling_config``); each pipeline names its own in its ``__call__``.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from vidgen.errors import UnknownArgumentError
from vidgen.generators.sampling_config import UNSET
from vidgen.rng import check_generator


@dataclass(frozen=True)
class VideoCall:
    """The arguments every video pipeline's ``__call__`` takes."""

    prompt: Any = None
    negative_prompt: Any = None
    num_frames: Optional[int] = 17
    height: Optional[int] = 64
    width: Optional[int] = 64
    num_videos_per_prompt: int = 1
    generator: Any = None
    output_type: str = "np"
    return_dict: bool = True
    callback_on_step_end: Optional[Callable] = None
    callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",)
    sp_size: int = 1
    settings: Mapping[str, Any] = field(default_factory=dict)  # the sampling settings given (UNSET: the folder's)
    # the condition inputs, with diffusers' names (vidgen.pipelines.conditions): taken by the conditioned classes of
    # a diffusers family (DiffusersCall), refused by name elsewhere
    image: Any = None  # the first frame: a PIL image or a (3, H, W) tensor, kept raw
    last_image: Any = None  # the last frame (first-last-frame models), as image
    video: Any = None  # the video to start from: a list of frames, (F, H, W, 3) array or (F, 3, H, W) tensor
    strength: Optional[float] = None  # video-to-video: the share of the schedule sampled, in (0, 1]

    def __post_init__(self):
        check_generator(self.generator)
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def get(self, name: str, default=None):
        """The argument ``name``, or ``default`` where this pipeline's call has no such argument."""
        return getattr(self, name, default)

    def given(self, names) -> dict:
        """``{name: value}`` of the arguments among ``names`` this call has (whatever their value)."""
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def changed(self, names) -> dict:
        """``{name: value or None}`` for each of ``names`` this call has: None where the argument is at its default
        (by identity, as a default object passed back counts as left out)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {n: None if getattr(self, n) is defaults[n] else getattr(self, n) for n in names if n in defaults}

    def replace(self, **changes) -> "VideoCall":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TextToVideoCall(VideoCall):
    """A call that samples one clip from noise: starting latents (or ids), prompt embeddings, decode chunking."""

    latents: Optional[torch.Tensor] = None
    prompt_embeds: Any = None
    negative_prompt_embeds: Any = None
    decode_chunk_frames: Optional[int] = None


@dataclass(frozen=True)
class ConditionedCall(TextToVideoCall):
    """vidgen's own generators' call: class labels, conditioning frames (given latent frames) and stories."""

    class_labels: Any = None
    conditioning_frames: Optional[torch.Tensor] = None
    conditioning_latent_indices: Optional[Sequence[int]] = None

    @property
    def context_frames(self):
        """The latent frames each chunk of a story is given (None: the folder's)."""
        value = self.settings.get("context_frames", UNSET)
        return None if value is UNSET else value


@dataclass(frozen=True)
class DiffusersCall(ConditionedCall):
    """A diffusers-backed pipeline's call: the prompt length and attention options of diffusers' pipelines, and the
    options only some families' pipelines take (``family_options``: given ones, checked by the family). The
    recipe's settings step fills in the family's default size and the model call's options (``model_options``)."""

    max_sequence_length: Optional[int] = None
    attention_kwargs: Optional[dict] = None
    family_options: Mapping[str, Any] = field(default_factory=dict)
    model_options: Mapping[str, Any] = field(default_factory=dict)


def check_keywords(given, known, owner: str, kind: str = "argument", otherwise: str = "") -> None:
    """A name in ``given`` that is not in ``known`` is an :class:`~vidgen.errors.UnknownArgumentError` naming the
    closest known ones (else ``otherwise``, or the list of known names)."""
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=3)
            fix = (f"did you mean {' or '.join(close)}?" if close else otherwise or f"it takes {', '.join(known)}")
            raise UnknownArgumentError(f"{name}: {owner} has no such {kind}; {fix}")


def sampling_entry(method: Callable) -> Callable:
    """A pipeline's sampling entry point (``__call__``): runs under ``torch.no_grad()``, and a keyword argument it
    does not take is an :class:`~vidgen.errors.UnknownArgumentError` naming the closest ones it does (a misspelt
    ``num_frame=`` would otherwise be Python's bare ``TypeError``)."""
    params = inspect.signature(method).parameters
    names = [n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    @functools.wraps(method)
    def entry(self, *args, **kwargs):
        check_keywords(kwargs, names, f"{type(self).__name__}.{method.__name__}")
        with torch.no_grad():
            return method(self, *args, **kwargs)
    return entry

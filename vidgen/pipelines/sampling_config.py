"""``sampling_config.json``: the sampling settings saved with a pipeline folder (like transformers'
``generation_config.json``).

A flat JSON object whose keys are sampling keyword arguments of the pipeline's ``__call__``, e.g. the shipped masked
pipeline's ``{"num_inference_steps": 4, "guidance_scale": 1.5, "top_k": null, "context_frames": 1}``.
``from_pretrained`` / ``load_pipeline`` read it into ``pipe.sampling_config``; ``__call__`` uses a value from it for
every setting the caller leaves out (the class defaults apply to settings the file does not name); ``save_pretrained``
writes it. So a folder called with only a prompt samples as it was evaluated. ``context_frames``, the latent frames
each chunk of a story or long video is given from before it, is tuned per model like the others
(:attr:`~vidgen.pipelines.long_video.LongVideoMixin.story_context`).

The file is checked once, when it is read (or when ``pipe.sampling_config`` is assigned): an unknown key, a key that
is an input rather than a setting, or a value the pipeline's ``check_inputs`` would refuse is a
:class:`~vidgen.errors.ConfigError` naming the file, the key and the fix.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

from vidgen.errors import ConfigError, InvalidInputError

SAMPLING_CONFIG_NAME = "sampling_config.json"


class _SamplingDefault:
    """The default of every sampling setting in a pipeline's ``__call__``: "not passed", so the value comes from
    ``pipe.sampling_config``, else from the class default (None cannot mark it: ``top_k=None`` is a choice)."""

    def __repr__(self) -> str:
        return "<from sampling_config>"


SAMPLING_DEFAULT = _SamplingDefault()


def check_context_frames(value) -> None:
    """Latent frames given to each chunk: a whole number >= 0 (the window's bound is checked when a call plans its
    chunks, :func:`vidgen.pipelines.story.plan_chunks`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"context_frames must be a whole number >= 0, got {value!r}")


def check_sampling_config(config, pipeline_cls, source: str) -> dict:
    """A validated copy of ``config`` for ``pipeline_cls`` (its :attr:`sampling_defaults` are the settings, and
    ``context_frames`` for a pipeline that makes stories);
    ConfigError naming ``source`` (the file), the key and the fix otherwise."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a JSON object of sampling settings, got {type(config).__name__}")
    settings = dict(pipeline_cls.sampling_defaults)
    checks = dict(pipeline_cls.option_checks)
    if hasattr(pipeline_cls, "context_frames"):  # the pipelines that make stories (LongVideoMixin)
        settings["context_frames"] = pipeline_cls.context_frames
        checks["context_frames"] = check_context_frames
    inputs = set(inspect.signature(pipeline_cls.__call__).parameters) - {"self"}
    for key, value in config.items():
        if key not in settings:
            what = (f"is an input of {pipeline_cls.__name__}.__call__, not a sampling setting" if key in inputs else
                    f"is not a keyword argument of {pipeline_cls.__name__}.__call__")
            raise ConfigError(f"{source}: key {key!r} {what}; remove it (the settings are {sorted(settings)})")
        try:
            checks[key](value)
        except InvalidInputError as err:
            raise ConfigError(f"{source}: key {key!r}: {err}; correct the value in the file or remove the key "
                              f"(the class default is {settings[key]!r})") from err
    return dict(config)


def read_sampling_config(folder, pipeline_cls) -> dict:
    """The checked settings in ``folder/sampling_config.json``; ``{}`` if the folder has none (class defaults)."""
    path = Path(folder) / SAMPLING_CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err}); write a JSON object such as "
                          '{"guidance_scale": 3.0}') from err
    return check_sampling_config(config, pipeline_cls, str(path))


def write_sampling_config(folder, config: dict) -> Path:
    path = Path(folder) / SAMPLING_CONFIG_NAME
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path

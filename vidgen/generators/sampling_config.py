"""One object holds a generator's sampling settings, as transformers' ``GenerationConfig`` does.

Each generator module declares its config (:class:`~vidgen.generators.masked.MaskedSamplingConfig`,
:class:`~vidgen.generators.flow.FlowSamplingConfig`,
:class:`~vidgen.generators.autoregressive.AutoregressiveSamplingConfig`): a frozen dataclass whose fields are the
settings with their defaults and whose construction checks every value, once. A pipeline folder saves it as
``sampling_config.json``; :meth:`SamplingConfig.replace` applies a caller's arguments::

    config = FlowSamplingConfig.from_pretrained("pretrained/shapes-flow")   # the folder's settings
    config = config.replace(guidance_scale=6.0)                             # checked again, a new object
    latents = generate_latents(model, cond, config, grid=(5, 8, 8), batch=1)

A bad value is an :class:`~vidgen.errors.InvalidInputError` naming the setting; in a file, a
:class:`~vidgen.errors.ConfigError` naming the file, the key and the fix.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, ClassVar, Optional

from vidgen.errors import ConfigError, InvalidInputError

SAMPLING_CONFIG_NAME = "sampling_config.json"


class _Unset:
    """The default of every sampling argument of a pipeline's ``__call__``: "not passed", so the value comes from
    the pipeline's ``sampling_config`` (None cannot mark it: ``top_k=None`` is a choice)."""

    def __repr__(self) -> str:
        return "<from sampling_config>"


UNSET = _Unset()


def check_context_frames(value) -> None:
    """Latent frames given to each chunk of a story or long video: a whole number >= 0 (the window's bound is
    checked when a call plans its chunks, :func:`vidgen.pipelines.story.plan_chunks`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"context_frames must be a whole number >= 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Base of the generators' sampling configs: subclasses declare their fields and :attr:`checks`."""

    #: setting -> its check, raising InvalidInputError naming the setting
    checks: ClassVar[dict[str, Callable]] = {}

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            self.checks[field.name](value)
            if isinstance(value, list):  # JSON has lists: pairs such as (start, end) are kept as tuples
                object.__setattr__(self, field.name, tuple(value))

    # ------------------------------------------------------------------ reading the settings
    @classmethod
    def settings(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.settings()}

    def replace(self, **given) -> "SamplingConfig":
        """A copy with the given settings changed (arguments equal to :data:`UNSET` are left out); each value is
        checked. An unknown name is an InvalidInputError listing the settings."""
        given = {k: v for k, v in given.items() if v is not UNSET}
        unknown = sorted(set(given) - set(self.settings()))
        if unknown:
            raise InvalidInputError(f"{', '.join(unknown)}: not a sampling setting of {type(self).__name__} (the "
                                    f"settings are {', '.join(self.settings())})")
        return dataclasses.replace(self, **given) if given else self

    @classmethod
    def resolve(cls, config: Optional["SamplingConfig"], given: dict) -> "SamplingConfig":
        """``config`` (or the defaults) with ``given`` applied: what a sampling function samples with."""
        if config is None:
            config = cls()
        elif not isinstance(config, cls):
            raise InvalidInputError(f"config must be a {cls.__name__}, got {type(config).__name__}")
        return config.replace(**given)

    # ------------------------------------------------------------------ files
    @classmethod
    def from_dict(cls, config, source: str = "sampling_config", owner: Optional[type] = None) -> "SamplingConfig":
        """Check ``config`` (a dict of settings; missing ones keep their defaults) and build the object; a
        ConfigError naming ``source``, the key and the fix otherwise. ``owner``: the pipeline class whose
        ``__call__`` takes these settings, named in the messages."""
        if not isinstance(config, dict):
            raise ConfigError(f"{source}: expected a JSON object of sampling settings, got {type(config).__name__}")
        defaults = cls()
        owner_name = owner.__name__ if owner is not None else cls.__name__
        inputs = set(getattr(owner, "call_inputs", lambda: ())())
        for key, value in config.items():
            if key not in defaults.settings():
                what = (f"is an input of {owner_name}.__call__, not a sampling setting" if key in inputs else
                        f"is not a keyword argument of {owner_name}.__call__")
                raise ConfigError(f"{source}: key {key!r} {what}; remove it (the settings are "
                                  f"{sorted(defaults.settings())})")
            try:
                cls.checks[key](value)
            except InvalidInputError as err:
                where = "in the file" if source.endswith(".json") else "given"
                raise ConfigError(f"{source}: key {key!r}: {err}; correct the value {where} or remove the key "
                                  f"(the class default is {getattr(defaults, key)!r})") from err
        return cls(**config)

    @classmethod
    def from_pretrained(cls, folder, owner: Optional[type] = None) -> "SamplingConfig":
        """The settings in ``folder/sampling_config.json``; the defaults if the folder has none."""
        path = Path(folder) / SAMPLING_CONFIG_NAME
        if not path.is_file():
            return cls()
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err}); write a JSON object such as "
                              '{"guidance_scale": 3.0}') from err
        return cls.from_dict(config, str(path), owner)

    def save_pretrained(self, folder) -> Path:
        """Write every setting to ``folder/sampling_config.json``."""
        path = Path(folder) / SAMPLING_CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

"""The strict ``from_pretrained`` every vidgen model (tokenizers and generators) uses, the check of constructor
options, and reading a saved ``config.json``. A module of its own: the models import it, and
:func:`vidgen.tokenizers.loading.load_tokenizer` imports the models."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

from vidgen.errors import ConfigError, MissingWeightsError, VidgenError


def read_config(config_file: Path) -> dict:
    """The JSON object in ``config_file``; ConfigError naming the file if it is not one."""
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{config_file}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ConfigError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    return config


def check_init_options(cls, options: dict, where: str) -> None:
    """ConfigError naming ``where`` for keys ``cls.__init__`` does not take (a TypeError deep inside otherwise)."""
    valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {unknown} for {cls.__name__}; valid: {sorted(valid)}")


class StrictLoadingMixin:
    """``from_pretrained`` that refuses what diffusers only warns about or reports with generic errors.

    Weights are read from safetensors only (a pickle is never unpickled, whatever its file name); a weight file that
    lacks tensors of the model, holds extra ones or has other shapes than ``config.json`` builds raises instead of
    leaving parameters uninitialised (on the meta device) or random; a ``config.json`` written for another class is
    refused (a class's :attr:`former_class_names` are its own). Every failure is a
    :class:`~vidgen.errors.VidgenError` naming the folder or file.
    """

    #: names this class was saved under before (their ``config.json`` files still load)
    former_class_names: tuple = ()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        folder = Path(str(pretrained_model_name_or_path)) / (kwargs.get("subfolder") or "")
        config_file = folder / cls.config_name
        if config_file.is_file():  # a local folder (hub names are resolved by diffusers, offline)
            saved_as = read_config(config_file).get("_class_name", cls.__name__)
            if saved_as != cls.__name__ and saved_as not in cls.former_class_names:
                raise ConfigError(f"{config_file}: describes a {saved_as}, not a {cls.__name__} (wrong kind of "
                                  "component for this folder?)")
        want_info = kwargs.pop("output_loading_info", False)
        kwargs.setdefault("use_safetensors", True)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        except VidgenError as err:  # e.g. a ConfigError of __init__ for a value in config.json
            raise type(err)(f"{config_file}: {err}") from err
        except ValueError as err:
            if "expected shape" not in str(err):
                raise
            # diffusers: a tensor's shape differs from the one config.json builds (advice to load random weights cut)
            detail = str(err).split(" If you want")[0].replace("Cannot load  because ", "")
            raise ConfigError(f"{config_file} does not match the weights in {folder}: {detail}") from err
        except OSError as err:  # diffusers / safetensors: a missing, truncated or foreign (e.g. pickle) weight file
            raise MissingWeightsError(f"{folder}: cannot load the {cls.__name__} weights: {err}") from err
        missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
        if missing or unexpected:
            raise MissingWeightsError(
                f"{folder}: the weight file does not match {config_file}: {len(missing)} tensor(s) of the model are "
                f"missing {missing[:5]}, {len(unexpected)} in the file are unexpected {unexpected[:5]}")
        return (model, info) if want_info else model

"""``load_tokenizer``: a saved tokenizer folder, whichever class its ``config.json`` names (a vidgen tokenizer, or a
diffusers video VAE, returned wrapped in :class:`~vidgen.tokenizers.diffusers_vae.DiffusersVideoVAE`). The strict
``from_pretrained`` and the option check live in :mod:`vidgen.tokenizers.loading_mixins` (re-exported here)."""
from __future__ import annotations

from pathlib import Path

from vidgen.errors import ConfigError, MissingWeightsError
from vidgen.tokenizers.diffusers_vae import DIFFUSERS_VIDEO_VAES, DiffusersVideoVAE
from vidgen.tokenizers.loading_mixins import StrictLoadingMixin, check_init_options, read_config
from vidgen.tokenizers.vae import CausalVAE
from vidgen.tokenizers.vqvae import CausalVQVAE

__all__ = ["StrictLoadingMixin", "check_init_options", "is_discrete", "load_tokenizer", "read_config",
           "tokenizer_classes"]


def tokenizer_classes() -> dict:
    return {"CausalVAE": CausalVAE, "CausalVQVAE": CausalVQVAE}


def load_tokenizer(path: str | Path, **kwargs):
    """``CausalVAE`` or ``CausalVQVAE`` from a ``save_pretrained`` folder (safetensors), in eval mode; a folder
    written by a diffusers video VAE's ``save_pretrained`` (``_class_name`` e.g. ``AutoencoderKLWan``) comes back as
    a :class:`DiffusersVideoVAE` (keywords go to :meth:`DiffusersVideoVAE.from_pretrained`). A pipeline folder
    (vidgen's or diffusers', with ``model_index.json``) gives its video tokenizer (``vae/`` or ``vqvae/``)."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists() and (path / "model_index.json").is_file():  # a pipeline folder: its video tokenizer
        for sub in ("vae", "vqvae"):
            if (path / sub / "config.json").is_file():
                return load_tokenizer(path / sub, **kwargs)
    if not config_file.exists():
        raise MissingWeightsError(f"{path}: no config.json here; expected a folder written by save_pretrained()")
    name = read_config(config_file).get("_class_name")
    classes = tokenizer_classes()
    if name in DIFFUSERS_VIDEO_VAES:
        return DiffusersVideoVAE.from_pretrained(path, **kwargs).eval()
    if name not in classes:
        raise ConfigError(f"{config_file}: _class_name {name!r} is not a vidgen tokenizer ({sorted(classes)}) nor a "
                          f"supported diffusers video VAE ({', '.join(DIFFUSERS_VIDEO_VAES)})")
    return classes[name].from_pretrained(path, **kwargs).eval()


def is_discrete(tokenizer) -> bool:
    return hasattr(tokenizer, "tokenize") and hasattr(tokenizer, "vocab_size")

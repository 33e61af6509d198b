"""Load any saved vidgen tokenizer by reading which class its ``config.json`` names."""
from __future__ import annotations

import json
from pathlib import Path

from vidgen.errors import ConfigError, MissingWeightsError


def tokenizer_classes() -> dict:
    from vidgen.tokenizers.vae import CausalVAE
    from vidgen.tokenizers.vqvae import CausalVQVAE

    return {"CausalVAE": CausalVAE, "CausalVQVAE": CausalVQVAE}


def load_tokenizer(path: str | Path, **kwargs):
    """``CausalVAE`` or ``CausalVQVAE`` from a ``save_pretrained`` folder (safetensors), in eval mode."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise MissingWeightsError(f"{path}: no config.json here; expected a folder written by save_pretrained()")
    name = json.loads(config_file.read_text()).get("_class_name")
    classes = tokenizer_classes()
    if name not in classes:
        raise ConfigError(f"{config_file}: _class_name {name!r} is not a vidgen tokenizer ({sorted(classes)})")
    return classes[name].from_pretrained(path, **kwargs).eval()


def is_discrete(tokenizer) -> bool:
    return hasattr(tokenizer, "tokenize") and hasattr(tokenizer, "vocab_size")

"""LoRA on a diffusers video transformer through ``peft`` (the library diffusers loads LoRAs with), saved in
diffusers' LoRA format so the family's own pipeline loads it with ``load_lora_weights``::

    add_lora(pipe.transformer, rank=16)                  # adapters on the family's targets (to_q, to_k, to_v, ...)
    ...train...
    save_lora(pipe.transformer, "my-lora")               # my-lora/pytorch_lora_weights.safetensors
    WanPipeline.from_pretrained(base).load_lora_weights("my-lora")   # the same model in diffusers

A pipeline's ``save_pretrained`` with an adapter in place writes it fused into the base weights (plain tensor names,
:func:`vidgen.pipelines.folder_weights.fused_adapters`); :func:`save_lora` keeps the adapter apart.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from vidgen.errors import ConfigError
from vidgen.families import DEFAULT_TARGET_MODULES, transformer_family

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


def _raw(transformer):
    from vidgen.adapters.transformer import DiffusersVideoTransformer
    return transformer.model if isinstance(transformer, DiffusersVideoTransformer) else transformer


def check_target_modules(transformer, target_modules: Sequence[str]) -> None:
    """Every name in ``target_modules`` must end a module path of ``transformer`` (peft's matching rule); a
    missing one raises a :class:`~vidgen.errors.ConfigError` naming it and the linear layers there are."""
    import torch
    model = _raw(transformer)
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing or not target_modules:
        linear = sorted({n.split(".")[-1] if not n.split(".")[-1].isdigit() else ".".join(n.split(".")[-2:])
                         for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"lora target_modules {list(missing or target_modules)}: not modules of "
                          f"{type(model).__name__} (its linear layers end in {linear[:24]})")


def add_lora(transformer, rank: int, alpha: Optional[float] = None,
             target_modules: Optional[Sequence[str]] = None, dropout: float = 0.0, seed: int = 0) -> list:
    """Add a LoRA adapter (``rank``, ``alpha`` default ``rank``) on ``target_modules`` (default: the family's
    ``lora_target_modules``, else :data:`DEFAULT_TARGET_MODULES`) and freeze everything else; returns the trainable
    parameters. The adapter's initialisation is seeded (peft zeroes B, so the model is unchanged until trained)."""
    import torch
    from peft import LoraConfig
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"lora rank must be an int >= 1, got {rank!r}")
    model = _raw(transformer)
    family = transformer_family(model)
    targets = list(target_modules or (family.lora_target_modules if family else DEFAULT_TARGET_MODULES))
    check_target_modules(model, targets)
    model.requires_grad_(False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=targets, lora_dropout=dropout,
                                     init_lora_weights=True))
    return [p for p in model.parameters() if p.requires_grad]


def lora_state_dict(transformer) -> dict:
    """The adapter's weights under peft's names (what diffusers' ``save_lora_weights`` takes)."""
    from peft.utils import get_peft_model_state_dict
    return get_peft_model_state_dict(_raw(transformer))


def save_lora(transformer, folder, pipeline_class=None) -> Path:
    """Write the adapter in diffusers' LoRA format (``folder/pytorch_lora_weights.safetensors`` with the adapter's
    rank and alpha as metadata) with the family's pipeline class (found from the transformer if not given)."""
    import diffusers
    model = _raw(transformer)
    cls = pipeline_class or getattr(diffusers, transformer_family(model).pipeline)
    config = model.peft_config["default"]
    metadata = {"r": config.r, "lora_alpha": config.lora_alpha, "target_modules": sorted(config.target_modules)}
    cls.save_lora_weights(str(folder), transformer_lora_layers=lora_state_dict(model), safe_serialization=True,
                          transformer_lora_adapter_metadata=metadata)
    return Path(folder) / LORA_WEIGHTS_NAME

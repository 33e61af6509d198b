"""What a pipeline folder's weight files hold, on both sides of the disk:

- saving: :func:`fused_adapters` folds the LoRA adapters peft holds in a model (``pipe.load_lora_weights(...)``,
  :func:`vidgen.training.lora.add_lora`) into the base weights for the time of a ``save_pretrained``, so the folder
  holds the model's own tensor names (``to_q.weight``), never peft's (``to_q.base_layer.weight``,
  ``to_q.lora_A.default_0.weight``), and any diffusers class loads it with the adapter's effect. The model in memory
  keeps its adapter, unfused, with its base weights untouched (the same tensors, not a subtraction).
- loading: :func:`check_folder_weights` compares the tensor names of each diffusers model component's weight files
  with the names its ``config.json`` builds, before anything loads; :func:`check_no_meta_tensors` refuses a loaded
  component left with tensors on the meta device. diffusers only warns about both and leaves the missing tensors
  uninitialised, so the first call fails far from the cause.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from vidgen.errors import MissingWeightsError, UnsupportedError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
#: how many of the differing tensor names an error lists
SHOWN = 5


def _lora_layers(model: torch.nn.Module) -> list:
    """``(name, layer)`` of each peft adapter layer in ``model`` (none when peft is not installed)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return []
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


def _fused_weight(name: str, layer) -> torch.Tensor:
    """The weight ``layer`` computes with: its base weight plus each active adapter's ``B @ A * scaling``."""
    from peft.tuners.lora import LoraLayer
    base = layer.get_base_layer()
    if not isinstance(layer, LoraLayer):
        raise UnsupportedError(f"save_pretrained: {name} holds a {type(layer).__name__} adapter; only LoRA adapters "
                               "are fused into the saved weights (unload it first: model.unload_lora())")
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    special = [a for a in active if layer.use_dora.get(a) or getattr(layer, "lora_bias", {}).get(a)
               or getattr(layer, "lora_variant", {}).get(a) is not None]
    if special:
        raise UnsupportedError(f"save_pretrained: {name} holds adapter(s) {special} with DoRA, a LoRA bias or another "
                               "LoRA variant, which are not fused into the saved weights; save the adapter with "
                               "vidgen.training.lora.save_lora and the base model without it")
    if layer.merged:
        if layer.disable_adapters:
            raise UnsupportedError(f"save_pretrained: {name} has a fused adapter that is disabled; unfuse it first")
        return base.weight  # already fused (pipe.fuse_lora())
    if layer.disable_adapters or not active:
        return base.weight
    delta = sum(layer.get_delta_weight(a) for a in active)
    return (base.weight.detach() + delta.to(base.weight.dtype)).detach()


@contextmanager
def fused_adapters(*models):
    """Inside the ``with``, each peft LoRA layer of ``models`` (any of them may be None or not a module) is replaced
    by its base layer holding the fused weight, so ``state_dict()`` and ``save_pretrained`` see a plain model whose
    output is the adapted one. On leaving, the adapter layers and the original weight tensors are put back."""
    swaps = []
    try:
        for model in models:
            if not isinstance(model, torch.nn.Module):
                continue
            layers = _lora_layers(model)
            fused = [(name, layer, _fused_weight(name, layer)) for name, layer in layers]  # refusals before a swap
            for name, layer, weight in fused:
                parent_name, _, attr = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                base = layer.get_base_layer()
                original = base.weight
                swaps.append((parent, attr, layer, base, original))
                setattr(parent, attr, base)
                if weight is not original:
                    base.weight = torch.nn.Parameter(weight, requires_grad=False)
        yield
    finally:
        for parent, attr, layer, base, original in reversed(swaps):
            base.weight = original
            setattr(parent, attr, layer)


def _file_keys(folder: Path):
    """The tensor names of ``folder``'s diffusers weights (one safetensors file or a sharded index), else None
    (no such file, or one diffusers reports itself)."""
    index = folder / f"{WEIGHTS_NAME}.index.json"
    try:
        if index.is_file():
            return set(json.loads(index.read_text())["weight_map"])
        if (folder / WEIGHTS_NAME).is_file():
            from safetensors import safe_open
            with safe_open(str(folder / WEIGHTS_NAME), "pt") as handle:
                return set(handle.keys())
    except (OSError, ValueError, KeyError, TypeError) as err:  # unreadable: diffusers' loading reports it
        del err
    return None


def _model_keys(cls, folder: Path) -> set:
    """The tensor names the model ``cls`` built from ``folder/config.json`` has (built without memory)."""
    from accelerate import init_empty_weights
    from diffusers.utils import logging as diffusers_logging
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with init_empty_weights():
            model = cls.from_config(cls.load_config(str(folder)))
    finally:
        diffusers_logging.set_verbosity(verbosity)
    return set(model.state_dict())


def _adapter_hint(unexpected) -> str:
    if any(".base_layer." in k or ".lora_A." in k or ".lora_B." in k for k in unexpected):
        return ("; the unexpected names are a peft LoRA adapter's: the folder was saved with an adapter loaded and "
                "not fused - load the base model's folder and the adapter (pipe.load_lora_weights) instead")
    return ""


def check_folder_weights(folder) -> None:
    """Each diffusers model component of the pipeline folder ``folder`` (``model_index.json``) must have weight
    files whose tensor names are exactly those its ``config.json`` builds; else a
    :class:`~vidgen.errors.MissingWeightsError` naming the component and listing some of the missing and
    unexpected names. Components that are not diffusers models, quantized ones and folders without a plain
    safetensors file are left to diffusers."""
    import diffusers
    from diffusers import ModelMixin
    folder = Path(folder)
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] != "diffusers":
            continue
        cls = getattr(diffusers, str(spec[1]), None)
        if not (isinstance(cls, type) and issubclass(cls, ModelMixin)):
            continue
        found = _file_keys(folder / component)
        try:
            config = json.loads((folder / component / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if found is None or config.get("quantization_config"):
            continue
        expected = _model_keys(cls, folder / component)
        missing, unexpected = sorted(expected - found), sorted(found - expected)
        for pattern in getattr(cls, "_keys_to_ignore_on_load_unexpected", None) or ():
            import re
            unexpected = [k for k in unexpected if re.search(pattern, k) is None]
        if missing or unexpected:
            raise MissingWeightsError(
                f"{folder / component}: the weights do not match the {spec[1]} its config.json builds: "
                f"{len(missing)} tensor(s) of the model are missing {missing[:SHOWN]}, {len(unexpected)} in the file "
                f"are unexpected {unexpected[:SHOWN]}{_adapter_hint(unexpected)}")


def check_no_meta_tensors(components: dict, folder) -> None:
    """A :class:`~vidgen.errors.MissingWeightsError` naming the component and some tensors if a loaded component
    still has tensors on the meta device (weights its files lacked)."""
    for name, module in components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        empty = [k for k, t in module.state_dict().items() if t.device.type == "meta"]
        if empty:
            raise MissingWeightsError(f"{Path(folder) / name}: {len(empty)} tensor(s) were not in the weight files and "
                                      f"are left uninitialised {empty[:SHOWN]}")

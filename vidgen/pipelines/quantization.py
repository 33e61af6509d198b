"""Memory options for real models: quantized weights (torchao, GGUF) for diffusers folders and vidgen's own
generators (docs/memory.md)::

    from diffusers import PipelineQuantizationConfig, TorchAoConfig
    from torchao.quantization import Int8WeightOnlyConfig
    q = PipelineQuantizationConfig(quant_mapping={"transformer": TorchAoConfig(Int8WeightOnlyConfig())})
    pipe = load_pipeline(folder, quantization_config=q)          # a diffusers folder or a vidgen one
    pipe = load_pipeline(folder, transformer=load_gguf_transformer("model-Q8_0.gguf", folder))

Before any weight loads, the names the config quantizes are checked against the folder's model components (diffusers
only warns about an unknown name and loads it unquantized) and each torchao config is tried on a small layer on the
target device, so a config the device cannot run (FP8 with activation scaling on a CPU, a kernel package torchao
lacks) is refused by name instead of failing deep inside loading. Only ``quant_mapping`` is taken: with transformers
5 the ``quant_backend=`` spelling fails in diffusers' own constructor for torchao.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from vidgen.errors import ConfigError, InvalidInputError, MissingWeightsError, UnsupportedError

INSTALL_HINT = "install vidgen's `quant` extra (pip install -e '.[quant]'; make install does)"


def _require(package: str):
    import importlib
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise UnsupportedError(f"{package} is not installed: {INSTALL_HINT}") from err


def model_components(folder) -> dict:
    """``name -> class name`` of the model components (diffusers models, transformers models, vidgen modules) that
    ``folder``'s ``model_index.json`` lists: the names a quantization config may name."""
    index = Path(folder) / "model_index.json"
    try:
        spec = json.loads(index.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{index}: cannot read it ({err})") from err
    out = {}
    for name, entry in spec.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2 or entry[0] is None:
            continue
        library, cls_name = entry
        if library == "vidgen" or str(library).startswith("vidgen."):
            import importlib
            cls = getattr(importlib.import_module(str(library)), str(cls_name), None)
        else:
            cls = getattr(_require(str(library)) if library in ("diffusers", "transformers") else None,
                          str(cls_name), None)
        if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            out[name] = cls_name
    return out


def torchao_config(config):
    """The torchao ``AOBaseConfig`` of ``config``: itself, or the one a diffusers / transformers ``TorchAoConfig``
    holds (``.quant_type``); None for other quantization configs (GGUF, bitsandbytes, quanto)."""
    base = _require("torchao.core.config").AOBaseConfig
    if isinstance(config, base):
        return config
    if type(config).__name__ == "TorchAoConfig":
        inner = getattr(config, "quant_type", None)
        if isinstance(inner, base):
            return inner
        raise InvalidInputError(f"TorchAoConfig({inner!r}): torchao >= 0.15 takes a config instance, e.g. "
                                "TorchAoConfig(Int8WeightOnlyConfig()), not a name")
    return None


def probe_quantization(config, device="cpu", dtype: torch.dtype = torch.float32) -> None:
    """Quantize a small linear layer on ``device`` with the torchao ``config`` and run it: an
    :class:`~vidgen.errors.UnsupportedError` naming the config, the device and torchao's reason if it cannot (e.g.
    ``Float8DynamicActivationFloat8WeightConfig`` on a CPU: torchao asks for CUDA compute capability >= 8.9)."""
    ao = _require("torchao.quantization")
    inner = torchao_config(config)
    if inner is None:
        return
    layer = torch.nn.Linear(256, 256, dtype=dtype, device=device)
    try:
        ao.quantize_(layer, inner)
        with torch.no_grad():
            layer(torch.ones(2, 256, dtype=dtype, device=device))
    except Exception as err:  # torchao reports a missing capability as AssertionError, ImportError, RuntimeError...
        raise UnsupportedError(f"{type(inner).__name__}: cannot run on {torch.device(device)} with {dtype} "
                               f"({type(err).__name__}: {str(err)[:300]}); Int8WeightOnlyConfig runs on any "
                               "device") from err


def _mapping(quantization_config, where: str) -> dict:
    """``component -> config`` of a ``PipelineQuantizationConfig`` given as ``quant_mapping``."""
    try:
        from diffusers import PipelineQuantizationConfig
    except ImportError:  # pragma: no cover - diffusers < 0.35
        PipelineQuantizationConfig = ()
    if not isinstance(quantization_config, PipelineQuantizationConfig):
        raise InvalidInputError(
            f"{where}: quantization_config must be a diffusers PipelineQuantizationConfig, got "
            f"{type(quantization_config).__name__}; e.g. PipelineQuantizationConfig(quant_mapping={{'transformer': "
            "TorchAoConfig(Int8WeightOnlyConfig())}}) (for one model: torchao.quantization.quantize_ or "
            "vidgen.pipelines.quantization.quantize_generator)")
    if not quantization_config.quant_mapping:
        raise InvalidInputError(
            f"{where}: give PipelineQuantizationConfig a quant_mapping ({{component: config}}); the quant_backend= "
            "spelling fails for torchao with transformers 5 (diffusers cannot match the two libraries' configs)")
    return dict(quantization_config.quant_mapping)


def check_quantization(folder, quantization_config, device="cpu", dtype=None) -> dict:
    """The ``component -> config`` mapping of ``quantization_config``, checked against ``folder`` before anything
    loads: each name must be one of its model components (:class:`~vidgen.errors.ConfigError` naming the bad names
    and the folder's components) and each torchao config must run on ``device`` (:func:`probe_quantization`)."""
    mapping = _mapping(quantization_config, str(folder))
    components = model_components(folder)
    bad = sorted(set(mapping) - set(components))
    if bad:
        raise ConfigError(f"{folder}: quantization_config names component(s) {bad} that the folder does not have; "
                          f"its model components are {sorted(components)}")
    probe_dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32
    for config in mapping.values():
        probe_quantization(config, device, probe_dtype)
    return mapping


def load_dtype(dtype, quantization_config):
    """The dtype to load with: a quantized load without one is fp32, as the unquantized load (diffusers' torchao
    loader would otherwise switch the whole model to bf16, and fp32 inputs then fail in its first convolution)."""
    return torch.float32 if dtype is None and quantization_config is not None else dtype


def quantize_generator(model: torch.nn.Module, config, device=None) -> torch.nn.Module:
    """``model`` (any module: one of vidgen's generators, a diffusers transformer) with its linear layers quantized
    in place by torchao (``quantize_``). ``config``: a torchao config (``Int8WeightOnlyConfig()``) or a
    ``TorchAoConfig`` holding one; it is first tried on ``device`` (default: the model's)."""
    inner = torchao_config(config)
    if inner is None:
        raise UnsupportedError(f"{type(config).__name__}: vidgen quantizes its own generators with torchao configs "
                               "only (Int8WeightOnlyConfig(), ...); GGUF and bitsandbytes configs load diffusers "
                               "models (load_gguf_transformer)")
    param = next(model.parameters(), None)
    device = device if device is not None else (param.device if param is not None else "cpu")
    probe_quantization(inner, device, param.dtype if param is not None and param.is_floating_point() else torch.float32)
    _require("torchao.quantization").quantize_(model, inner)
    return model


def quantize_components(pipe, quantization_config, folder) -> None:
    """Quantize, in place, the components of a loaded vidgen pipeline that ``quantization_config``
    (a ``PipelineQuantizationConfig`` with torchao configs) names, after :func:`check_quantization`."""
    mapping = check_quantization(folder, quantization_config)
    for name, config in mapping.items():
        quantize_generator(getattr(pipe, name), config)


def load_gguf_transformer(path, config, subfolder: Optional[str] = "transformer",
                          compute_dtype: torch.dtype = torch.float32):
    """The diffusers transformer in the GGUF file ``path`` (quantized blocks such as Q8_0 stay quantized in memory
    and are dequantized per layer in ``compute_dtype``), built with the configuration of ``config``: a diffusers
    pipeline folder (``subfolder="transformer"``) or a transformer folder (``subfolder=None``). Pass it to
    ``load_pipeline(folder, transformer=...)``. The file's tensor names may be the diffusers model's own or the
    original checkpoint's (diffusers converts them)."""
    _require("gguf")
    from diffusers import GGUFQuantizationConfig
    path, config = Path(path), Path(config)
    if not path.is_file():
        raise MissingWeightsError(f"{path}: no such GGUF file")
    cfg_file = config / (subfolder or "") / "config.json"
    try:
        name = json.loads(cfg_file.read_text()).get("_class_name")
    except (OSError, ValueError) as err:
        raise ConfigError(f"{cfg_file}: cannot read the transformer's config ({err}); pass the pipeline folder the "
                          "GGUF file's model belongs to") from err
    import diffusers
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and hasattr(cls, "from_single_file")):
        raise UnsupportedError(f"{cfg_file}: {name} cannot load single files (GGUF) in diffusers")
    kwargs = dict(subfolder=subfolder) if subfolder else {}
    return cls.from_single_file(str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=compute_dtype),
                                config=str(config), torch_dtype=compute_dtype, **kwargs)


def tied_parameters(module: torch.nn.Module) -> list[tuple[str, str]]:
    """Pairs of parameter names that are one tensor in ``module`` (T5's ``shared`` and ``encoder.embed_tokens``)."""
    first, pairs = {}, []
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in first:
            pairs.append((first[id(param)], name))
        else:
            first[id(param)] = name
    return pairs


def check_group_offload(pipe, offload_type: str, offload_to_disk_path, exclude_modules) -> None:
    """Refuse diffusers' leaf-level group offloading to disk on a component with tied weights: each module of a tied
    tensor becomes its own group, and one group's offload replaces the tensor with an empty placeholder while the
    other reads it (NaN or stale frames, measured on a tiny Wan folder's T5 text encoder and on diffusers' own
    ``WanPipeline``). Block-level groups keep a tied tensor in one group."""
    if offload_type != "leaf_level" or not offload_to_disk_path:
        return
    excluded = [exclude_modules] if isinstance(exclude_modules, str) else list(exclude_modules or ())
    for name, component in pipe.components.items():
        if name in excluded or not isinstance(component, torch.nn.Module):
            continue
        tied = tied_parameters(component)
        if tied:
            raise UnsupportedError(
                f"enable_group_offload(offload_type='leaf_level', offload_to_disk_path=...): {name} ties "
                f"{tied[0][0]} and {tied[0][1]} (one tensor), and diffusers' leaf-level disk groups would give each its "
                f"own group, so one group's offload empties the tensor the other reads (NaN frames). Use "
                f"offload_type='block_level', or leave the component in memory with exclude_modules=['{name}']")

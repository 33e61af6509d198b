"""Loading and saving a video pipeline as diffusers does, with the sampling config saved beside the components
(:mod:`vidgen.generators.sampling_config`) and the dtype chosen by name (``"auto"``, ``"fp32"``, ``"bf16"``)."""
from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Optional

import torch
from diffusers.utils import logging as diffusers_logging

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators.sampling_config import SamplingConfig
from vidgen.pipelines.call import check_keywords
from vidgen.pipelines.folder_weights import fused_adapters
from vidgen.precision import dtype_argument, resolve_dtype


def _align_weights(pipe) -> None:
    """Loaded CPU tensors that sit off a 64-byte boundary (views into a safetensors file) are copied into aligned
    memory: CPU kernels take other code paths for unaligned data, so the same weights would round differently with
    where the file put them, and a folder saved and loaded again would not give bit-identical frames."""
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
                    tensor.data = tensor.data.clone()


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` with ``sampling_config.json``, for :class:`VideoPipelineBase`."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, dtype=None, torch_dtype=None, **kwargs):
        """diffusers' ``from_pretrained``: without a dtype every component loads as diffusers loads it (fp32), so a
        pipeline saved and loaded gives the same output. ``dtype`` takes a ``torch.dtype``, a precision name
        (``"fp32"``, ``"bf16"``, or ``"auto"``: bf16 where the device multiplies bf16 fast and, on a CPU, where this
        pipeline's bf16 sampling measured faster, :attr:`bf16_pays_on_cpu`; fp32 elsewhere) or, as diffusers' does, a
        dict per component with a ``"default"`` key. :func:`~vidgen.pipelines.load_pipeline`, ``vidgen generate``,
        the demo and the app default to ``"auto"`` (docs/precision.md). ``torch_dtype`` is diffusers' spelling of
        ``dtype``, taken as it is (both given: they must agree). In bf16 the components keep fp32 where numerics
        need it (quantizer rounding, sampling probabilities, the flow ODE state). The folder's
        ``sampling_config.json`` becomes :attr:`sampling_config`."""
        check_load_options(cls, kwargs)
        dtype = dtype_argument(dtype, torch_dtype)
        device = kwargs.get("device_map") if kwargs.get("device_map") in ("cuda", "cpu") else None
        auto = isinstance(dtype, str) and dtype == "auto"
        dtype = cls._resolve_dtype(dtype, device or ("cuda" if torch.cuda.is_available() else "cpu"))
        folder = Path(str(pretrained_model_name_or_path))
        # a bad sampling_config.json fails before the weights load
        sampling = cls.sampling_config_class.from_pretrained(folder, cls) if folder.is_dir() else None
        legacy = _legacy_text_tokenizer(folder, kwargs)
        if legacy is None:
            pipe = super().from_pretrained(pretrained_model_name_or_path, *args, dtype=dtype, **kwargs)
        else:  # diffusers would warn about the unexpected "text_tokenizer" entry
            verbosity = diffusers_logging.get_verbosity()
            diffusers_logging.set_verbosity_error()
            try:
                pipe = super().from_pretrained(pretrained_model_name_or_path, *args, dtype=dtype, **legacy, **kwargs)
            finally:
                diffusers_logging.set_verbosity(verbosity)
        pipe._sampling_config = sampling
        _align_weights(pipe)
        if auto and dtype == torch.bfloat16 and folder.is_dir():
            _mark_rounded(pipe, folder)
        return pipe

    @classmethod
    def _resolve_dtype(cls, dtype, device: str):
        """None and ``torch.dtype`` values as diffusers takes them; precision names resolved for ``device``."""
        if isinstance(dtype, dict):
            if not all(isinstance(k, str) for k in dtype):
                raise InvalidInputError(f"dtype: a dict maps component names (and 'default') to dtypes, got {dtype!r}")
            return {k: cls._resolve_dtype(v, device) for k, v in dtype.items()}
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise ConfigError(f"dtype={dtype} is not supported; choose one of 'auto', 'fp32', 'bf16', a floating "
                              "torch.dtype, or a dict of them per component with a 'default' key")
        if dtype == torch.float16 and device == "cpu":  # as the name "fp16" is: slow or missing CPU kernels
            raise ConfigError("dtype=torch.float16 on a CPU: fp16 is GPU-only here; pass 'auto', 'fp32' or 'bf16' "
                              "(or load on CUDA, device_map='cuda')")
        if dtype is None or isinstance(dtype, torch.dtype):
            return dtype
        if isinstance(dtype, str) and dtype == "auto" and device == "cpu" and not cls.bf16_pays_on_cpu:
            dtype = "fp32"
        return resolve_dtype(dtype, device, "dtype")

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' ``save_pretrained``, plus ``sampling_config.json`` (:attr:`sampling_config`). A LoRA added to a
        component is saved fused into its weights (the pipeline keeps it unfused). A component that ``dtype="auto"``
        loaded in bf16 from wider stored weights is refused: its saved weights would be the rounded ones."""
        rounded = {name: module._vidgen_rounded_from for name, module in self.components.items()
                   if getattr(module, "_vidgen_rounded_from", None)}
        if rounded:
            raise InvalidInputError(
                f"save_pretrained: dtype='auto' loaded {', '.join(rounded)} in bf16 on this machine, rounding the "
                f"weights its folder stores as {'/'.join(sorted(set(rounded.values())))}; saving would store the "
                "rounded weights. Load the pipeline with dtype='fp32' to save it as stored (or dtype='bf16' to save a "
                "bf16 copy on purpose)")
        with fused_adapters(*self.components.values()):
            super().save_pretrained(save_directory, *args, **kwargs)
        self.sampling_config.save_pretrained(save_directory)

    @property
    def sampling_config(self) -> SamplingConfig:
        """The sampling settings used for every ``__call__`` argument the caller leaves out: the folder's
        ``sampling_config.json``, or the defaults of :attr:`sampling_config_class`. Assign a config of that class, or
        a dict of settings (checked as the file is)."""
        if getattr(self, "_sampling_config", None) is None:
            self._sampling_config = self.sampling_config_class()
        return self._sampling_config

    @sampling_config.setter
    def sampling_config(self, config) -> None:
        if not isinstance(config, self.sampling_config_class):
            config = self.sampling_config_class.from_dict(config, "sampling_config", type(self))
        self._sampling_config = config

    @classmethod
    def call_inputs(cls) -> tuple:
        """The ``__call__`` arguments that are inputs, not sampling settings (named in the config file's errors)."""
        settings = set(cls.sampling_config_class.settings())
        return tuple(p for p in inspect.signature(cls.__call__).parameters if p != "self" and p not in settings)


#: the options the pinned diffusers' ``DiffusionPipeline.from_pretrained`` reads (a test compares them with its source)
DIFFUSERS_LOAD_OPTIONS = frozenset({
    "cache_dir", "commit_message", "create_pr", "custom_pipeline", "custom_revision", "device", "device_map",
    "disable_mmap", "dtype", "force_download", "hpu_migration", "load_connected_pipeline", "local_files_only",
    "low_cpu_mem_usage", "max_memory", "offload_folder", "offload_state_dict", "private", "provider",
    "provider_options", "proxies", "quantization_config", "repo_id", "revision", "sdp_on_bf16", "sess_options",
    "silence_dtype_warnings", "token", "torch_dtype", "trust_remote_code", "use_flashpack", "use_onnx",
    "use_safetensors", "variant"})


def check_load_options(cls, kwargs: dict) -> None:
    """An option ``from_pretrained`` would not read (diffusers only warns that it "will be ignored", so a misspelt
    ``dtpye=`` loaded in the default dtype) is an :class:`~vidgen.errors.UnknownArgumentError` naming the closest."""
    known = DIFFUSERS_LOAD_OPTIONS | {n for n in inspect.signature(cls.__init__).parameters if n != "self"}
    check_keywords(kwargs, sorted(known), f"{cls.__name__}.from_pretrained", "option",
                   "it takes diffusers' from_pretrained options and the pipeline's components")


def _mark_rounded(pipe, folder: Path) -> None:
    """Mark each component that ``dtype="auto"`` loaded in bf16 from wider stored weights (fp16 / fp32 safetensors)
    with ``_vidgen_rounded_from`` (the stored dtype), which :meth:`PretrainedMixin.save_pretrained` refuses. The mark
    sits on the module, so a pipeline built from it (``with_student``) knows too."""
    from safetensors import safe_open
    for name, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module) or not any(p.dtype == torch.bfloat16 for p in module.parameters()):
            continue
        stored = set()
        for file in (folder / name).glob("*.safetensors"):
            with safe_open(str(file), "pt") as handle:
                stored |= {handle.get_slice(key).get_dtype() for key in handle.keys()}
        wider = sorted({"F16": "fp16", "F32": "fp32", "F64": "fp64"}[d] for d in stored & {"F16", "F32", "F64"})
        if wider:
            module._vidgen_rounded_from = "/".join(wider)


def _legacy_text_tokenizer(folder: Path, kwargs: dict) -> Optional[dict]:
    """Folders that list the text tokenizer as ``text_tokenizer`` (vidgen's name for it up to 0.1) load with a
    FutureWarning: None for a folder that names it ``tokenizer``, else the keyword arguments that load it under that
    name."""
    index = folder / "model_index.json"
    if not index.is_file():
        return None
    try:
        entries = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # diffusers reports it
    spec = entries.get("text_tokenizer")
    if "tokenizer" in entries or not isinstance(spec, list):
        return None
    warnings.warn(f"{index}: the text tokenizer is listed as 'text_tokenizer'; diffusers' name is 'tokenizer' "
                  "(the old key is read until vidgen 0.3). Save the pipeline again (save_pretrained) to update the "
                  "folder", FutureWarning, stacklevel=3)
    if spec[0] is None or "tokenizer" in kwargs:
        return {}
    from transformers import AutoTokenizer
    return {"tokenizer": AutoTokenizer.from_pretrained(str(folder / "text_tokenizer"))}

"""``load_pipeline(path)``: open any saved vidgen pipeline folder without knowing its class, or a diffusers video
pipeline folder (``WanPipeline``, ``CogVideoXPipeline``, ``LTXPipeline``) as a vidgen flow pipeline
(:mod:`vidgen.pipelines.diffusers_pipeline`).

diffusers' generic ``DiffusionPipeline.from_pretrained(path)`` resolves only diffusers' own pipeline classes, so
vidgen folders are opened with their class (``MaskedVideoPipeline.from_pretrained(path)``) or with this function,
which reads ``_class_name`` from ``model_index.json``. The module paths recorded there
(``vidgen.tokenizers.vqvae``, ``vidgen.generators.masked``, ...) are kept importable for good.
"""
from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

from vidgen.errors import ConfigError, MissingWeightsError
from vidgen.precision import dtype_argument

#: a Hugging Face repo id: ``org/name``
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def pipeline_classes() -> dict:
    """Class name -> pipeline class, for every generator's pipeline (:data:`~vidgen.pipelines.PIPELINE_CLASSES`)."""
    from vidgen.pipelines.registry import PIPELINE_CLASSES
    return {cls.__name__: cls for cls in PIPELINE_CLASSES.values()}


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache, read from the environment now (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``), as ``huggingface_hub`` reads it when it is imported."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def resolve_folder(path, revision=None, cache_dir=None) -> Path:
    """``path`` as a local folder: itself if it exists, else, for a repo id such as
    ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``, its snapshot in the local Hugging Face cache (:func:`hub_cache_dir`, or
    ``cache_dir``; ``revision`` default ``main``), found offline as diffusers finds it. A repo id missing from the
    cache is a :class:`~vidgen.errors.MissingWeightsError` that says how to fetch it."""
    folder = Path(str(path)).expanduser()
    if folder.exists() or not _REPO_ID.fullmatch(str(path)):
        return folder
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hub_cache_dir()
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(str(path), revision=revision, cache_dir=str(cache), local_files_only=True))
    except Exception as err:  # huggingface_hub: LocalEntryNotFoundError, a bad revision, an unreadable cache
        raise MissingWeightsError(
            f"{path}: no such folder, and not in the local Hugging Face cache {cache} (looked up offline: "
            f"{type(err).__name__}). Fetch it on a machine with network: `huggingface-cli download {path}` (or "
            f"`hf download {path}`), then copy that machine's hub cache here and point HF_HUB_CACHE (or HF_HOME) at "
            "it, or pass the path of the downloaded folder") from err


def load_pipeline(path, **kwargs):
    """The pipeline saved in ``path``, loaded offline, with its sampling settings (``sampling_config.json``) in
    ``pipe.sampling_config``. ``path`` is a ``save_pretrained`` folder or a Hugging Face repo id already in the local
    cache (:func:`resolve_folder`; ``revision`` and ``cache_dir`` as diffusers takes them). ``dtype`` (or its
    diffusers spelling ``torch_dtype``) defaults, for vidgen's folders, to ``"auto"`` (bf16 where it pays,
    :meth:`~vidgen.pipelines.VideoPipelineBase.from_pretrained`); a diffusers folder (``WanPipeline``, ...) loads as
    its diffusers class loads it without a dtype, in fp32, so its frames are diffusers'. ``quantization_config``: a
    diffusers ``PipelineQuantizationConfig`` (``quant_mapping``), checked before loading
    (:mod:`vidgen.pipelines.quantization`; docs/memory.md). Other keyword arguments go to ``from_pretrained``."""
    path = resolve_folder(path, kwargs.pop("revision", None), kwargs.pop("cache_dir", None))
    index = path / "model_index.json"
    if not index.exists():
        raise MissingWeightsError(f"{path}: no model_index.json; expected a folder written by save_pipeline / "
                                  "save_pretrained")
    try:
        config = json.loads(index.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{index}: not valid JSON ({err})") from err
    name = config.get("_class_name")
    from vidgen.pipelines.diffusers_pipeline import NATIVE_PIPELINES, load_native_pipeline
    if name in NATIVE_PIPELINES:  # a diffusers video pipeline folder (Wan, CogVideoX, LTX-Video): diffusers' dtype
        return load_native_pipeline(path, **kwargs)
    classes = pipeline_classes()
    if name not in classes:
        raise ConfigError(f"{index}: _class_name {name!r} is not a supported video pipeline (vidgen's "
                          f"{sorted(classes)} or diffusers' {sorted(NATIVE_PIPELINES)})")
    for component, spec in config.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        if str(spec[0]).startswith("vidgen."):  # diffusers only resolves classes from modules already imported
            try:
                module = importlib.import_module(spec[0])
            except ImportError as err:
                raise ConfigError(f"{index}: component {component!r} names module {spec[0]!r}, which vidgen does not "
                                  f"have ({err})") from err
            if not isinstance(getattr(module, str(spec[1]), None), type):
                raise ConfigError(f"{index}: component {component!r} names class {spec[1]!r}, which {spec[0]} does "
                                  "not have")
        if not (path / component).is_dir():
            raise MissingWeightsError(f"{path}: component {component!r} ({spec[1]}) is listed in model_index.json "
                                      f"but its folder {path / component} is missing")
    kwargs["dtype"] = dtype_argument(kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None))
    if kwargs["dtype"] is None:
        kwargs["dtype"] = "auto"  # unlike XPipeline.from_pretrained, which loads as diffusers does (fp32)
    quantization = kwargs.pop("quantization_config", None)
    if quantization is None:
        return classes[name].from_pretrained(str(path), **kwargs)
    from vidgen.pipelines.quantization import check_quantization, quantize_components
    check_quantization(path, quantization)  # names and device before the weights load
    pipe = classes[name].from_pretrained(str(path), **kwargs)
    quantize_components(pipe, quantization, path)  # torchao's quantize_ on vidgen's own modules
    return pipe


def student_class(folder):
    """The class of the distilled transformer saved in ``folder`` (a distillation run's ``final/`` or checkpoint):
    block-causal (a Self-Forcing student) or flow, as its ``config.json`` names it."""
    from vidgen.generators import CausalFlowVideoTransformer, FlowVideoTransformer
    config = Path(folder) / "config.json"
    if not config.is_file():
        raise ConfigError(f"{folder}: no config.json; pass a distillation run's final/ or checkpoints/step_*")
    name = json.loads(config.read_text()).get("_class_name")
    classes = {alias: cls for cls in (CausalFlowVideoTransformer, FlowVideoTransformer)
               for alias in (cls.__name__, *getattr(cls, "former_class_names", ()))}
    if name not in classes:
        raise ConfigError(f"{config}: _class_name {name!r} is not a distilled transformer (one of {sorted(classes)})")
    return classes[name]


def with_student(teacher_pipe, student):
    """``teacher_pipe`` with the distilled ``student`` as its transformer: a block-causal student in a
    ``CausalVideoPipeline`` on the teacher's VAE and text components, a flow student in the teacher's own class."""
    from vidgen.generators import CausalFlowVideoTransformer
    from vidgen.pipelines.causal import CausalVideoPipeline
    if isinstance(student, CausalFlowVideoTransformer):
        return CausalVideoPipeline.from_teacher(teacher_pipe, student)
    return teacher_pipe.with_student(student)

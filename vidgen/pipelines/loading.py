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
from pathlib import Path

from vidgen.errors import ConfigError, MissingWeightsError


def pipeline_classes() -> dict:
    """Class name -> pipeline class, for every generator's pipeline (:data:`~vidgen.pipelines.PIPELINE_CLASSES`)."""
    from vidgen.pipelines.registry import PIPELINE_CLASSES
    return {cls.__name__: cls for cls in PIPELINE_CLASSES.values()}


def load_pipeline(path, **kwargs):
    """The pipeline saved in ``path`` (a ``save_pretrained`` folder), loaded offline, with its sampling settings
    (``sampling_config.json``) in ``pipe.sampling_config``. ``dtype`` defaults to ``"auto"`` (bf16 where it pays,
    :meth:`~vidgen.pipelines.VideoPipelineBase.from_pretrained`); other keyword arguments go to ``from_pretrained``."""
    path = Path(path)
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
    if name in NATIVE_PIPELINES:  # a diffusers video pipeline folder (Wan, CogVideoX, LTX-Video)
        kwargs.setdefault("dtype", "auto")
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
    if "dtype" not in kwargs and "torch_dtype" not in kwargs:
        kwargs["dtype"] = "auto"  # unlike XPipeline.from_pretrained, which loads as diffusers does (fp32)
    return classes[name].from_pretrained(str(path), **kwargs)


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

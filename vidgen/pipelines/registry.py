"""The pipeline-facing registries.

* :data:`PIPELINE_CLASSES`: generator name (those of :data:`vidgen.generators.GENERATORS`) -> its pipeline class;
  every generator has one, so a folder of any of them loads (:func:`~vidgen.pipelines.load_pipeline`).
* :data:`PIPELINE_REGISTRY`: the shipped pipelines, by name -> :class:`PipelineSpec` (its generator and its folder
  under ``pretrained/``). The command line (``vidgen generate --pipeline masked``), the demo and
  ``eval/bench_pipelines.py`` look pipelines up here, so a name means the same thing everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vidgen.errors import ConfigError
from vidgen.pipelines.autoregressive import AutoregressiveVideoPipeline
from vidgen.pipelines.base import VideoPipelineBase
from vidgen.pipelines.causal import CausalVideoPipeline
from vidgen.pipelines.flow import FlowVideoPipeline
from vidgen.pipelines.masked import MaskedVideoPipeline

#: generator name -> the pipeline that samples it
PIPELINE_CLASSES: dict[str, type[VideoPipelineBase]] = {
    "masked": MaskedVideoPipeline,
    "flow": FlowVideoPipeline,
    "autoregressive": AutoregressiveVideoPipeline,
    "causal": CausalVideoPipeline,
}


@dataclass(frozen=True)
class PipelineSpec:
    """``name``: the shipped pipeline's name; ``folder``: its folder under ``pretrained/``; ``generator``: the
    generator it samples (default: its name)."""

    name: str
    folder: str
    generator: str = ""

    def __post_init__(self):
        object.__setattr__(self, "generator", self.generator or self.name)

    @property
    def pipeline_class(self) -> type[VideoPipelineBase]:
        return PIPELINE_CLASSES[self.generator]


#: shipped pipeline name -> :class:`PipelineSpec`
PIPELINE_REGISTRY: dict[str, PipelineSpec] = {
    spec.name: spec for spec in (
        PipelineSpec("masked", "shapes-masked"),
        PipelineSpec("flow", "shapes-flow"),
        PipelineSpec("autoregressive", "shapes-autoregressive"),
        PipelineSpec("flow-distilled", "shapes-flow-distilled", generator="flow"),  # shapes-flow in 2 steps
        PipelineSpec("causal", "shapes-causal"),  # block-causal, streamed chunk by chunk
    )
}

def pipeline_spec(name: str) -> PipelineSpec:
    if name not in PIPELINE_REGISTRY:
        raise ConfigError(f"pipeline {name!r} is unknown; choose from {sorted(PIPELINE_REGISTRY)}")
    return PIPELINE_REGISTRY[name]


def shipped_folder(name: str, root="pretrained") -> Path:
    """The shipped folder of pipeline ``name`` under ``root`` (``pretrained/shapes-masked`` for ``masked``)."""
    return Path(root) / pipeline_spec(name).folder

"""The pipeline-facing registry: one name per generator -> its pipeline class and its shipped folder.

The names are those of :data:`vidgen.generators.GENERATORS` (``masked``, ``flow``, ``autoregressive``); the
command line (``vidgen generate --pipeline masked``), the demo and ``eval/bench_pipelines.py`` look pipelines up
here, so a name means the same thing everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vidgen.errors import ConfigError
from vidgen.pipelines.autoregressive import AutoregressiveVideoPipeline
from vidgen.pipelines.base import VideoPipelineBase
from vidgen.pipelines.flow import FlowVideoPipeline
from vidgen.pipelines.masked import MaskedVideoPipeline


@dataclass(frozen=True)
class PipelineSpec:
    """``name``: the generator name; ``pipeline_class``: its pipeline; ``folder``: the shipped folder's name under
    ``pretrained/``."""

    name: str
    pipeline_class: type[VideoPipelineBase]
    folder: str


#: generator name -> :class:`PipelineSpec`
PIPELINE_REGISTRY: dict[str, PipelineSpec] = {
    spec.name: spec for spec in (
        PipelineSpec("masked", MaskedVideoPipeline, "shapes-masked"),
        PipelineSpec("flow", FlowVideoPipeline, "shapes-flow"),
        PipelineSpec("autoregressive", AutoregressiveVideoPipeline, "shapes-autoregressive"),
    )
}


def pipeline_spec(name: str) -> PipelineSpec:
    if name not in PIPELINE_REGISTRY:
        raise ConfigError(f"pipeline {name!r} is unknown; choose from {sorted(PIPELINE_REGISTRY)}")
    return PIPELINE_REGISTRY[name]


def shipped_folder(name: str, root="pretrained") -> Path:
    """The shipped folder of pipeline ``name`` under ``root`` (``pretrained/shapes-masked`` for ``masked``)."""
    return Path(root) / pipeline_spec(name).folder

"""diffusers-style video pipelines: ``MaskedVideoPipeline``, ``FlowVideoPipeline``, ``AutoregressiveVideoPipeline``.

    pipe = load_pipeline("pretrained/shapes-masked")     # or MaskedVideoPipeline.from_pretrained(...)
    frames = pipe("a red circle moving left on a black background", num_frames=17,
                  generator=torch.Generator().manual_seed(0)).frames   # (1, 17, 64, 64, 3) in [0, 1]

Sampling settings the call leaves out come from the folder's ``sampling_config.json`` (``pipe.sampling_config``).
"""
from vidgen.pipelines.autoregressive import AutoregressiveVideoPipeline
from vidgen.pipelines.base import VideoPipelineBase
from vidgen.pipelines.causal import CausalVideoPipeline
from vidgen.pipelines.conditions import first_chunk_latents
from vidgen.pipelines.inputs import OUTPUT_TYPES
from vidgen.pipelines.diffusers_pipeline import DiffusersVideoPipeline
from vidgen.pipelines.flow import FlowVideoPipeline
from vidgen.pipelines.loading import load_pipeline, pipeline_classes, with_student
from vidgen.pipelines.masked import MaskedVideoPipeline
from vidgen.pipelines.output import VideoPipelineOutput
from vidgen.pipelines.registry import (PIPELINE_CLASSES, PIPELINE_REGISTRY, PipelineSpec, pipeline_spec,
                                      shipped_folder)
from vidgen.generators.sampling_config import SAMPLING_CONFIG_NAME

__all__ = [
    "DiffusersVideoPipeline",
    "OUTPUT_TYPES",
    "PIPELINE_CLASSES",
    "PIPELINE_REGISTRY",
    "CausalVideoPipeline",
    "SAMPLING_CONFIG_NAME",
    "AutoregressiveVideoPipeline",
    "FlowVideoPipeline",
    "MaskedVideoPipeline",
    "PipelineSpec",
    "VideoPipelineBase",
    "VideoPipelineOutput",
    "first_chunk_latents",
    "load_pipeline",
    "pipeline_classes",
    "pipeline_spec",
    "shipped_folder",
    "with_student",
]

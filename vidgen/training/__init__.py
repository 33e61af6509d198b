"""Tokenizer and generator training: one accelerate loop (:mod:`vidgen.training.trainer`) with a step per kind,
losses, 3D PatchGAN discriminator, EMA, atomic checkpoints."""
from vidgen.training.config import (
    DataConfig,
    GeneratorTrainConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    load_config,
)
from vidgen.training.generator_task import train_generator
from vidgen.training.shards import encode_dataset
from vidgen.training.tokenizer_task import MODEL_BUILDERS, build_model, train
from vidgen.training.trainer import StepOutput, TrainingTask, run_status, run_training

__all__ = [
    "DataConfig",
    "GeneratorTrainConfig",
    "LossConfig",
    "MODEL_BUILDERS",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "StepOutput",
    "TrainConfig",
    "TrainingTask",
    "build_model",
    "encode_dataset",
    "load_config",
    "run_status",
    "run_training",
    "train",
    "train_generator",
]

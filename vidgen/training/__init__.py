"""Tokenizer and generator training: one accelerate loop (:mod:`vidgen.training.engine`) with a step per kind,
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
from vidgen.training.engine import StepOutput, TrainingTask, run_training
from vidgen.training.generator_loop import train_generator
from vidgen.training.loop import MODEL_BUILDERS, build_model, train

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
    "load_config",
    "run_training",
    "train",
    "train_generator",
]

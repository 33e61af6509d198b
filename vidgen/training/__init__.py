"""Tokenizer and generator training: accelerate loop, losses, 3D PatchGAN discriminator, EMA, atomic checkpoints."""
from vidgen.training.config import (
    DataConfig,
    GeneratorTrainConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    load_config,
)
from vidgen.training.generator_loop import train_generator
from vidgen.training.loop import MODEL_BUILDERS, build_model, train

__all__ = [
    "DataConfig",
    "GeneratorTrainConfig",
    "LossConfig",
    "MODEL_BUILDERS",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "build_model",
    "load_config",
    "train",
    "train_generator",
]

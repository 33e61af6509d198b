"""Tokenizer training: accelerate loop, losses, 3D PatchGAN discriminator, EMA, atomic checkpoints."""
from vidgen.training.config import DataConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig, load_config
from vidgen.training.loop import MODEL_BUILDERS, build_model, train

__all__ = [
    "DataConfig",
    "LossConfig",
    "MODEL_BUILDERS",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "build_model",
    "load_config",
    "train",
]

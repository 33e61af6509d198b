"""Typed training configuration: YAML/JSON file + ``key.sub=value`` command-line overrides."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vidgen.errors import ConfigError


@dataclass
class ModelConfig:
    kind: str = "vae"  # key of vidgen.training.loop.MODEL_BUILDERS
    preset: str = "small"
    overrides: dict = field(default_factory=dict)  # constructor kwargs on top of the preset


@dataclass
class DataConfig:
    dataset: str = "natural"  # "natural" (built-in NaturalClips) or "folder" (VideoFolder at root)
    root: str = ""
    num_frames: int = 9
    size: int = 64
    crop: int = 0  # random square crop of this size (0 = none)
    num_clips: int = 1024  # NaturalClips: distinct clips rendered (cached as uint8 after first use)
    video_batch: int = 4
    image_batch: int = 8  # images are 1-frame videos (random frames of other clips)
    image_weight: float = 1.0
    eval_clips: int = 16
    eval_frames: int = 17


@dataclass
class LossConfig:
    l1: float = 1.0
    l2: float = 0.0
    perceptual: float = 0.1
    perceptual_kind: str = "auto"  # vidgen.metrics.perceptual.load_perceptual(kind); "none" disables
    perceptual_frames: int = 2
    gan: float = 0.1
    gan_start: int = 2000
    adaptive_gan: bool = True
    disc_channels: int = 32
    disc_layers: int = 3


@dataclass
class OptimConfig:
    lr: float = 5e-4
    disc_lr: float = 2e-4
    betas: tuple = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    run_dir: str = "runs/tokenizer"
    steps: int = 2000
    seed: int = 0
    threads: int = 1
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (accelerate; fp16 needs a GPU)
    ema_decay: float = 0.0  # 0 disables EMA
    log_every: int = 20
    sample_every: int = 500
    eval_every: int = 500
    ckpt_every: int = 250
    keep_checkpoints: int = 2
    resume: str = "auto"  # "auto" | "" | path to a checkpoint folder
    stats_clips: int = 32  # clips used for scaling_factor / shift_factor at the end
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {where + key!r}; valid: {sorted(fields)}")
        sub = fields[key].default_factory if dataclasses.is_dataclass(fields[key].default_factory) else None
        kwargs[key] = _build(sub, value, f"{where}{key}.") if sub is not None else value
    return cls(**kwargs)


def _set(tree: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = yaml.safe_load(raw)


def load_config(path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read ``path`` (YAML or JSON) then apply ``["a.b=value", ...]`` overrides (values parsed as YAML)."""
    tree: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        tree = (json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())) or {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        _set(tree, key.strip(), raw)
    return _build(TrainConfig, tree, "")

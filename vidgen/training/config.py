"""Typed training configuration: YAML/JSON file + ``key.sub=value`` command-line overrides.

Old configs keep working where a key was renamed (``tokenizer`` -> ``video_tokenizer``, ``generator: diffusion`` ->
``flow``: a FutureWarning names the fix and the version that stops reading the old spelling); keys of experiments
that have left the library raise a ConfigError saying where they went, instead of the generic "unknown key".

Every number of a run's configuration, nested sections included, is range-checked when the configuration is built
(:func:`check_ranges`), so a bad value is refused before a run writes anything: an int setting takes a whole number,
a float setting a finite number, and each lies in its class's ``_ranges`` entry or, when it has none, is >= 0.
"""
from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vidgen.errors import ConfigError
from vidgen.precision import normalize_precision
from vidgen.training.optimizers import check_optimizer
from vidgen.training.repa import RepaConfig
from vidgen.training.routing import RoutingConfig


#: where a removed experiment key or value went (the ConfigError for an old config names it)
EXPERIMENTS_MOVED = "it was an experiment flag, removed from the library (see experiments/README.md)"
#: the vidgen version that stops reading deprecated config keys
DEPRECATED_KEYS_REMOVED_IN = "0.3"


@dataclass
class ModelConfig:
    kind: str = "vae"  # key of vidgen.training.tokenizer_task.MODEL_BUILDERS
    preset: str = "small"  # a key of vidgen.tokenizers.VAE_PRESETS (the model size)
    overrides: dict = field(default_factory=dict)  # constructor kwargs on top of the preset


@dataclass
class DataConfig:
    dataset: str = "natural"  # "natural" (NaturalClips), "scenes" (SceneClips), "shapes" (ShapesDataset) or "folder"
    root: str = ""  # folder: the video folder
    num_frames: int = 9  # frames per training clip
    size: int = 64  # clips rendered / resized to size x size pixels
    crop: int = 0  # random square crop of this size (0 = none)
    color_aug: float = 0.0  # probability that a clip gets a random hue rotation, saturation and channel gains
    # probability that a clip is area-downscaled 2x before the crop, so clips rendered at 2x size train both scales,
    # i.e. both pixel speeds of the same motion (a VAE trained at one scale reconstructs faster motion worse)
    zoom_aug: float = 0.0
    num_clips: int = 1024  # NaturalClips: distinct clips rendered (cached as uint8 after first use)
    render_workers: int = 0  # > 0: render every clip up front in this many processes a node (0: each on first use)
    video_batch: int = 4  # clips per step
    image_batch: int = 8  # images are 1-frame videos (random frames of other clips)
    image_weight: float = 1.0  # the images' loss weight against the clips'
    eval_clips: int = 16  # held-out clips reconstructed every eval_every steps (val split where the data has one)
    eval_frames: int = 17  # their length in frames
    _ranges = {"num_frames": (1, None), "size": (1, None), "color_aug": (0, 1), "zoom_aug": (0, 1),
               "num_clips": (1, None), "eval_clips": (1, None), "eval_frames": (1, None)}

    def __post_init__(self):
        if not 0.0 <= float(self.color_aug) <= 1.0:
            raise ConfigError(f"data.color_aug is a probability in [0, 1], got {self.color_aug!r}")
        if not 0.0 <= float(self.zoom_aug) <= 1.0:
            raise ConfigError(f"data.zoom_aug is a probability in [0, 1], got {self.zoom_aug!r}")
        if isinstance(self.render_workers, bool) or not isinstance(self.render_workers, int) or self.render_workers < 0:
            raise ConfigError(f"data.render_workers is a number of processes (0 renders each clip on first use), "
                              f"got {self.render_workers!r}")
        if self.video_batch == 0 and self.image_batch == 0:
            raise ConfigError("data.video_batch and data.image_batch are both 0: a step would see no clip; set either "
                              "to 1 or more")


@dataclass
class LossConfig:
    l1: float = 1.0  # reconstruction L1 weight
    l2: float = 0.0  # reconstruction L2 weight
    perceptual: float = 0.1  # perceptual distance weight (LPIPS or ST-LPIPS, perceptual_kind)
    perceptual_kind: str = "auto"  # vidgen.metrics.perceptual.load_perceptual(kind); "none" disables
    perceptual_frames: int = 2  # random frames per clip the perceptual distance sees
    # L1 between the frame-to-frame differences of the reconstruction and of the input: flicker costs directly (a
    # still shape decoded with a 4-frame periodic wobble scored as rotating, eval/tokenizer_ceiling.py)
    temporal: float = 0.0
    # L1 between the neighbour differences (image gradients) of the reconstruction and of the input: weighs edges,
    # where a shape's corners and its orientation are (the FSQ round trip returns stars and hexagons as blobs)
    spatial: float = 0.0
    gan: float = 0.1  # the 3D PatchGAN term's weight (0: no discriminator)
    gan_start: int = 2000  # the step the GAN term starts
    adaptive_gan: bool = True  # scale it by the ratio of the reconstruction and GAN gradients at the last layer
    disc_channels: int = 32  # the discriminator's first width
    disc_layers: int = 3  # its downsampling layers
    _ranges = {"perceptual_frames": (1, None), "disc_channels": (1, None), "disc_layers": (1, None)}


@dataclass
class OptimConfig:
    lr: float = 5e-4  # peak learning rate (AdamW)
    disc_lr: float = 2e-4  # the discriminator's
    betas: tuple = (0.9, 0.99)  # AdamW's
    weight_decay: float = 0.0  # AdamW's
    warmup_steps: int = 200  # linear warm-up to lr
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio at the last step
    grad_clip: float = 1.0  # gradient norm clip
    # the step the cosine reaches its floor; 0 = ``steps``. Larger than ``steps`` stops a run part-way down its
    # schedule, so a recipe can reproduce a run that was stopped early (its weights are what the next stage starts from)
    schedule_steps: int = 0
    # "adamw", or "muon": Muon (torch.optim.Muon) for the backbone blocks' hidden matrices, AdamW for the rest, one LR
    # schedule for both (vidgen.training.optimizers; muon_adjust_lr: torch's adjust_lr_fn, e.g. match_rms_adamw)
    optimizer: str = "adamw"
    muon_lr: float = 0.02  # muon: Muon's peak learning rate
    muon_momentum: float = 0.95  # muon: its momentum
    muon_weight_decay: float = 0.0  # muon: its weight decay
    muon_adjust_lr: str = "original"  # muon: torch.optim.Muon's adjust_lr_fn
    _ranges = {"lr": (0, None, "above"), "disc_lr": (0, None, "above"), "min_lr_ratio": (0, 1),
               "grad_clip": (0, None, "above"), "muon_lr": (0, None, "above"), "muon_momentum": (0, 1, "below")}

    def __post_init__(self):
        check_optimizer(self)
        betas = self.betas
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2
                and all(_real(b) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1) (Adam's decay rates), got {betas!r}")
        self.betas = tuple(betas)


@dataclass
class RunConfig:
    """What the shared training loop (:mod:`vidgen.training.trainer`) reads, whatever is trained."""

    run_dir: str = "runs/run"  # checkpoints, logs, samples and final/ (the trained folder)
    steps: int = 2000  # optimizer steps of the run
    # > 0: stop once this segment's steps have taken this many minutes (checkpoint and final/ as at a last step; the
    # LR schedule still runs over ``steps``): a recipe cut to a time budget, e.g. to compare options at equal time
    max_train_minutes: float = 0.0
    seed: int = 0  # every random draw of the run: per step, so a resumed run is bit-identical
    threads: int = 1  # CPU threads per process
    precision: str = "auto"  # "auto" | "fp32" | "bf16" (vidgen.precision); bf16 = autocast over fp32 master weights
    mixed_precision: object = None  # accelerate's name for precision ("no" = fp32): accepted as an alias
    compile: bool = False  # torch.compile (inductor) the training step's model; the first step includes compiling
    deterministic: bool = False  # GPU: deterministic kernels only (vidgen.rng.enable_deterministic); CPU already is
    ema_decay: float = 0.0  # 0 disables EMA
    log_every: int = 20  # steps between log lines
    sample_every: int = 500  # steps between sample videos / reconstructions written under run_dir/samples
    ckpt_every: int = 250  # steps between checkpoints (run_dir/step_N)
    keep_checkpoints: int = 2  # the newest N (0: all); keep_every=K also keeps every step that is a multiple of K
    keep_every: int = 0  # 0: none kept beyond keep_checkpoints
    resume: str = "auto"  # "auto" (run_dir's latest) | "" (a new run: run_dir has no checkpoints) | a checkpoint
    # a saved model folder of the same kind to start from (fresh optimizer and schedule): a later training stage
    init_from: str = ""
    # processes that share each clip's tokens (sequence parallelism, vidgen.parallel): world = data-parallel x sp_size
    sp_size: int = 1
    # a portable checkpoint, committed to git so the run continues on another machine (vidgen.training.portable):
    # model + EMA weights in bf16 (at most 16 MB) and a JSON record, replaced in place every portable_every steps
    # (0 = every ckpt_every). A run without a checkpoint in run_dir continues from it, warming the LR up again over
    # portable_warmup steps (the optimizer's moments are not in it)
    portable_dir: str = ""
    portable_every: int = 0  # steps between portable checkpoints (0 = every ckpt_every)
    portable_warmup: int = 50  # LR warm-up steps of a continuation from the portable checkpoint
    portable_ema: bool = True  # false: the weights alone (too large for both); the EMA restarts, its decay warmed up
    optim: OptimConfig = field(default_factory=OptimConfig)
    _ranges = {"steps": (1, None), "seed": (None, None), "threads": (1, None), "ema_decay": (0, 1, "below"),
               "log_every": (1, None), "ckpt_every": (1, None), "sp_size": (1, None)}

    def __post_init__(self):
        _settle_precision(self)
        from vidgen.parallel.groups import check_sp_size
        check_sp_size(self.sp_size)
        check_ranges(self)
        if self.optim.schedule_steps and self.optim.schedule_steps < self.steps:
            raise ConfigError(f"optim.schedule_steps={self.optim.schedule_steps} is below steps={self.steps}: the "
                              "schedule would end before the run; set it >= steps, or 0 to end with the run")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainConfig(RunConfig):
    """A tokenizer training run (``tokenizers/train_tokenizer.py``)."""

    run_dir: str = "runs/tokenizer"
    eval_every: int = 500  # steps between reconstruction metrics on eval_clips
    # "all" or "decoder": decoder-only fine-tuning keeps the encoder, bottleneck and latent statistics of init_from
    # exactly, so latents / token ids (and every generator trained on them) stay valid while the decoding improves
    trainable: str = "all"
    stats_clips: int = 32  # clips used for scaling_factor / shift_factor at the end
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    _ranges = {"stats_clips": (1, None)}

    def __post_init__(self):
        super().__post_init__()
        if self.trainable not in ("all", "decoder"):
            raise ConfigError(f"trainable must be 'all' or 'decoder', got {self.trainable!r}")
        if self.trainable == "decoder" and not self.init_from:
            raise ConfigError("trainable=decoder fine-tunes a trained tokenizer's decoder: set init_from to its folder")


@dataclass
class GeneratorModelConfig:
    generator: str = "masked"  # key of vidgen.generators.GENERATORS: masked | flow | autoregressive | causal
    preset: str = "small"  # vidgen.generators.GENERATOR_PRESETS
    overrides: dict = field(default_factory=dict)  # generator kwargs and backbone keys on top of the preset

    def __post_init__(self):
        from vidgen.generators import generator_name
        self.generator = generator_name(self.generator, "model.generator")


@dataclass
class GeneratorDataConfig:
    # "shapes" (built-in captioned ShapesDataset), "folder" (VideoFolder at root; both pre-encoded into cache_dir) or
    # "shards" (a dataset written by `vidgen data encode` at root, read as training goes: docs/scale.md)
    dataset: str = "shapes"
    root: str = ""  # folder / shards: where the videos or the shard dataset are
    buckets: list = field(default_factory=list)  # shards: "FxHxW" or {shape, batch, weight} entries (default: all)
    split: str = "train"  # shapes: the split (test holds out 8 colour x motion pairs)
    num_frames: int = 17  # frames per training clip
    size: int = 64  # clips at size x size pixels
    num_clips: int = 2048  # shapes: items rendered and pre-encoded once (cached on disk)
    wrap: bool | str = False  # shapes: True / "torus" / "torus-late" (vidgen.data.shapes.render_shape_video)
    motion_frames: int | None = None  # shapes: motion at the speed of a clip this long (None: num_frames)
    batch: int = 8  # clips per step
    conditioning: str = "text"  # "text" (captions through the text encoder), "class" (shapes) or "none"
    text_encoder: str = ""  # "" = offline all-MiniLM-L6-v2; or a folder / cached hub name
    max_text_tokens: int = 16  # caption tokens kept
    encode_batch: int = 16  # clips per batch when pre-encoding
    cache_dir: str = ".cache/vidgen/encoded"  # the pre-encoded clips, keyed by data and tokenizer
    _removed = ("caption_repeats", "foreground_weight")
    _ranges = {"num_frames": (1, None), "size": (1, None), "num_clips": (1, None), "batch": (1, None),
               "max_text_tokens": (1, None), "encode_batch": (1, None)}


@dataclass
class SampleConfig:
    prompts: list = field(default_factory=lambda: ["a red circle moving right on a black background",
                                                   "a blue square moving up on a gray background"])
    num_inference_steps: int = 0  # 0 = the generator's default
    guidance_scale: float = 3.0  # classifier-free guidance of the samples
    seed: int = 0  # the samples' seed
    _ranges = {"seed": (None, None)}


@dataclass
class GeneratorTrainConfig(RunConfig):
    """A generator training run (``pipelines/train_generator.py``) on a trained video tokenizer."""

    run_dir: str = "runs/generator"
    video_tokenizer: str = ""  # saved CausalVAE or diffusers video VAE (flow), CausalVQVAE (masked, autoregressive)
    model: GeneratorModelConfig = field(default_factory=GeneratorModelConfig)
    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)  # token routing in training (off at ratio 0)
    repa: RepaConfig = field(default_factory=RepaConfig)  # representation alignment (off at weight 0)
    # block-causal models: the share of clips whose first chunks come from another clip of the batch (a prompt
    # switch in training: the caption, not the context, decides what follows); the loss covers their own chunks
    context_swap: float = 0.0
    _renamed = {"tokenizer": "video_tokenizer"}
    _ranges = {"context_swap": (0, 1)}


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _range_text(low, high, open_end) -> str:
    parts = [f"> {low}" if open_end == "above" else f">= {low}"] if low is not None else []
    parts += [f"< {high}" if open_end == "below" else f"<= {high}"] if high is not None else []
    return " and ".join(parts) or "any value"


def check_ranges(cfg, where: str = "") -> None:
    """Refuse any int or float setting of ``cfg`` (a config dataclass) and of its nested sections that is not a number
    of the field's kind or lies outside its range: ``_ranges[name] = (low, high[, "above" | "below"])`` gathered over
    the class hierarchy (None: unbounded; "above": low itself excluded, "below": high itself excluded), else >= 0;
    a ``bool`` setting that is not true or false; a ``list`` setting that is not a list."""
    ranges: dict = {}
    for klass in reversed(type(cfg).__mro__):
        ranges.update(vars(klass).get("_ranges", {}))
    for f in dataclasses.fields(cfg):
        value, name = getattr(cfg, f.name), where + f.name
        if dataclasses.is_dataclass(value):
            check_ranges(value, name + ".")
            continue
        if f.type in ("bool", "list") and not isinstance(value, bool if f.type == "bool" else (list, tuple)):
            raise ConfigError(f"{name} must be {'true or false' if f.type == 'bool' else 'a list ([a, b] in YAML)'}, "
                              f"got {value!r}")
        kind = type(f.default) if f.default is not dataclasses.MISSING else None
        if kind not in (int, float):
            continue
        low, high, *open_end = ranges.get(f.name, (0, None))
        open_end = open_end[0] if open_end else None
        wanted = ("a whole number" if kind is int else "a number") + (
            "" if low is None and high is None else " " + _range_text(low, high, open_end))
        ok = _real(value) and (kind is float or isinstance(value, int))
        if ok and low is not None:
            ok = value > low if open_end == "above" else value >= low
        if ok and high is not None:
            ok = value < high if open_end == "below" else value <= high
        if not ok:
            raise ConfigError(f"{name} must be {wanted}, got {value!r}; set it in the config file or with "
                              f"{name}=VALUE")


def _settle_precision(cfg) -> None:
    """One precision field: ``mixed_precision`` (accelerate's name, where YAML reads ``no`` as False) is folded into
    ``precision``; both set to different values is an error."""
    precision = normalize_precision(cfg.precision, "precision")
    if cfg.mixed_precision is not None:
        alias = normalize_precision(cfg.mixed_precision, "mixed_precision")
        if precision != "auto" and alias != precision:
            raise ConfigError(f"precision={cfg.precision!r} and mixed_precision={cfg.mixed_precision!r} disagree; "
                              "set only precision")
        precision = alias
    cfg.precision, cfg.mixed_precision = precision, None


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in _renamed_keys(cls, values, where).items():
        if key in getattr(cls, "_removed", ()):
            raise ConfigError(f"config key {where + key!r}: {EXPERIMENTS_MOVED}; delete it from the config")
        if key not in fields:
            raise ConfigError(f"unknown config key {where + key!r}; valid: {sorted(fields)}")
        sub = fields[key].default_factory if dataclasses.is_dataclass(fields[key].default_factory) else None
        kwargs[key] = _build(sub, value, f"{where}{key}.") if sub is not None else _coerce(fields[key], value, where)
    return cls(**kwargs)


def current_keys(values: dict, schema=None) -> dict:
    """A config's top level as written (``values``) with ``schema``'s deprecated keys (default: the generator
    config's) under their current names, warning as :func:`load_config` does: for a reader of a config file that
    does not build the whole config (e.g. ``pipelines/make_pretrained.py`` over old experiment configs)."""
    return _renamed_keys(schema or GeneratorTrainConfig, values, "")


def _renamed_keys(cls, values: dict, where: str) -> dict:
    """``values`` with the deprecated keys of ``cls`` (``_renamed``: old -> new) under their new names."""
    out = dict(values)
    for old, new in getattr(cls, "_renamed", {}).items():
        if old in out:
            if new in out:
                raise ConfigError(f"config keys {where + old!r} (deprecated) and {where + new!r} are both set; "
                                  f"keep only {where + new}")
            warnings.warn(f"config key {where + old!r} is deprecated, write {where + new} (the old key is removed in "
                          f"vidgen {DEPRECATED_KEYS_REMOVED_IN})", FutureWarning, stacklevel=4)
            out[new] = out.pop(old)
    return out


def _coerce(f, value, where: str):
    """YAML reads ``2e-3`` (no dot) as a string: numbers for numeric fields are converted, or named."""
    kind = type(f.default) if f.default is not dataclasses.MISSING else None
    if kind in (int, float) and isinstance(value, str):
        try:
            return kind(float(value)) if kind is float else int(value)
        except ValueError:
            raise ConfigError(f"{where}{f.name} must be a number, got {value!r}") from None
    return value


def _set(tree: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {k} is already set to {node!r}, not a mapping")
    try:
        node[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {dotted}={raw}: the value is not valid YAML ({err})") from err


def load_config(path: str | None = None, overrides: list[str] | None = None, schema=TrainConfig):
    """Read ``path`` (YAML or JSON) then apply ``["a.b=value", ...]`` overrides (values parsed as YAML) into
    ``schema`` (:class:`TrainConfig` for tokenizers, :class:`GeneratorTrainConfig` for generators)."""
    tree: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        try:
            tree = (json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())) or {}
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as err:
            kind = "JSON" if p.suffix == ".json" else "YAML"
            raise ConfigError(f"config file {p} is not valid {kind}: {err}") from err
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        _set(tree, key.strip(), raw)
    return _build(schema, tree, "")

"""Generator training (accelerate): masked, flow and autoregressive generators on pre-encoded tokens.

Every generator exposes ``loss(x, cond, generator) -> (loss, logs)`` on its own token space (ids or normalized
latents), so this step has no branch on the generator type. The loop around it is :mod:`vidgen.training.trainer`'s,
shared with the tokenizer trainer: typed config + overrides, seeded ``(seed, rank, step)`` randomness and a
resumable sampler (a resumed run is bit-identical), atomic checkpoints with rotation, EMA, tqdm with loss and
tokens/s, ``log.jsonl``; this module adds periodic sample videos (MP4 + PNG contact sheet) decoded by the video
tokenizer.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from accelerate import DistributedDataParallelKwargs

from vidgen.data.shards.buckets import parse_bucket
from vidgen.errors import ConfigError, MissingWeightsError
from vidgen.training.checkpoint import copy_weights
from vidgen.training.config import GeneratorTrainConfig
from vidgen.training.encode_cache import EncodedDataset, load_or_encode, shapes_class_names
from vidgen.training.optimizers import hidden_matrices
from vidgen.training.routing import check_run_routing
from vidgen.training.sequence_parallel import data_rank_world
from vidgen.training.trainer import StepOutput, TrainingTask, run_training

CONDITIONING = ("text", "class", "none")


class _LossModule(nn.Module):
    """``forward`` = the generator's loss, so DDP/FSDP see one forward per step; keywords (the run's ``sp``) are
    passed on to the loss."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, cond, generator, **kwargs):
        return self.model.loss(x, cond, generator, **kwargs)


def build_generator(cfg: GeneratorTrainConfig, text_dim: int, tokenizer):
    """The generator ``cfg.model`` names, sized by its preset and paired with ``tokenizer`` (the video tokenizer)."""
    from vidgen.generators import generator_class
    data = cfg.data
    if data.conditioning not in CONDITIONING:
        raise ConfigError(f"data.conditioning must be one of {CONDITIONING}, got {data.conditioning!r}")
    cond_kw = {}
    if data.conditioning == "text":
        cond_kw = dict(text_dim=text_dim, max_text_tokens=data.max_text_tokens)
    elif data.conditioning == "class":
        cond_kw = dict(num_classes=len(shapes_class_names()))
    cls = generator_class(cfg.model.generator)
    pairing = cls.tokenizer_kwargs(tokenizer)  # raises if the tokenizer is the wrong kind
    return cls.from_preset(cfg.model.preset, **{**pairing, **cond_kw, **cfg.model.overrides})


def generator_of_folder(folder: str, default):
    """The generator saved in ``folder``, as the class its ``config.json`` names (``default`` if it names none of
    vidgen's generators)."""
    import json
    from vidgen.generators import GENERATORS
    config = Path(folder) / "config.json"
    name = json.loads(config.read_text()).get("_class_name") if config.is_file() else None
    classes = {cls.__name__: cls for cls in GENERATORS.values()}
    return classes.get(name, default).from_pretrained(folder)


def _text_dim(cfg: GeneratorTrainConfig) -> int:
    if cfg.data.conditioning != "text":
        return 0
    from transformers import AutoConfig
    from vidgen.text import resolve_text_encoder
    return AutoConfig.from_pretrained(resolve_text_encoder(cfg.data.text_encoder or None)).hidden_size


@torch.no_grad()
def sample_conditioning(cfg: GeneratorTrainConfig):
    """(prompts, Conditioning or None) for the periodic samples; encoded once per run, not at every sample step."""
    from vidgen.generators import Conditioning
    prompts = list(cfg.sample.prompts) or [""]
    if cfg.data.conditioning == "text":
        from vidgen.text import encode_prompts, load_text_encoder
        emb = encode_prompts(*load_text_encoder(cfg.data.text_encoder or None), prompts, cfg.data.max_text_tokens)
        return prompts, Conditioning(emb.hidden, emb.mask, emb.pooled)
    if cfg.data.conditioning == "class":
        names = {n: i for i, n in enumerate(shapes_class_names())}
        return prompts, Conditioning(class_labels=torch.tensor([names.get(p, 0) for p in prompts]))
    return prompts, None


@torch.no_grad()
def save_generated_samples(model, tokenizer, cfg: GeneratorTrainConfig, grid, prompts, cond, out_dir: Path,
                           step: int, pixels=None, sample=None) -> None:
    """Generate one video per sample prompt with the ``sample`` settings (default ``cfg.sample``), decode it to
    ``pixels`` = (frames, height, width) (default the data config's), write ``step_X.mp4`` and ``step_X.png``."""
    from vidgen.io import contact_sheet, save_image, write_video
    sample = sample or cfg.sample
    was_training = model.training
    model.eval()
    kw = {"num_inference_steps": sample.num_inference_steps} if sample.num_inference_steps else {}
    x = model.sample(grid, len(prompts), cond, guidance_scale=sample.guidance_scale,
                     generator=torch.Generator().manual_seed(sample.seed), **kw)
    model.train(was_training)
    frames, height, width = pixels or (cfg.data.num_frames, cfg.data.size, cfg.data.size)
    videos = model.decode_videos(tokenizer, x, frames, height, width).float().clamp(-1, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_video(out_dir / f"step_{step:08d}.mp4", torch.cat(list(videos), dim=-1), fps=8.0)
    save_image(out_dir / f"step_{step:08d}.png", contact_sheet(list(videos), labels=prompts))


class GeneratorTask(TrainingTask):
    """A generator's loss on a batch of pre-encoded clips and their conditioning; sample videos as a hook."""

    rate_key, rate_label, rate_format = "tokens_per_s", "tok_s", "{:.0f}"
    description = "training"

    def __init__(self, cfg: GeneratorTrainConfig, acc, log, sp=None):
        from vidgen.tokenizers import load_tokenizer
        self.cfg, self.acc = cfg, acc
        # the loss call's keywords: the run's sequence-parallel group, passed to each step's forward (never stored on
        # the model); none at sp_size 1, so a loss module without an sp argument (distillation's) takes the call too
        self.loss_kwargs = {} if sp is None else {"sp": sp}
        try:
            tokenizer = load_tokenizer(cfg.video_tokenizer)
        except MissingWeightsError as err:  # most often a recipe's tokenizer stage that has not run here
            raise MissingWeightsError(f"video_tokenizer={cfg.video_tokenizer}: {err}; train the tokenizer stage that "
                                      "writes it first, or set video_tokenizer=PATH to a saved tokenizer folder "
                                      "(a shipped pipeline's vae/ or vqvae/)") from err
        self.video_tokenizer = tokenizer = tokenizer.to(acc.device)
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        self.model = model = self.build_model(tokenizer, log)
        model.check_tokenizer(tokenizer)
        if cfg.routing.ratio:  # token routing in training, refused by name before any clip is encoded
            self.loss_kwargs["routing"] = check_run_routing(cfg, model, sp, log)
        if cfg.context_swap:
            if cfg.model.generator != "causal":
                raise ConfigError(f"context_swap={cfg.context_swap}: prompt switches in training are for the "
                                  f"block-causal generator (model.generator: causal), got {cfg.model.generator!r}; "
                                  "set context_swap: 0")
            self.loss_kwargs["context_swap"] = cfg.context_swap
        self.shards, self.pixels = None, None
        if cfg.data.dataset == "shards":  # read as training goes, batches of one bucket each
            self.shards = _open_shards(cfg, tokenizer, data_rank_world(acc, sp), log)
            counts = self.shards.dataset.counts
            grids = {n: tuple(self.shards.dataset.shapes[n][-3:]) for n in self.shards.sampler.names}
            common = max(grids, key=lambda n: (counts[n], n))  # samples are drawn at the most common bucket
            self.grid, self.pixels, num_items = grids[common], _pixels(common), len(self.shards)
        else:
            self.data: EncodedDataset = load_or_encode(model, tokenizer, cfg.data, acc, log)
            grids = {"": tuple(self.data.x.shape[-3:])}
            self.grid, num_items = grids[""], len(self.data)
        for grid in grids.values():
            model.check_token_grid(model.patch.grid(grid))
        log(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
            f"{num_items} clips, token grid{'s' if len(grids) > 1 else ''} {', '.join(map(str, grids.values()))}")
        self.params, self.num_items = list(model.parameters()), num_items
        self.repa = None
        if cfg.repa.enabled:  # representation alignment (vidgen.training.repa); nothing is built at weight 0
            from vidgen.training.repa import STATE_KEY, RepresentationAlignment
            self.repa = RepresentationAlignment(cfg, model, tokenizer, acc.device, sp, type(self).__name__, log)
            for name, grid in grids.items():
                self.repa.check_geometry(self.clip_pixels(name), grid)
            self.clipped_params = list(self.repa.projector.parameters())
            self.params += self.clipped_params
            self.extra_state = {**self.extra_state, STATE_KEY: self.repa.projector}
        self.module = self.loss_module(model)
        self.tokens_per_clip = int(torch.tensor(self.grid).prod())  # latent positions, before any patching
        self.hooks = [(cfg.sample_every, self.save_samples)]
        self.samples = None  # (prompts, conditioning), encoded at the first sample step

    def build_model(self, tokenizer, log) -> nn.Module:
        """The generator ``cfg.model`` names, started from ``cfg.init_from`` if set."""
        cfg = self.cfg
        model = build_generator(cfg, _text_dim(cfg), tokenizer)
        if cfg.init_from:  # e.g. continue a shipped model (pretrained/<name>/transformer) with a new schedule
            copy_weights(model, generator_of_folder(cfg.init_from, default=type(model)), cfg.init_from,
                         ignore=set(model.training_only_config))
            log(f"initialised from {cfg.init_from}")
        return model

    def loss_module(self, model: nn.Module) -> nn.Module:
        """The module whose ``forward(x, cond, generator[, sp=])`` is the step's loss."""
        return _LossModule(model) if self.repa is None else self.repa.loss_module(model)

    def make_sampler(self, seed: int, rank: int, world: int):
        return self.shards if self.shards is not None else super().make_sampler(seed, rank, world)

    def muon_params(self) -> list:
        """``optim.optimizer: muon``: the linear weights inside the backbone's blocks."""
        return hidden_matrices(self.model.backbone)

    def step(self, module, sampler, step, g) -> StepOutput:
        if self.shards is not None:
            bucket, x, cond = sampler.take_batch()
            cond = cond.to(self.acc.device) if cond is not None else None
            x = x.to(self.acc.device)
            with self.acc.autocast():
                loss, logs = module(x, cond, g, **self.step_kwargs(x, bucket))
            return StepOutput(loss, logs, units=x.shape[0] * int(torch.tensor(x.shape[-3:]).prod()),
                              tail_logs={"bucket": bucket})
        index = torch.tensor(sampler.take(self.cfg.data.batch))
        x = self.data.x[index].to(self.acc.device)
        cond = self.data.conditioning(index, self.cfg.data.conditioning)
        cond = cond.to(self.acc.device) if cond is not None else None  # the cache lives on the CPU
        with self.acc.autocast():
            loss, logs = module(x, cond, g, **self.step_kwargs(x, ""))
        return StepOutput(loss, logs, units=self.cfg.data.batch * self.tokens_per_clip)

    def clip_pixels(self, bucket: str) -> tuple[int, int, int]:
        """(frames, height, width) of the clips of ``bucket`` (shards), or of the pre-encoded cache (``""``)."""
        return _pixels(bucket) if self.shards is not None else (self.cfg.data.num_frames, self.cfg.data.size,
                                                                self.cfg.data.size)

    def step_kwargs(self, x, bucket: str) -> dict:
        """The loss call's keywords for the clean latents ``x``: the run's, and REPA's target features if on."""
        if self.repa is None:
            return self.loss_kwargs
        return {**self.loss_kwargs, "repa_target": self.repa.target(x, self.clip_pixels(bucket))}

    def save_samples(self, step: int, model) -> None:
        if self.samples is None:
            self.samples = sample_conditioning(self.cfg)
        save_generated_samples(model, self.video_tokenizer, self.cfg, self.grid, *self.samples,
                               Path(self.cfg.run_dir) / "samples", step, self.pixels, self.sample_settings())

    def sample_settings(self):
        """The sampling settings of the periodic samples (``cfg.sample``)."""
        return self.cfg.sample

    def finish(self, final) -> dict:
        return {"tokenizer": self.cfg.video_tokenizer}  # log.jsonl keeps its key


def _pixels(name: str) -> tuple[int, int, int]:
    b = parse_bucket(name)
    return b.frames, b.height, b.width


def _open_shards(cfg: GeneratorTrainConfig, tokenizer, rank_world: tuple[int, int], log):
    """The shard batches this data-parallel rank reads (``rank_world``: :func:`data_rank_world`)."""
    from vidgen.tokenizers import is_discrete
    from vidgen.data.shards import tokenizer_fingerprint
    from vidgen.training.shards import shard_batches
    return shard_batches(cfg.data, tokenizer_fingerprint(tokenizer), is_discrete(tokenizer), cfg.seed,
                         *rank_world, log)


def train_generator(cfg: GeneratorTrainConfig) -> dict:
    """Train, checkpoint and save ``run_dir/final`` (the generator; the video tokenizer's path is in
    ``config.yaml``)."""
    if not cfg.video_tokenizer:
        raise ConfigError("video_tokenizer: set video_tokenizer=PATH to a saved CausalVAE / CausalVQVAE folder (or, "
                          "for the flow generator, a folder of one of vidgen.tokenizers.DIFFUSERS_VIDEO_VAES)")
    # CFG dropout leaves the null embeddings unused in some steps: DDP must not wait for their gradients
    return run_training(cfg, lambda acc, log, sp: GeneratorTask(cfg, acc, log, sp),
                        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])

"""Generator training loop (accelerate): masked, diffusion and autoregressive generators on pre-encoded tokens.

Every generator exposes ``loss(x, cond, generator) -> (loss, logs)`` on its own token space (ids or normalized
latents), so this loop has no branch on the generator type. The plumbing is the tokenizer loop's: typed config +
overrides, seeded ``(seed, rank, step)`` randomness and a resumable sampler (a resumed run is bit-identical),
atomic checkpoints with rotation, EMA, tqdm with loss and tokens/s, ``log.jsonl``, and periodic sample videos
(MP4 + PNG contact sheet) decoded by the tokenizer.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn as nn
from accelerate import DistributedDataParallelKwargs
from tqdm import tqdm

from vidgen.errors import ConfigError
from vidgen.training.checkpoint import (RunLog, copy_weights, find_checkpoint, restore, save_checkpoint,
                                        training_state)
from vidgen.training.config import GeneratorTrainConfig
from vidgen.training.data import EpochSampler, repeat_by_caption, step_generator
from vidgen.training.ema import EMA
from vidgen.training.encode_cache import EncodedDataset, load_or_encode, shapes_class_names
from vidgen.training.loop import _lr_lambda, _num, optimizer_step
from vidgen.training.runtime import FirstStepTimer, compile_module, make_accelerator, torch_state

CONDITIONING = ("text", "class", "none")


class _LossModule(nn.Module):
    """``forward`` = the generator's loss, so DDP/FSDP see one forward per step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, cond, generator, weight=None):
        return self.model.loss(x, cond, generator, weight)


def build_generator(cfg: GeneratorTrainConfig, text_dim: int, tokenizer):
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
                           step: int) -> None:
    """Generate one video per sample prompt, decode it, write ``step_X.mp4`` and ``step_X.png``."""
    from vidgen.io import contact_sheet, save_image, write_video
    was_training = model.training
    model.eval()
    kw = {"num_inference_steps": cfg.sample.num_inference_steps} if cfg.sample.num_inference_steps else {}
    x = model.sample(grid, len(prompts), cond, guidance_scale=cfg.sample.guidance_scale,
                     generator=torch.Generator().manual_seed(cfg.sample.seed), **kw)
    model.train(was_training)
    videos = model.decode_videos(tokenizer, x, cfg.data.num_frames, cfg.data.size, cfg.data.size).float().clamp(-1, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_video(out_dir / f"step_{step:08d}.mp4", torch.cat(list(videos), dim=-1), fps=8.0)
    save_image(out_dir / f"step_{step:08d}.png", contact_sheet(list(videos), labels=prompts))


def train_generator(cfg: GeneratorTrainConfig) -> dict:
    """Train, checkpoint and save ``run_dir/final`` (the generator; the tokenizer path is in config.yaml)."""
    with torch_state(cfg.threads, cfg.deterministic):
        return _train_generator(cfg)


def _train_generator(cfg: GeneratorTrainConfig) -> dict:
    from vidgen.tokenizers import load_tokenizer
    # CFG dropout leaves the null embeddings unused in some steps: DDP must not wait for their gradients
    acc, chosen = make_accelerator(cfg.precision,
                                   kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    run_dir, is_main = Path(cfg.run_dir), acc.is_main_process

    log = RunLog(run_dir, is_main)

    if not cfg.tokenizer:
        raise ConfigError("tokenizer: set tokenizer=PATH to a saved CausalVAE / CausalVQVAE folder")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(json.dumps(cfg.to_dict(), indent=2))
    log(f"precision: {chosen} (precision={cfg.precision})")
    tokenizer = load_tokenizer(cfg.tokenizer).to(acc.device)
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    model = build_generator(cfg, _text_dim(cfg), tokenizer)
    if cfg.init_from:  # e.g. continue a shipped model (pretrained/<name>/transformer) with a new schedule
        copy_weights(model, type(model).from_pretrained(cfg.init_from), cfg.init_from,
                     ignore=set(model.training_only_config))
        log(f"initialised from {cfg.init_from}")
    model.check_tokenizer(tokenizer)
    data: EncodedDataset = load_or_encode(model, tokenizer, cfg.data, acc, log)
    grid = tuple(data.x.shape[-3:])
    model.backbone.check_grid(model.patch.grid(grid) if hasattr(model, "patch") else grid)
    log(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
        f"{len(data)} clips, token grid {grid}")
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                            weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    epoch = list(range(len(data)))  # an epoch lists each clip once, or as often as data.caption_repeats asks
    if cfg.data.caption_repeats:
        epoch = repeat_by_caption([data.captions[i] for i in data.caption_index.tolist()], cfg.data.caption_repeats)
        log(f"data.caption_repeats {cfg.data.caption_repeats}: {len(epoch)} draws per epoch of {len(data)} clips")
    sampler = EpochSampler(len(epoch), cfg.seed, acc.process_index, acc.num_processes)
    step = 0
    ckpt = find_checkpoint(cfg.resume, run_dir)
    if ckpt is not None:
        step = restore(ckpt, model, opt, sched, sampler, ema)
        log(f"resumed from {ckpt} at step {step}")
    # the LR schedule is not prepared: accelerate would step it once per process per step (a 2-process run would
    # decay twice as fast; tests/test_distributed_equivalence.py caught it). It counts optimizer steps.
    wrapped, opt = acc.prepare(compile_module(_LossModule(model), cfg.compile, log), opt)
    tokens_per_clip = int(torch.tensor(grid).prod())
    bar = tqdm(total=cfg.steps, initial=step, disable=not is_main, dynamic_ncols=True, desc="training")
    metrics: dict = {}
    samples = None  # (prompts, conditioning), encoded at the first sample step
    t_last, tokens_since = time.time(), 0
    first_step = FirstStepTimer(log)
    while step < cfg.steps:
        g = step_generator(cfg.seed, step, acc.process_index, acc.num_processes)
        index = torch.tensor([epoch[i] for i in sampler.take(cfg.data.batch)])
        x = data.x[index].to(acc.device)
        cond = data.conditioning(index, cfg.data.conditioning)
        weight = data.loss_weight(index, cfg.data.foreground_weight)
        with acc.autocast():
            loss, logs = wrapped(x, cond, g, None if weight is None else weight.to(acc.device))
        gnorm = optimizer_step(acc, loss, model, opt, sched, cfg.optim.grad_clip, ema)
        step += 1
        tokens_since += cfg.data.batch * tokens_per_clip * acc.num_processes
        bar.update(1)
        if first_step(step):  # throughput from here on excludes compilation and warm-up
            t_last, tokens_since = time.time(), 0
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.time() - t_last
            metrics = {"step": step, "loss": _num(loss), **logs, "grad_norm": _num(gnorm),
                       "lr": sched.get_last_lr()[0], "tokens_per_s": tokens_since / dt, "processes": acc.num_processes}
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
            log(metrics)
            t_last, tokens_since = time.time(), 0
        if is_main and cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.steps):
            if samples is None:
                samples = sample_conditioning(cfg)
            save_generated_samples(ema.copy_model(model) if ema else model, tokenizer, cfg, grid, *samples,
                                   run_dir / "samples", step)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            acc.wait_for_everyone()
            if is_main:
                state = training_state(step, opt, sched, sampler, cfg.to_dict(), ema)
                save_checkpoint(run_dir, step, model, state, cfg.keep_checkpoints)
    bar.close()
    acc.wait_for_everyone()
    if is_main:
        final = ema.copy_model(model) if ema else model
        final.save_pretrained(run_dir / "final", safe_serialization=True)
        log({"final": str(run_dir / "final"), "tokenizer": cfg.tokenizer})
    return metrics

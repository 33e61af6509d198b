"""Tokenizer training loop (accelerate): works single-process and under ``accelerate launch`` (CPU/gloo or GPU).

Any model with ``reconstruct(x, sample_posterior, generator) -> ReconstructionOutput`` (``.sample`` and
``.bottleneck.loss`` / ``.bottleneck.logs``) and ``last_decoder_layer`` trains here: the bottleneck's own loss
(KL now; commitment / entropy for quantizers) is added as is, so no branch depends on the model type.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from vidgen.errors import ConfigError, MissingWeightsError
from vidgen.training.checkpoint import (RunLog, copy_weights, find_checkpoint, restore, save_checkpoint,
                                        training_state)
from vidgen.training.config import TrainConfig
from vidgen.training.data import CachedClips, EpochSampler, joint_batch, step_generator
from vidgen.training.discriminator import PatchDiscriminator3D
from vidgen.training.ema import EMA
from vidgen.training.runtime import FirstStepTimer, compile_module, make_accelerator, torch_state
from vidgen.training.losses import (
    PerceptualLoss,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)
from vidgen.training.samples import evaluate_psnr, latent_statistics, save_samples


def _build_vae(cfg):
    from vidgen.tokenizers import CausalVAE
    return CausalVAE.from_preset(cfg.preset, **cfg.overrides)


def _build_vqvae(cfg):
    from vidgen.tokenizers import CausalVQVAE
    return CausalVQVAE.from_preset(cfg.preset, **cfg.overrides)  # overrides.quantizer picks vq/fsq/lfq/bsq


def _build_cogvideox(cfg):
    # Anchor architecture for same-recipe comparisons; preset is ignored, overrides are constructor kwargs.
    from vidgen.training.reference_models import COGVIDEOX_MATCHED, CogVideoXReferenceVAE
    return CogVideoXReferenceVAE(**{**COGVIDEOX_MATCHED, **cfg.overrides})


# model.kind -> builder(ModelConfig).
MODEL_BUILDERS = {"vae": _build_vae, "vqvae": _build_vqvae, "cogvideox": _build_cogvideox}


def build_model(cfg) -> nn.Module:
    if cfg.kind not in MODEL_BUILDERS:
        raise ConfigError(f"model.kind={cfg.kind!r} is unknown; choose from {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[cfg.kind](cfg)


def build_datasets(cfg) -> tuple:
    from vidgen.data import NaturalClips, VideoFolder
    if cfg.dataset == "natural":
        train = NaturalClips("train", num_frames=cfg.num_frames, size=cfg.size, num_clips=cfg.num_clips)
        test = NaturalClips("test", num_frames=cfg.eval_frames, size=cfg.size, num_clips=cfg.eval_clips)
        return train, test
    if cfg.dataset == "shapes":  # captioned shapes: the held-out colour x motion pairs are the test split
        from vidgen.data import ShapesDataset
        train = ShapesDataset("train", num_frames=cfg.num_frames, size=cfg.size, num_samples=cfg.num_clips)
        return train, ShapesDataset("test", num_frames=cfg.eval_frames, size=cfg.size, num_samples=cfg.eval_clips)
    if cfg.dataset == "folder":
        full = VideoFolder(cfg.root, num_frames=cfg.num_frames, size=cfg.size)
        return full, VideoFolder(cfg.root, num_frames=cfg.eval_frames, size=cfg.size)
    raise ConfigError(f"data.dataset must be 'natural', 'shapes' or 'folder', got {cfg.dataset!r}")


class _Reconstructor(nn.Module):
    """One forward for the video and the image batch, so DDP sees a single forward per step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batches: list[torch.Tensor], generator: torch.Generator):
        return [self.model.reconstruct(x, sample_posterior=True, generator=generator) for x in batches]


class _MultiDisc(nn.Module):
    def __init__(self, disc: nn.Module):
        super().__init__()
        self.disc = disc

    def forward(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        # fp32 even under mixed precision: bf16 logits of the small PatchGAN produced NaNs on CPU
        with torch.autocast(batches[0].device.type, enabled=False):
            return [self.disc(x.float()) for x in batches]


def optimizer_step(acc, loss, model, opt, sched, grad_clip: float, ema=None):
    """Backward, clip, step the optimizer and LR schedule, update the EMA; returns the gradient norm."""
    opt.zero_grad(set_to_none=True)
    acc.backward(loss)
    gnorm = acc.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    if ema is not None:
        ema.update(model)
    return gnorm


def _num(value) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _lr_lambda(cfg: TrainConfig):
    warm, total, floor = cfg.optim.warmup_steps, max(cfg.steps, 1), cfg.optim.min_lr_ratio

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


_STATISTICS = ("scaling_factor", "shift_factor", "latents_mean", "latents_std")


def init_from(model: nn.Module, folder: str, keep_statistics: bool = False) -> None:
    """Start ``model`` from the weights of a saved tokenizer of the same class and architecture (e.g. the GAN stage
    from the PSNR stage, as VidTok trains). Latent statistics are measured again at the end of the run, unless
    ``keep_statistics`` (decoder-only fine-tuning: the encoder does not change, so neither may they)."""
    from vidgen.tokenizers import load_tokenizer
    source = load_tokenizer(folder)
    copy_weights(model, source, folder, ignore=set(_STATISTICS))
    if keep_statistics:
        model.register_to_config(**{k: source.config[k] for k in _STATISTICS if k in source.config})


def freeze_all_but_decoder(model: nn.Module) -> list[nn.Parameter]:
    """Decoder-only fine-tuning: every parameter outside ``model.decoder`` stops taking gradients (so the encoder
    costs no backward); returns the trainable ones."""
    model.requires_grad_(False)
    model.decoder.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _perceptual(cfg: TrainConfig, log) -> PerceptualLoss | None:
    if cfg.loss.perceptual <= 0 or cfg.loss.perceptual_kind == "none":
        return None
    from vidgen.metrics.perceptual import load_perceptual
    try:
        dist = load_perceptual(kind=cfg.loss.perceptual_kind)
    except MissingWeightsError as err:
        raise ConfigError(f"perceptual loss requested but no weights are available ({err}); "
                          "set loss.perceptual=0 to train without it") from err
    log(f"perceptual loss: {dist.name}")
    return PerceptualLoss(dist, cfg.loss.perceptual_frames)


def train(cfg: TrainConfig) -> dict:
    """Train, checkpoint and save ``run_dir/final``; returns the last logged metrics. Threads and deterministic
    flags are set for the run and restored afterwards."""
    with torch_state(cfg.threads, cfg.deterministic):
        return _train(cfg)


def _train(cfg: TrainConfig) -> dict:
    run_dir = Path(cfg.run_dir)
    acc, chosen = make_accelerator(cfg.precision)
    is_main = acc.is_main_process
    log = RunLog(run_dir, is_main)

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(json.dumps(cfg.to_dict(), indent=2))
    log(f"precision: {chosen} (precision={cfg.precision})")
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    model = build_model(cfg.model)
    decoder_only = cfg.trainable == "decoder"
    if cfg.init_from:
        init_from(model, cfg.init_from, keep_statistics=decoder_only)
        log(f"initialised from {cfg.init_from}" + (" (decoder only is trained)" if decoder_only else ""))
    params = freeze_all_but_decoder(model) if decoder_only else list(model.parameters())
    disc = PatchDiscriminator3D(cfg.loss.disc_channels, cfg.loss.disc_layers) if cfg.loss.gan > 0 else None
    perceptual = _perceptual(cfg, log)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                            weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.optim.disc_lr, betas=(0.5, 0.9)) if disc else None

    train_set, test_set = build_datasets(cfg.data)
    clips = CachedClips(train_set)
    sampler = EpochSampler(len(clips), cfg.seed, acc.process_index, acc.num_processes)
    step = 0
    ckpt = find_checkpoint(cfg.resume, run_dir)
    if ckpt is not None:
        step = restore(ckpt, model, opt, sched, sampler, ema, {"disc": disc, "opt_d": opt_d})
        log(f"resumed from {ckpt} at step {step}")

    recon = compile_module(_Reconstructor(model), cfg.compile, log)
    # the LR schedule is not prepared: accelerate would step it once per process per step (a 2-process run would
    # decay twice as fast; tests/test_distributed_equivalence.py caught it). It counts optimizer steps.
    recon, opt = acc.prepare(recon, opt)
    multi_disc = None
    if disc is not None:
        multi_disc, opt_d = acc.prepare(_MultiDisc(disc), opt_d)
    test_videos = torch.stack([test_set[i]["video"] for i in range(min(len(test_set), cfg.data.eval_clips))])

    bar = tqdm(total=cfg.steps, initial=step, disable=not is_main, dynamic_ncols=True)
    metrics: dict = {}
    t_last, frames_since = time.time(), 0
    first_step = FirstStepTimer(log)
    while step < cfg.steps:
        g = step_generator(cfg.seed, step, acc.process_index, acc.num_processes)
        xv, xi = joint_batch(clips, sampler, cfg.data.video_batch, cfg.data.image_batch, cfg.data.crop, g,
                             cfg.data.color_aug)
        batches = [b for b in (xv, xi) if b is not None]
        weights = [1.0 if b is xv else cfg.data.image_weight for b in batches]
        gan_on = disc is not None and step >= cfg.loss.gan_start
        with acc.autocast():
            outs = recon(batches, g)
            rec = sum(w * reconstruction_loss(x, o.sample.float(), cfg.loss.l1, cfg.loss.l2, cfg.loss.temporal,
                                             cfg.loss.spatial)
                      for w, x, o in zip(weights, batches, outs))
            bott = sum(w * o.bottleneck.loss for w, o in zip(weights, outs))
            perc = sum(w * perceptual(x, o.sample, g) for w, x, o in zip(weights, batches, outs)) if perceptual else 0.0
            nll = rec + cfg.loss.perceptual * perc
            loss = nll + bott
            gan_w = torch.zeros(())
            if gan_on:
                g_loss = sum(w * hinge_g_loss(lf) for w, lf in zip(weights, multi_disc([o.sample for o in outs])))
                gan_w = cfg.loss.gan * (adaptive_gan_weight(nll, g_loss, model.last_decoder_layer,
                                                            reduce=lambda t: acc.reduce(t, "mean"))
                                        if cfg.loss.adaptive_gan else torch.ones(()))
                loss = loss + gan_w * g_loss
        gnorm = optimizer_step(acc, loss, model, opt, sched, cfg.optim.grad_clip, ema)
        d_loss = torch.zeros(())
        if gan_on:
            opt_d.zero_grad(set_to_none=True)
            with acc.autocast():
                real = multi_disc([x.detach() for x in batches])
                fake = multi_disc([o.sample.detach() for o in outs])
                d_loss = sum(w * hinge_d_loss(r, f) for w, r, f in zip(weights, real, fake))
            acc.backward(d_loss)
            acc.clip_grad_norm_(multi_disc.parameters(), cfg.optim.grad_clip)
            opt_d.step()
        step += 1
        frames_since += sum(b.shape[0] * b.shape[2] for b in batches) * acc.num_processes
        bar.update(1)
        if first_step(step):  # throughput from here on excludes compilation and warm-up
            t_last, frames_since = time.time(), 0
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.time() - t_last
            logs = {k: v for o in outs for k, v in o.bottleneck.logs.items()}
            metrics = {"step": step, "loss": _num(loss), "rec": _num(rec), "perc": _num(perc), "bottleneck": _num(bott),
                       "gan_w": _num(gan_w), "d_loss": _num(d_loss), "grad_norm": _num(gnorm),
                       "lr": sched.get_last_lr()[0], "frames_per_s": frames_since / dt, "processes": acc.num_processes,
                       **logs}
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", fps=f"{metrics['frames_per_s']:.1f}")
            log(metrics)
            t_last, frames_since = time.time(), 0
        if is_main and (step % cfg.eval_every == 0 or step == cfg.steps):
            eval_model = ema.copy_model(model) if ema else model
            log({"step": step, "eval_psnr": evaluate_psnr(eval_model, test_videos)})
        if is_main and (step % cfg.sample_every == 0 or step == cfg.steps):
            save_samples(ema.copy_model(model) if ema else model, test_videos[:2], run_dir / "samples", step)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            acc.wait_for_everyone()
            if is_main:
                state = training_state(step, opt, sched, sampler, cfg.to_dict(), ema, {"disc": disc, "opt_d": opt_d})
                save_checkpoint(run_dir, step, model, state, cfg.keep_checkpoints)
    bar.close()
    acc.wait_for_everyone()
    if is_main:
        final = ema.copy_model(model) if ema else model
        final_logs = {"final": str(run_dir / "final")}
        if "scaling_factor" in final.config and not decoder_only:  # continuous latents: statistics for generators
            shift, scale = latent_statistics(final, clips, cfg.stats_clips)
            final.register_to_config(shift_factor=shift, scaling_factor=scale)
            final_logs.update(shift_factor=shift, scaling_factor=scale)
        final.save_pretrained(run_dir / "final", safe_serialization=True)
        log(final_logs)
    return metrics

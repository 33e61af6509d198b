"""Tokenizer training (accelerate): works single-process and under ``accelerate launch`` (CPU/gloo or GPU).

Any model with ``reconstruct(x, sample_posterior, generator) -> ReconstructionOutput`` (``.sample`` and
``.bottleneck.loss`` / ``.bottleneck.logs``) and ``last_decoder_layer`` trains here: the bottleneck's own loss
(KL for the VAE; commitment / entropy for quantizers) is added as is, so no branch depends on the model type. This module
holds the tokenizer's step (reconstruction, perceptual and GAN losses, the discriminator update) and hooks; the loop
around it (optimizer, resume, EMA, checkpoints, logging) is :mod:`vidgen.training.trainer`'s.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from vidgen.errors import ConfigError, InvalidInputError, MissingWeightsError
from vidgen.families import family_named
from vidgen.training.checkpoint import copy_weights, find_checkpoint, load_state
from vidgen.training.config import EXPERIMENTS_MOVED, TrainConfig
from vidgen.training.data import CachedClips, check_folder_root, joint_batch
from vidgen.training.discriminator import PatchDiscriminator3D
from vidgen.training.losses import (
    PerceptualLoss,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)
from vidgen.training.samples import evaluate_psnr, latent_statistics, save_samples
from vidgen.training.trainer import StepOutput, TrainingTask, run_training


def _build_vae(cfg):
    from vidgen.tokenizers import CausalVAE
    return CausalVAE.from_preset(cfg.preset, **cfg.overrides)


def _build_vqvae(cfg):
    from vidgen.tokenizers import CausalVQVAE
    return CausalVQVAE.from_preset(cfg.preset, **cfg.overrides)  # overrides.quantizer picks vq/fsq/lfq/bsq


#: model.kind -> builder(ModelConfig); another architecture with ``reconstruct`` and ``last_decoder_layer`` trains
#: with this loop once its builder is registered here
MODEL_BUILDERS = {"vae": _build_vae, "vqvae": _build_vqvae}


def build_model(cfg) -> nn.Module:
    if cfg.kind not in MODEL_BUILDERS:
        if family_named(cfg.kind) is not None:  # a diffusers family's VAE, once an experiment's model.kind
            raise ConfigError(f"model.kind={cfg.kind!r}: {EXPERIMENTS_MOVED}; use model.kind: vae or vqvae")
        raise ConfigError(f"model.kind={cfg.kind!r} is unknown; choose from {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[cfg.kind](cfg)


def build_datasets(cfg) -> tuple:
    from vidgen.data import NaturalClips, VideoFolder
    if cfg.dataset == "natural":
        train = NaturalClips("train", num_frames=cfg.num_frames, size=cfg.size, num_clips=cfg.num_clips)
        test = NaturalClips("test", num_frames=cfg.eval_frames, size=cfg.size, num_clips=cfg.eval_clips)
        return train, test
    if cfg.dataset == "scenes":  # layered scenes; training evaluates on the val photographs, never the test ones
        from vidgen.data import SceneClips
        train = SceneClips("train", num_frames=cfg.num_frames, size=cfg.size, num_clips=cfg.num_clips)
        return train, SceneClips("val", num_frames=cfg.eval_frames, size=cfg.size, num_clips=cfg.eval_clips)
    if cfg.dataset == "shapes":  # captioned shapes: the held-out colour x motion pairs are the test split
        from vidgen.data import ShapesDataset
        train = ShapesDataset("train", num_frames=cfg.num_frames, size=cfg.size, num_samples=cfg.num_clips)
        return train, ShapesDataset("test", num_frames=cfg.eval_frames, size=cfg.size, num_samples=cfg.eval_clips)
    if cfg.dataset == "folder":
        check_folder_root(cfg)
        full = VideoFolder(cfg.root, num_frames=cfg.num_frames, size=cfg.size)
        return full, VideoFolder(cfg.root, num_frames=cfg.eval_frames, size=cfg.size)
    raise ConfigError(f"data.dataset must be 'natural', 'scenes', 'shapes' or 'folder', got {cfg.dataset!r}")


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
    except InvalidInputError as err:
        raise ConfigError(f"loss.perceptual_kind={cfg.loss.perceptual_kind!r}: {err}; or 'none' for no perceptual "
                          "loss") from err
    except MissingWeightsError as err:
        raise ConfigError(f"perceptual loss requested but no weights are available ({err}); "
                          "set loss.perceptual=0 to train without it") from err
    log(f"perceptual loss: {dist.name}")
    return PerceptualLoss(dist, cfg.loss.perceptual_frames)


class TokenizerTask(TrainingTask):
    """A tokenizer's reconstruction step (video and image batches), with its PatchGAN discriminator when
    ``loss.gan > 0``; held-out PSNR and sample videos as hooks; latent statistics measured into the final config."""

    def __init__(self, cfg: TrainConfig, acc, log):
        self.cfg, self.acc = cfg, acc
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        self.model = model = build_model(cfg.model)
        self.decoder_only = cfg.trainable == "decoder"
        if cfg.init_from:
            init_from(model, cfg.init_from, keep_statistics=self.decoder_only)
            log(f"initialised from {cfg.init_from}" + (" (decoder only is trained)" if self.decoder_only else ""))
        self.params = freeze_all_but_decoder(model) if self.decoder_only else list(model.parameters())
        self.disc = PatchDiscriminator3D(cfg.loss.disc_channels, cfg.loss.disc_layers) if cfg.loss.gan > 0 else None
        self.perceptual = _perceptual(cfg, log)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=cfg.optim.disc_lr, betas=(0.5, 0.9)) \
            if self.disc else None
        self.extra_state = {"disc": self.disc, "opt_d": self.opt_d}
        train_set, test_set = build_datasets(cfg.data)
        self.clips = CachedClips(train_set)
        if cfg.data.render_workers:  # each process of a node renders every clip: the node's cores are shared
            self.clips.prefill(max(1, cfg.data.render_workers // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))), log)
        self.num_items = len(self.clips)
        self.module = _Reconstructor(model)
        self.test_videos = torch.stack([test_set[i]["video"]
                                        for i in range(min(len(test_set), cfg.data.eval_clips))])
        self.hooks = [(cfg.eval_every, self.evaluate), (cfg.sample_every, self.save_samples)]
        self.run_dir, self.log, self.multi_disc, self._pending = Path(cfg.run_dir), log, None, None

    def prepare(self, acc) -> None:
        if self.disc is not None:
            self.multi_disc, self.opt_d = acc.prepare(_MultiDisc(self.disc), self.opt_d)
            self.extra_state["opt_d"] = self.opt_d

    def step(self, module, sampler, step, g) -> StepOutput:
        cfg, acc = self.cfg, self.acc
        xv, xi = joint_batch(self.clips, sampler, cfg.data.video_batch, cfg.data.image_batch, cfg.data.crop, g,
                             cfg.data.color_aug, cfg.data.zoom_aug)
        xv, xi = (None if b is None else b.to(acc.device) for b in (xv, xi))  # clips are kept on the CPU
        batches = [b for b in (xv, xi) if b is not None]
        weights = [1.0 if b is xv else cfg.data.image_weight for b in batches]
        gan_on = self.disc is not None and step >= cfg.loss.gan_start
        perceptual = self.perceptual
        with acc.autocast():
            outs = module(batches, g)
            rec = sum(w * reconstruction_loss(x, o.sample.float(), cfg.loss.l1, cfg.loss.l2, cfg.loss.temporal,
                                             cfg.loss.spatial)
                      for w, x, o in zip(weights, batches, outs))
            bott = sum(w * o.bottleneck.loss for w, o in zip(weights, outs))
            perc = sum(w * perceptual(x, o.sample, g) for w, x, o in zip(weights, batches, outs)) if perceptual else 0.0
            nll = rec + cfg.loss.perceptual * perc
            loss = nll + bott
            gan_w = torch.zeros(())
            if gan_on:
                g_loss = sum(w * hinge_g_loss(lf) for w, lf in zip(weights, self.multi_disc([o.sample for o in outs])))
                gan_w = cfg.loss.gan * (adaptive_gan_weight(nll, g_loss, self.model.last_decoder_layer,
                                                            reduce=lambda t: acc.reduce(t, "mean"))
                                        if cfg.loss.adaptive_gan else torch.ones(()))
                loss = loss + gan_w * g_loss
        self._pending = (batches, outs, weights) if gan_on else None
        return StepOutput(loss, {"rec": rec, "perc": perc, "bottleneck": bott, "gan_w": gan_w,
                                 "d_loss": torch.zeros(())},
                          units=sum(b.shape[0] * b.shape[2] for b in batches),
                          tail_logs={k: v for o in outs for k, v in o.bottleneck.logs.items()})

    def after_optimizer_step(self, out: StepOutput) -> None:
        """The discriminator's hinge step on this step's real and (detached) reconstructed batches."""
        if self._pending is None:
            return
        batches, outs, weights = self._pending
        self._pending = None
        self.opt_d.zero_grad(set_to_none=True)
        with self.acc.autocast():
            real = self.multi_disc([x.detach() for x in batches])
            fake = self.multi_disc([o.sample.detach() for o in outs])
            d_loss = sum(w * hinge_d_loss(r, f) for w, r, f in zip(weights, real, fake))
        self.acc.backward(d_loss)
        self.acc.clip_grad_norm_(self.multi_disc.parameters(), self.cfg.optim.grad_clip)
        self.opt_d.step()
        out.logs["d_loss"] = d_loss

    def evaluate(self, step: int, model) -> None:
        self.log({"step": step, "eval_psnr": evaluate_psnr(model, self.test_videos)})

    def save_samples(self, step: int, model) -> None:
        save_samples(model, self.test_videos[:2], self.run_dir / "samples", step)

    def finish(self, final) -> dict:
        if "scaling_factor" not in final.config or self.decoder_only:
            return {}
        # continuous latents: statistics for generators
        shift, scale = latent_statistics(final, self.clips, self.cfg.stats_clips)
        final.register_to_config(shift_factor=shift, scaling_factor=scale)
        return {"shift_factor": shift, "scaling_factor": scale}


#: the run settings a checkpoint's tensors are shaped by: the model, which parameters the optimizer holds, and the
#: discriminator (when there is one)
CHECKPOINT_SHAPING = ("model", "trainable", "loss.disc_channels", "loss.disc_layers")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):  # an empty mapping adds no setting
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _architecture(config: dict, model: nn.Module) -> dict:
    """The constructor arguments of ``model``'s class in ``config`` (derived entries and statistics left out)."""
    names = set(inspect.signature(type(model).__init__).parameters) - set(_STATISTICS)
    return {k: json.dumps(v, default=str, sort_keys=True) for k, v in config.items() if k in names}


def check_resume(cfg: TrainConfig) -> None:
    """Refuse, before the run writes anything, to resume from a checkpoint whose model (architecture, class), trained
    parameters or discriminator differ from what ``cfg`` builds: a ConfigError lists each differing setting and
    architecture key, with the checkpoint's value and this run's."""
    ckpt = find_checkpoint(cfg.resume, Path(cfg.run_dir))
    if ckpt is None:
        return
    saved = _flat(load_state(ckpt).get("config") or {})
    mine = _flat(cfg.to_dict())
    gan = (saved.get("loss.gan", 0) or 0) > 0 and cfg.loss.gan > 0
    keys = sorted(k for k in saved.keys() | mine.keys()
                  if k.startswith(CHECKPOINT_SHAPING) and (gan or not k.startswith("loss.")))
    def shown(tree, key):
        return repr(tree[key]) if key in tree else "unset"
    settings = [f"{k} ({shown(saved, k)} in the checkpoint, {shown(mine, k)} in this run)"
                for k in keys if saved.get(k) != mine.get(k)]
    try:
        with torch.device("meta"):  # the configuration only: no memory, no initialisation
            model = build_model(cfg.model)
    except (NotImplementedError, RuntimeError):
        model = build_model(cfg.model)
    theirs = json.loads((ckpt / "config.json").read_text())
    if theirs.get("_class_name", type(model).__name__) != type(model).__name__:
        arch = [f"class ({theirs['_class_name']} in the checkpoint, {type(model).__name__} in this run)"]
    else:
        ours, old = _architecture(dict(model.config), model), _architecture(theirs, model)
        arch = [f"{k} ({json.loads(old[k]) if k in old else 'absent'} in the checkpoint, "
                f"{json.loads(ours[k]) if k in ours else 'absent'} in this run)"
                for k in sorted(ours.keys() | old.keys()) if ours.get(k) != old.get(k)]
    shaping = [s for s in settings if not s.startswith("model.")]
    if not arch and not shaping:
        return  # other spellings of the same model (e.g. an override that restates the preset's value)
    raise ConfigError(
        f"resume: the checkpoint {ckpt} was written by a run with another model; differing settings: "
        f"{'; '.join(settings) or 'none'}; differing architecture: {'; '.join(arch) or 'none'}. Resume with the "
        "checkpoint's settings, or start a fresh run in another run_dir")


def train(cfg: TrainConfig) -> dict:
    """Train, checkpoint and save ``run_dir/final``; returns the last logged metrics. Threads and deterministic
    flags are set for the run and restored afterwards. A resume whose model differs from the checkpoint's is refused
    before anything is written (:func:`check_resume`)."""
    check_resume(cfg)
    return run_training(cfg, lambda acc, log, sp: TokenizerTask(cfg, acc, log))

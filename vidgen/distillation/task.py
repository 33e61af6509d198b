"""Few-step distillation in vidgen's trainer: a flow teacher's guided sampler into a 1-4 step student.

``pipelines/distill.py`` runs it; the losses are :mod:`vidgen.distillation.losses`'s. The student starts as a
copy of the teacher (or, with ``distill.student``, as a trained block-causal model, rolled out on its own chunks:
:mod:`vidgen.distillation.self_forcing`) and is saved (its EMA, if any) to ``run_dir/final`` with ``distillation`` in
its config, so it samples only at the step counts it learnt, at guidance 1. Everything around the step is the generator trainer's
(:class:`~vidgen.training.generator_task.GeneratorTask`): the same data (pre-encoded cache or shards: the
conditioning, and for consistency distillation the clean latents), seeded per-step randomness, atomic checkpoints
(the critic and its GAN head with them), resume, and DDP.

    python pipelines/distill.py distill.teacher=pretrained/shapes-flow distill.method=dmd2 steps=2000
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn
from accelerate import DistributedDataParallelKwargs

from vidgen.distillation.losses import (CriticClassifier, check_teacher, consistency_loss, distillation_spec,
                                        dmd2_losses, make_student)
from vidgen.distillation.self_forcing import self_forcing_rollout
from vidgen.errors import ConfigError, UnsupportedError
from vidgen.generators.causal import CausalFlowVideoTransformer
from vidgen.generators.flow_sampler import student_settings
from vidgen.rng import rows
from vidgen.training.checkpoint import copy_weights, load_state
from vidgen.training.config import GeneratorTrainConfig
from vidgen.training.generator_task import GeneratorTask, generator_of_folder
from vidgen.training.trainer import run_training


@dataclass
class DistillConfig:
    teacher: str = ""  # a flow pipeline folder (with transformer/ and vae/) or a FlowVideoTransformer folder
    method: str = "dmd2"  # "dmd2" (distribution matching) | "consistency" (multistep consistency distillation)
    steps: list = field(default_factory=lambda: [1, 2, 4])  # the step counts the student samples at
    guidance_scale: float = 0.0  # the teacher's guidance built into the student; 0 = the teacher folder's default
    student_every: int = 1  # dmd2: the student steps once every N steps, the critic every step (two time scales)
    gan_weight: float = 0.0  # dmd2: weight of the GAN term (a classifier on the critic's features; real = the data)
    shift: float = 0.0  # the student's levels: FlowMatchEuler's at this shift; 0 = uniform (1, 1 - 1/k, ..., 1/k)
    # a block-causal model to train by Self-Forcing (a train_generator.py run's final/ or checkpoint): rolled out
    # chunk by chunk on its own outputs against the teacher (dmd2 only); "" = the student is a copy of the teacher
    student: str = ""
    # Self-Forcing++: the student streams this many video frames (counted as data.num_frames counts them) and the
    # teacher scores one clip-length window of the stream, drawn per batch; 0 = the clip's own length
    rollout_frames: int = 0
    # with rollout_frames: the share of rows whose frames before the window follow another row's prompt, re-cached
    # under their own at the window (a prompt switch)
    rollout_switch: float = 0.0
    _ranges = {"rollout_switch": (0, 1)}


@dataclass
class DistillTrainConfig(GeneratorTrainConfig):
    """A distillation run (``pipelines/distill.py``): ``video_tokenizer`` defaults to the teacher folder's ``vae``;
    ``model`` is not read (the student has the teacher's architecture)."""

    run_dir: str = "runs/distill"
    distill: DistillConfig = field(default_factory=DistillConfig)


def _teacher_folder(path: str) -> tuple[Path, Path | None]:
    """(transformer folder, pipeline folder or None) of ``distill.teacher``."""
    root = Path(path)
    if not path or not root.is_dir():
        raise ConfigError(f"distill.teacher={path!r}: not a folder; pass a flow pipeline folder (e.g. "
                          "pretrained/shapes-flow) or a FlowVideoTransformer folder")
    if (root / "transformer" / "config.json").is_file():
        return root / "transformer", root
    if (root / "config.json").is_file():
        return root, None
    raise ConfigError(f"distill.teacher={path!r}: no config.json in it or in its transformer/")


def load_teacher(path: str):
    """The frozen teacher transformer and its guidance default (the pipeline folder's ``sampling_config.json``, else
    the flow sampling default)."""
    from vidgen.generators import FlowVideoTransformer
    from vidgen.generators.flow import FlowSamplingConfig
    folder, pipeline = _teacher_folder(path)
    kind = json.loads((folder / "config.json").read_text()).get("_class_name")
    if kind != FlowVideoTransformer.__name__:
        raise ConfigError(f"distill.teacher: distillation needs a flow-matching teacher (a FlowVideoTransformer with "
                          f"prediction_type='flow'), got {kind}")
    teacher = FlowVideoTransformer.from_pretrained(folder)
    check_teacher(teacher)
    guidance = FlowSamplingConfig().guidance_scale
    if pipeline is not None and (pipeline / "sampling_config.json").is_file():
        guidance = json.loads((pipeline / "sampling_config.json").read_text()).get("guidance_scale", guidance)
    return teacher.requires_grad_(False).eval(), guidance, pipeline


def load_causal_student(path: str):
    """The block-causal model of ``distill.student`` (a run's ``final/`` or one of its checkpoints, EMA weights)."""
    from vidgen.training.checkpoint import load_trained
    folder = Path(path)
    kind = json.loads((folder / "config.json").read_text()).get("_class_name") \
        if (folder / "config.json").is_file() else None
    if kind != CausalFlowVideoTransformer.__name__:
        raise ConfigError(f"distill.student={path!r}: expected a CausalFlowVideoTransformer folder (a "
                          f"train_generator.py run of model.generator=causal: its final/ or checkpoints/step_N), got "
                          f"{kind or 'no model'}")
    return load_trained(CausalFlowVideoTransformer, folder)


class DistillationLoss(nn.Module):
    """``forward(x, cond, generator)`` = the distillation loss, over the student, the critic and the frozen teacher
    (one module, so DDP sees one forward per step)."""

    def __init__(self, student, teacher, critic, discriminator, spec: dict, dcfg: DistillConfig,
                 rollout_chunks: int = 0):
        super().__init__()
        self.student, self.teacher, self.critic, self.discriminator = student, teacher, critic, discriminator
        self.spec, self.dcfg, self.step_index = spec, dcfg, 0
        self.rollout = functools.partial(self_forcing_rollout, chunks=rollout_chunks, switch=dcfg.rollout_switch)

    def forward(self, x, cond, generator):
        r = rows(generator)
        if self.spec["method"] == "consistency":
            return consistency_loss(self.student, self.teacher, x, cond, self.spec, r)
        noise = r.randn(x.shape[0], *x.shape[1:]).to(x)
        student_weight = float(self.step_index % self.dcfg.student_every == 0)
        causal = isinstance(self.student, CausalFlowVideoTransformer)
        return dmd2_losses(self.student, self.critic, self.teacher, noise, cond, self.spec, r,
                           student_weight=student_weight, gan_weight=self.dcfg.gan_weight,
                           discriminator=self.discriminator, real=x, sample=self.rollout if causal else None)


def set_step(module: nn.Module, step: int) -> None:
    """Tell the :class:`DistillationLoss` in ``module`` (DDP-wrapped or not) the step (the student's time scale)."""
    getattr(module, "module", module).step_index = step


class DistillTask(GeneratorTask):
    """:class:`GeneratorTask` with the student built from the teacher and the distillation loss as its step."""

    description = "distilling"

    def __init__(self, cfg: DistillTrainConfig, acc, log, sp=None):
        d = cfg.distill
        if cfg.sp_size > 1:
            raise UnsupportedError("sp_size: distillation runs without sequence parallelism (the teacher and the "
                                   "critic are not split); set sp_size=1")
        if cfg.optim.optimizer != "adamw" or cfg.routing.ratio:  # the student, critic and GAN head share one AdamW
            raise UnsupportedError(f"optim.optimizer={cfg.optim.optimizer}, routing.ratio={cfg.routing.ratio}: "
                                   "distillation trains with AdamW and without token routing; set "
                                   "optim.optimizer=adamw and routing.ratio=0")
        if not isinstance(d.student_every, int) or d.student_every < 1 or d.gan_weight < 0:
            raise ConfigError(f"distill.student_every must be an integer >= 1 and distill.gan_weight >= 0, got "
                              f"{d.student_every!r} and {d.gan_weight!r}")
        if d.gan_weight > 0 and d.method != "dmd2":
            raise ConfigError("distill.gan_weight: the GAN term belongs to method=dmd2")
        self.teacher, guidance, pipeline = load_teacher(d.teacher)
        self.spec = distillation_spec(d.method, d.steps, d.guidance_scale or guidance, d.shift or None)
        if not cfg.video_tokenizer:
            if pipeline is None or not (pipeline / "vae").is_dir():
                raise ConfigError("video_tokenizer: set it, or pass a teacher pipeline folder that has a vae/")
            cfg = dataclasses.replace(cfg, video_tokenizer=str(pipeline / "vae"))
        super().__init__(cfg, acc, log, sp)
        student = self.model
        self.critic = self.discriminator = None
        if self.spec["method"] == "dmd2":  # the fake score starts as the teacher, trainable
            self.critic = copy.deepcopy(self.teacher).requires_grad_(True).train()
            self.extra_state = {"critic": self.critic}
            self.params = self.params + list(self.critic.parameters())
            if d.gan_weight > 0:
                self.discriminator = CriticClassifier(self.critic)
                self.extra_state["gan_head"] = self.discriminator
                self.params = self.params + list(self.discriminator.head.parameters())
            self._continue_critic(log)
        self.module = DistillationLoss(student, self.teacher, self.critic, self.discriminator, self.spec, d,
                                       self._rollout_chunks(log))
        log(f"distilling {d.teacher} ({self.spec['method']}, guidance {self.spec['guidance_scale']}) into a "
            f"{'/'.join(map(str, self.spec['steps']))}-step student")

    def build_model(self, tokenizer, log) -> nn.Module:
        """The student: the teacher's architecture and weights, or the block-causal model ``distill.student``
        (Self-Forcing), with the distillation entry in its config; with ``init_from``, an earlier distillation's
        student (its ``final/`` or a checkpoint, raw weights) continued under this run's settings."""
        d = self.cfg.distill
        if not d.student:
            student = make_student(self.teacher, self.spec)
            if self.cfg.init_from:
                copy_weights(student, generator_of_folder(self.cfg.init_from, default=type(student)),
                             self.cfg.init_from)
                log(f"student initialised from {self.cfg.init_from}")
            return student.requires_grad_(True).train()
        if self.cfg.init_from:
            raise ConfigError("init_from: a Self-Forcing run starts from distill.student; set one of the two")
        causal = self._portable_student(log) or load_causal_student(d.student)
        if d.method != "dmd2":
            raise ConfigError(f"distill.student: a block-causal student trains by Self-Forcing, which is distribution "
                              f"matching; set distill.method=dmd2 (got {d.method!r})")
        if causal.config.in_channels != self.teacher.config.in_channels:
            raise ConfigError(f"distill.student: its latents have {causal.config.in_channels} channels, the teacher's "
                              f"{self.teacher.config.in_channels}; both must model the same VAE's latents")
        log(f"Self-Forcing: the block-causal student {d.student} rolls out on its own chunks")
        return make_student(causal, self.spec).requires_grad_(True).train()

    def _portable_student(self, log):
        """A continuation on a machine without ``distill.student``'s folder: the student built from the portable
        checkpoint's ``config.json`` (its weights then come from the checkpoint), else None."""
        cfg = self.cfg
        if Path(cfg.distill.student).exists() or not cfg.portable_dir or cfg.resume != "auto":
            return None
        from vidgen.training import portable
        folder = Path(cfg.portable_dir)
        if portable.read_record(folder) is None or not (folder / portable.CONFIG).is_file() or \
                any((Path(cfg.run_dir) / "checkpoints").glob("step_*")):
            return None
        log(f"distill.student={cfg.distill.student} is not here: the student is built from {folder / portable.CONFIG} "
            f"and continues from that checkpoint's weights")
        return CausalFlowVideoTransformer.from_config(json.loads((folder / portable.CONFIG).read_text()))

    def _rollout_chunks(self, log) -> int:
        """``distill.rollout_frames`` as the stream's chunk count (0: the clip's), checked against the clip."""
        d, frames = self.cfg.distill, self.cfg.data.num_frames
        if not d.rollout_frames:
            if d.rollout_switch:
                raise ConfigError(f"distill.rollout_switch={d.rollout_switch}: prompt switches happen in a rollout "
                                  f"longer than a clip; set distill.rollout_frames above data.num_frames={frames}")
            return 0
        if not d.student or d.rollout_frames < frames:
            raise ConfigError(f"distill.rollout_frames={d.rollout_frames}: a long rollout is a block-causal student's "
                              f"(set distill.student) of at least data.num_frames={frames} frames")
        latent = self.video_tokenizer.latent_grid(d.rollout_frames, self.cfg.data.size, self.cfg.data.size)[0]
        chunks = -(-latent // self.model.config.chunk_frames)
        log(f"Self-Forcing++: {d.rollout_frames}-frame rollouts ({chunks} chunks), the teacher scoring a "
            f"{frames}-frame window of each{f'; {d.rollout_switch:.0%} switch prompts at it' if d.rollout_switch else ''}")
        return chunks

    def _continue_critic(self, log) -> None:
        """With ``init_from`` a DMD2 checkpoint, its critic (which tracks that student) rather than a fresh copy of
        the teacher; a GAN head starts fresh unless the checkpoint has one."""
        state = Path(self.cfg.init_from) / "state.pt" if self.cfg.init_from else None
        if state is None or not state.is_file():
            return
        saved = load_state(state.parent)
        for key, obj in self.extra_state.items():
            if saved.get(key) is not None:
                obj.load_state_dict(saved[key])
                log(f"{key} initialised from {self.cfg.init_from}")

    def step(self, module, sampler, step, g):
        set_step(module, step)
        return super().step(module, sampler, step, g)

    def sample_settings(self):
        """The periodic samples at the student's largest step count, guidance 1."""
        return dataclasses.replace(self.cfg.sample, **student_settings(self.spec))

    def finish(self, final) -> dict:
        return {"tokenizer": self.cfg.video_tokenizer, "teacher": self.cfg.distill.teacher}


def distill(cfg: DistillTrainConfig) -> dict:
    """Distil ``cfg.distill.teacher`` into a few-step student saved to ``run_dir/final``."""
    # the student skips steps (distill.student_every) and the GAN head some terms: DDP must not wait for them
    return run_training(cfg, lambda acc, log, sp: DistillTask(cfg, acc, log, sp),
                        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])

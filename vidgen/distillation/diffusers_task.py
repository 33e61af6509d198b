"""Few-step distillation of a diffusers video model (a family of :mod:`vidgen.families`) into a LoRA student::

    python pipelines/distill.py distill.teacher=Wan-folder data.root=shards lora.rank=32 distill.shift=5 steps=2000

The teacher is the pipeline folder's transformer with the adapter switched off; the student is the same transformer
with a LoRA (peft), trained with :mod:`vidgen.distillation.losses`'s losses (DMD2's critic is a full copy of the
transformer). The data are the fine-tuner's shards (:mod:`vidgen.training.finetune`: latents from the model's VAE,
captions from its text encoder); the teacher's guidance contrasts with the negative prompt ``""``, as the family's
pipeline does. ``run_dir/final`` holds what diffusers reads::

    pipe = WanPipeline.from_pretrained(base)
    pipe.load_lora_weights("run/final")
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained("run/final", subfolder="scheduler")
    pipe(prompt, num_inference_steps=4, guidance_scale=1.0)   # one of distill.steps

An image-to-video folder (``WanImageToVideoPipeline``) distils on shards encoded with ``--first-frames``: every
call of the student, the teacher and the critic reads each clip's first-frame condition, built as the fine-tuner
builds it (:mod:`vidgen.training.first_frame`), and diffusers' own image-to-video class loads the student::

    pipe = WanImageToVideoPipeline.from_pretrained(base)
    pipe.load_lora_weights("run/final")
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained("run/final", subfolder="scheduler")
    pipe(prompt, image=first_frame, num_inference_steps=4, guidance_scale=1.0)

``final/distillation.json`` records the step counts, the guidance built in and the schedule's shift. The scheduler
re-noises from torch's global generator (diffusers' pipelines pass it none): seed it with ``torch.manual_seed`` to
repeat a video.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from accelerate import DistributedDataParallelKwargs

from vidgen.distillation.task import DistillConfig, DistillationLoss, set_step
from vidgen.errors import ConfigError
from vidgen.generators.flow_sampler import distillation_spec, student_scheduler
from vidgen.training.finetune import FineTuneConfig, FineTuneTask
from vidgen.training.trainer import run_training


@dataclass
class DiffusersDistillConfig(FineTuneConfig):
    """A distillation run of the diffusers pipeline folder ``distill.teacher`` (``pipeline`` is set from it)."""

    run_dir: str = "runs/distill"
    distill: DistillConfig = field(default_factory=DistillConfig)


class AdapterOffTeacher(nn.Module):
    """The student's transformer with its LoRA switched off, frozen: the teacher, without a second copy. ``negative``
    (the negative prompt's Conditioning, batch 1) is what its guidance contrasts with."""

    def __init__(self, generator, negative):
        super().__init__()
        self.generator = [generator]  # not a submodule: its weights are the student's
        self.negative = negative

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        model = self.generator[0].model
        model.disable_adapters()
        try:
            return self.generator[0](*args, **kwargs)
        finally:
            model.enable_adapters()


def check_flow_family(folder) -> None:
    """The teacher folder's family must be flow-matching (a named error before anything loads)."""
    from vidgen.families import folder_family
    family = folder_family(folder)
    if family is None:
        return  # not a real-model pipeline folder: the fine-tuner's loader says why
    if family.prediction_type != "flow":
        raise ConfigError(f"distill.teacher={folder}: distillation needs a flow-matching teacher; {family.pipeline} "
                          f"predicts {family.prediction_type!r}")
    family.refuse("distillation")


class DiffusersDistillTask(FineTuneTask):
    """The fine-tuner's model, data and LoRA, with the distillation loss as its step."""

    description = "distilling"

    def __init__(self, cfg: DiffusersDistillConfig, acc, log):
        d = cfg.distill
        if not cfg.lora.rank:
            raise ConfigError("lora.rank: distilling a diffusers model trains a LoRA (the teacher is the model with "
                              "the adapter off); set lora.rank, e.g. 32")
        if d.gan_weight:
            raise ConfigError("distill.gan_weight: the GAN head is built on vidgen's own transformers; leave it 0 "
                              "for a diffusers teacher")
        check_flow_family(cfg.pipeline)
        super().__init__(cfg, acc, log)
        gen = self.generator
        guidance = d.guidance_scale or gen.family.sampling_defaults.get("guidance_scale", 1.0)
        self.spec = distillation_spec(d.method, d.steps, guidance, d.shift or None)
        self.negative = self._negative(cfg)
        self.teacher = AdapterOffTeacher(gen, self.negative)
        self.critic = None
        if self.spec["method"] == "dmd2":  # the fake score: a full copy, starting as the teacher (adapter at zero)
            self.critic = copy.deepcopy(gen).requires_grad_(True).train()
            self.extra_state = {"critic": self.critic}
            self.conditioned.append(self.critic)  # an image-to-video teacher: the critic reads the first frame too
            self.params = self.params + list(self.critic.parameters())
        self.module = DistillationLoss(gen, self.teacher, self.critic, None, self.spec, d)
        log(f"distilling {cfg.pipeline} ({self.spec['method']}, guidance {self.spec['guidance_scale']}) into a "
            f"{'/'.join(map(str, self.spec['steps']))}-step LoRA student")

    def _negative(self, cfg):
        """The negative prompt ``""`` as the family's pipeline encodes it, at the shards' text length."""
        from vidgen.generators import Conditioning
        gen = self.generator
        _, negative = gen.family.encode_prompt(self.pipe, "", "", guidance=True, num_videos_per_prompt=1,
                                               max_text_tokens=self.max_text_tokens, device=self.acc.device)
        return Conditioning(*negative)

    def step(self, module, sampler, step, g):
        set_step(module, step)
        return super().step(module, sampler, step, g)

    def finish(self, final) -> dict:
        """The LoRA (the fine-tuner's export) plus the student's scheduler and ``distillation.json``."""
        out = super().finish(final)
        folder = Path(self.cfg.run_dir) / "final"
        student_scheduler(self.spec).save_pretrained(str(folder / "scheduler"))
        (folder / "distillation.json").write_text(json.dumps(self.spec, indent=1) + "\n")
        return {**out, "teacher": self.cfg.pipeline}


def distill_diffusers(cfg: DiffusersDistillConfig) -> dict:
    """Distil ``cfg.distill.teacher`` (a diffusers pipeline folder) into a LoRA in ``run_dir/final``."""
    cfg.pipeline = cfg.pipeline or cfg.distill.teacher
    return run_training(cfg, lambda acc, log, sp: DiffusersDistillTask(cfg, acc, log),
                        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])

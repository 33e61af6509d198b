"""Few-step students and their training: the distillation losses (DMD2, multistep consistency), the Self-Forcing
rollout of a block-causal student, and the training tasks that distil vidgen's own generators
(:func:`distill`) and diffusers folders into LoRA students (:func:`distill_diffusers`). The schedule a student samples
on, and the rule that it samples at its trained steps with guidance 1, are the flow sampler's
(:mod:`vidgen.generators.flow_sampler`)."""
from vidgen.distillation.diffusers_task import DiffusersDistillConfig, distill_diffusers
from vidgen.distillation.task import DistillTrainConfig, distill

__all__ = ["DiffusersDistillConfig", "DistillTrainConfig", "distill", "distill_diffusers"]

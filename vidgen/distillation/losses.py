"""Few-step students of a flow teacher: the schedule they sample on and the two distillation losses.

A student is a :class:`~vidgen.generators.flow.FlowVideoTransformer` of the teacher's architecture whose config
carries ``distillation = {"method", "steps", "guidance_scale"}`` (or a diffusers transformer with a LoRA, see
:mod:`vidgen.distillation.diffusers_task`). It samples ``k`` steps (``k`` in ``steps``) on the noise levels
:func:`student_sigmas` (uniform, or with ``"shift"`` in the entry those of diffusers' ``FlowMatchEulerDiscreteScheduler
(shift=shift)``) with that scheduler's ``stochastic_sampling=True``: at each level the student's velocity gives a clean estimate ``x0 = x - sigma v``, which is noised afresh to
the next level (the multistep sampler of consistency models and DMD2). The teacher's classifier-free guidance is
distilled in: a student samples at guidance 1, one model call per step.

Two families, each a loss on one batch of (noise, conditioning) or (clean latents, conditioning):

* :func:`dmd2_losses` -- distribution matching (DMD2, Yin et al. 2024): the student's sample, noised to a random
  level, is moved along the difference between a *fake* score (a critic trained online on the student's samples) and
  the *real* score (the guided teacher). An optional GAN term puts a classifier on the critic's features.
* :func:`consistency_loss` -- multistep consistency distillation: the student's clean estimate at a level equals its
  own (stop-gradient) estimate one guided teacher Euler step further down the same trajectory (the discrete form of
  sCM / rCM, with the stop-gradient student as the target network, as improved consistency training does).

Every random draw comes from a :class:`~vidgen.rng.RowGenerator`, so two processes draw what one process draws.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators.embeddings import Conditioning
from vidgen.generators.flow_sampler import (CONSISTENCY_GRID, METHODS, Guider, check_student_call,  # noqa: F401
                                            denoise, distillation_spec, student_scheduler, student_sigmas)
from vidgen.generators.sampling import Guidance, cfg_batch, flow_matching_pair
from vidgen.rng import RowGenerator

def make_student(teacher: nn.Module, spec: dict) -> nn.Module:
    """A student of ``teacher``: its class, architecture, weights and train / eval mode, with ``spec``
    (:func:`distillation_spec`) as the config's ``distillation``."""
    config = {k: v for k, v in teacher.config.items() if not k.startswith("_")}
    student = type(teacher).from_config({**config, "distillation": spec})
    student.load_state_dict(teacher.state_dict())
    return student.to(teacher.device).train(teacher.training)


def check_teacher(teacher) -> None:
    """The teacher must be a flow-matching model (a velocity on the straight path): named error otherwise."""
    config = getattr(teacher, "config", None)
    kind = getattr(config, "prediction_type", None) if config is not None else None
    if kind != "flow":
        what = f"prediction_type={kind!r}" if kind else type(teacher).__name__
        raise ConfigError(f"distill.teacher: distillation needs a flow-matching teacher (a FlowVideoTransformer with "
                          f"prediction_type='flow'), got {what}")
    if (getattr(config, "distillation", None) or None) is not None:
        raise ConfigError("distill.teacher: the teacher is itself a distilled student; distil from the model it "
                          "was distilled from")


def guided_velocity(teacher: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Optional[Conditioning],
                    scale: float) -> torch.Tensor:
    """The teacher's classifier-free-guided velocity at noise levels ``sigma`` (B,), as the sampler guides it: in one
    batched pass against the learnt null condition, or, for a teacher with a ``negative`` Conditioning (a diffusers
    family's negative prompt), one pass per condition as its pipeline guides."""
    negative = getattr(teacher, "negative", None)
    if negative is not None:
        rows = {"cond": cond, "uncond": negative.repeat(x.shape[0])}

        def call(x, t, which, i):
            return teacher(x, t * 1000, rows[which]).sample.float()
        return Guider("separate", Guidance(scale))(call, x, sigma, 0)
    both, drop, doubled = cfg_batch(cond, None, x.shape[0], x.device, scale)

    def call(x, t, which, i):
        t = torch.cat([t, t]) if which == "both" else t
        return teacher(x, t * 1000, both, **({"drop": drop} if doubled else {})).sample
    return Guider("batched", Guidance(scale), doubled=doubled)(call, x, sigma, 0)


def _expand(sigma: torch.Tensor) -> torch.Tensor:
    return sigma[:, None, None, None, None]


def clean_estimate(model: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond) -> torch.Tensor:
    """``x - sigma v``: the clean latents a flow model's velocity points to from ``x`` at levels ``sigma`` (B,)."""
    return x.float() - _expand(sigma) * model(x, sigma * 1000, cond).sample.float()


def student_sample_with_grad(student: nn.Module, noise: torch.Tensor, cond, spec: dict, r: RowGenerator):
    """DMD2's backward simulation: each sample draws a step count ``k`` and a step ``i < k`` of its schedule; the
    student runs its own sampler without gradients to level ``i`` and the last evaluation keeps them. Returns the
    clean estimates (B, C, t, h, w)."""
    b, most = noise.shape[0], max(spec["steps"])
    ks = torch.tensor(spec["steps"])[r.randint(len(spec["steps"]), b)]
    stop = (r.rand(b) * ks).long()  # the step each sample stops at, < its k
    fresh = r.randn(b, most, *noise.shape[1:]).to(noise)  # re-noising draws (a fixed count: ranks draw alike)
    levels = {k: student_sigmas(k, spec.get("shift")) for k in spec["steps"]}
    sigmas = [torch.tensor([levels[int(k)][min(i, int(k) - 1)] for k in ks]) for i in range(most)]
    levels = [sigma.to(noise.device) for sigma in sigmas]

    def call(x, sigma, which, i):
        return student(x, sigma * 1000, cond).sample

    def step(velocity, i, sigma, x):  # the student's sampler: a clean estimate, noised afresh to the next level
        x0 = x.float() - _expand(sigma) * velocity
        walked = flow_matching_pair(x0, fresh[:, i + 1].float(), levels[i + 1])[0]
        return torch.where(_expand((stop > i).to(noise.device)), walked, x)  # samples still walking their schedule

    with torch.no_grad():
        x, _ = denoise(call, noise.float(), levels[:int(stop.max())], step, Guider("batched", Guidance(1.0),
                                                                                   doubled=False))
    sigma = torch.stack([sigmas[int(i)][j] for j, i in enumerate(stop)]).to(noise.device)
    return clean_estimate(student, x, sigma, cond)


def dmd2_losses(student: nn.Module, critic: nn.Module, teacher: nn.Module, noise: torch.Tensor,
                cond: Optional[Conditioning], spec: dict, r: RowGenerator, *, student_weight: float = 1.0,
                gan_weight: float = 0.0, discriminator: Optional[nn.Module] = None,
                real: Optional[torch.Tensor] = None, sample=None) -> tuple[torch.Tensor, dict]:
    """The student's distribution-matching loss plus the critic's flow-matching loss on the student's samples (the
    two act on disjoint parameters, so one optimizer step updates both; ``student_weight`` 0 leaves the student out
    of the graph, so the step updates the critic alone). With ``gan_weight`` > 0, ``discriminator`` (a head on the critic's features, see
    :class:`CriticClassifier`) tells ``real`` clean latents from the student's, both noised to the same level.
    ``sample(student, noise, cond, spec, r)``: how the student makes its samples (default
    :func:`student_sample_with_grad`; a causal student's rollout on its own chunks: Self-Forcing)."""
    b, train_student = noise.shape[0], student_weight > 0
    with torch.set_grad_enabled(train_student and torch.is_grad_enabled()):
        x0 = (sample or student_sample_with_grad)(student, noise, cond, spec, r)
    # the real (guided teacher) and fake (critic) clean estimates of the sample noised to a random level
    s = (0.02 + 0.96 * r.rand(b)).to(noise.device)
    n = r.randn(b, *noise.shape[1:]).to(noise)
    xs = flow_matching_pair(x0.detach(), n.float(), s)[0]
    with torch.no_grad():
        real_x0 = xs - _expand(s) * guided_velocity(teacher, xs, s, cond, spec["guidance_scale"])
        fake_x0 = clean_estimate(critic, xs, s, cond)
        scale = (x0.detach() - real_x0).abs().flatten(1).mean(1).clamp(min=1e-6)  # DMD's per-sample normalizer
        grad = (fake_x0 - real_x0) / _expand(scale)
    dm = 0.5 * F.mse_loss(x0, (x0 - grad).detach(), reduction="none").flatten(1).mean(1).mean()
    # the critic learns the flow of the student's current samples (its own levels, logit-normal)
    sc = torch.sigmoid(r.randn(b)).to(noise.device)
    nc = r.randn(b, *noise.shape[1:]).to(noise).float()
    xc, target, timestep = flow_matching_pair(x0.detach(), nc, sc)  # the flow-matching loss on them
    critic_loss = F.mse_loss(critic(xc, timestep, cond).sample.float(), target)
    loss = student_weight * dm + critic_loss if train_student else critic_loss
    logs = {"dm": dm.detach(), "critic": critic_loss.detach()}
    if gan_weight > 0:
        if discriminator is None or real is None:
            raise InvalidInputError("gan_weight > 0 needs a discriminator and real clean latents")
        d_real = discriminator(flow_matching_pair(real.float(), nc, sc)[0], sc, cond)
        d_loss = F.softplus(discriminator(xc, sc, cond)).mean() + F.softplus(-d_real).mean()
        g_logit = discriminator.frozen(flow_matching_pair(x0, nc, sc)[0], sc, cond)
        g_loss = F.softplus(-g_logit).mean()
        loss = loss + gan_weight * (d_loss + student_weight * g_loss if train_student else d_loss)
        logs.update(d_gan=d_loss.detach(), g_gan=g_loss.detach())
    return loss, logs


class CriticClassifier(nn.Module):
    """DMD2's GAN head: a linear classifier on the mean of the critic backbone's output tokens."""

    def __init__(self, critic: nn.Module):
        super().__init__()
        self.critic = [critic]  # not a submodule: the critic's weights are checkpointed and optimized as the critic
        self.head = nn.Linear(critic.backbone_config.dim, 1)
        self._features = None
        critic.backbone.register_forward_hook(lambda module, args, out: setattr(self, "_features", out))

    def forward(self, x, sigma, cond) -> torch.Tensor:
        self.critic[0](x, sigma * 1000, cond)
        return self.head(self._features.float().mean(1)).squeeze(-1)

    def frozen(self, x, sigma, cond) -> torch.Tensor:
        """The logit with the critic's and the head's weights held fixed: gradients reach only ``x``."""
        critic = self.critic[0]
        params = {k: p.detach() for k, p in critic.named_parameters()}
        torch.func.functional_call(critic, params, (x, sigma * 1000, cond))
        return F.linear(self._features.float().mean(1), self.head.weight.detach(), self.head.bias.detach()).squeeze(-1)


def consistency_loss(student: nn.Module, teacher: nn.Module, x0: torch.Tensor, cond: Optional[Conditioning],
                     spec: dict, r: RowGenerator) -> tuple[torch.Tensor, dict]:
    """Multistep consistency distillation on clean latents ``x0``: at a level ``sigma`` of the grid, the student's
    clean estimate matches its stop-gradient estimate after one guided teacher Euler step to ``sigma - 1/N``
    (exactly ``x`` at level 0). The levels are the grid's ``1/N, ..., 1`` (every uniform student level is on it);
    under a shifted schedule (``"shift"`` in ``spec``), any level in (0, 1]."""
    b = x0.shape[0]
    if spec.get("shift") is None:
        sigma = ((r.randint(CONSISTENCY_GRID, b) + 1).float() / CONSISTENCY_GRID).to(x0.device)  # 1/N..1
    else:
        sigma = (1 - r.rand(b)).to(x0.device)
    prev = (sigma - 1 / CONSISTENCY_GRID).clamp(min=0)
    noise = r.randn(b, *x0.shape[1:]).to(x0).float()
    x = flow_matching_pair(x0.float(), noise, sigma)[0]
    with torch.no_grad():
        x_prev = x + _expand(prev - sigma) * guided_velocity(teacher, x, sigma, cond, spec["guidance_scale"])
        target = torch.where(_expand(prev > 0), clean_estimate(student, x_prev, prev, cond), x_prev)
    loss = F.mse_loss(clean_estimate(student, x, sigma, cond), target)
    return loss, {"consistency": loss.detach()}

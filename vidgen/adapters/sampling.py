"""Sampling and training of a :class:`~vidgen.adapters.transformer.DiffusersVideoTransformer`, step for
step as the family's diffusers pipeline samples; what differs between families is the family's
(:class:`~vidgen.families.Family`):

- timesteps: ``family.timesteps`` (the scheduler's ``set_timesteps``, or the family's sigmas);
- guidance ``uncond + s * (cond - uncond)``, only where the scale is above 1 and a negative condition is given:
  ``family.cfg == "separate"`` one pass per condition, in the model's dtype; ``"batched"`` one pass over
  ``[negative; prompt]``, in fp32;
- the scheduler step (``family.step``: its step options, a multistep scheduler's carried estimate);
- a second transformer where the family switches over (``Family.second_transformer_at``), with its own guidance
  scale (``model_2``);
- a conditioned call's start (``prepared``, a ``PreparedCondition`` from ``Family.prepare_condition``): its
  starting state, extra model inputs, schedule, per-step clamp and finish.

The state keeps the dtype the family's pipeline gives it (``family.state_dtype``), so bf16 sampling rounds as
diffusers' does. Training (:func:`training_loss`): flow matching for flow families (``x_s = (1 - s) x0 + s eps``,
target ``eps - x0`` and timestep ``1000 s``, or the family's own convention: ``family.training_timestep`` /
``family.velocity_sign``), the scheduler's noising and velocity for v-prediction families.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.generators.base import check_positive_int, per_sample_mean
from vidgen.generators.embeddings import Conditioning
from vidgen.generators.flow_sampler import Guider, denoise, model_input
from vidgen.generators.sampling import Guidance, flow_matching_pair
from vidgen.rng import rows


def check_scheduler(model, scheduler) -> None:
    """A flow family needs a FlowMatch / flow-shifted scheduler; a v-prediction family one configured for it."""
    name = type(scheduler).__name__
    flow = "FlowMatch" in name or bool(getattr(scheduler.config, "use_flow_sigmas", False))
    if model.prediction_type == "flow" and not flow:
        raise InvalidInputError(f"scheduler: {type(model.model).__name__} predicts a flow velocity and needs a "
                                f"flow-matching scheduler (FlowMatch*, or UniPC with use_flow_sigmas), got {name}")
    if model.prediction_type != "flow" and (flow or scheduler.config.get("prediction_type") not in
                                            ("epsilon", "v_prediction")):
        raise InvalidInputError(f"scheduler: {type(model.model).__name__} predicts {model.prediction_type!r}; "
                                f"{name} is configured for {scheduler.config.get('prediction_type', 'flow')!r}")


def set_timesteps(model, scheduler, steps: int, grid, device) -> torch.Tensor:
    """The family's timesteps for ``steps`` steps on a latent ``grid``."""
    return model.family.timesteps(scheduler, steps, grid, device)


def cache_context(model, name: str, **where):
    """diffusers' cache context (``cond`` / ``uncond``, the step) around a call of ``model`` when the diffusers
    transformer inside it has cache hooks enabled (``pipe.enable_cache``); a no-op context otherwise."""
    inner = getattr(model, "model", model)
    return inner.cache_context(name, **where) if getattr(inner, "is_cache_enabled", False) else nullcontext()


def reset_cache(*models) -> None:
    """Clear the cache hooks' state between sampling runs (diffusers' pipelines do it after each call)."""
    for model in models:
        inner = getattr(model, "model", model)
        if getattr(inner, "is_cache_enabled", False):
            inner._reset_stateful_cache()


@torch.no_grad()
def sample_latents(model, cond: Optional[Conditioning] = None, config=None, *, grid, batch: int, scheduler=None,
                   negative: Optional[Conditioning] = None, generator: Optional[torch.Generator] = None,
                   latents: Optional[torch.Tensor] = None, callback: Optional[Callable] = None,
                   progress: Optional[Callable] = None, model_2=None, pipeline_config: Optional[dict] = None,
                   guidance_scale_2: Optional[float] = None, model_kwargs: Optional[dict] = None,
                   guidance: Optional[Guidance] = None, prepared=None, **settings) -> torch.Tensor:
    """Normalized latents (B, C, t, h, w) for a latent ``grid`` with the family's sampling (module docstring).

    ``config`` (a :class:`~vidgen.generators.FlowSamplingConfig`) with ``settings`` applied gives the steps and the
    guidance scale; guidance runs when the scale is above 1 and ``negative`` is given. ``latents``: starting noise
    in vidgen's layout (else drawn as the family's pipeline draws it). ``model_2`` / ``guidance_scale_2``: the
    pipeline's second transformer and its scale, used where the family switches over
    (``Family.second_transformer_at``, from the pipeline's config entries ``pipeline_config``). ``callback(i, t, {"latents": ...})`` may return new
    ``"latents"``, a ``"guidance_scale"`` or ``"interrupt": True``. ``guidance``: the run's
    :class:`~vidgen.generators.sampling.Guidance` (a pipeline's), else one at ``config.guidance_scale``.
    ``prepared``: a conditioned call's start (``Family.prepare_condition``), in place of ``latents`` and noise."""
    from vidgen.generators.flow import FlowSamplingConfig, check_latents_input
    config = FlowSamplingConfig.resolve(config, settings)
    if scheduler is None:
        raise InvalidInputError("scheduler: sampling a diffusers transformer needs its pipeline's scheduler")
    check_positive_int("batch", batch)
    check_scheduler(model, scheduler)
    model.check_grid(tuple(grid))
    dev = model.device
    shape = (batch, model.latent_channels, *grid)
    if latents is not None:
        check_latents_input(model, latents, shape)
    state = model.family.state_dtype(cond)
    if prepared is None:  # text-to-video: the family's noise, scaled as its scheduler starts
        latents = (model.noise(shape, generator, dev, state) if latents is None else latents).to(dev, state)
        timesteps = set_timesteps(model, scheduler, config.num_inference_steps, grid, dev)
        latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)
    else:  # a conditioned call: the start as the family's pipeline class builds it (noise drawn, scaled, noised)
        latents = prepared.latents.to(dev, state)
        timesteps = prepared.timesteps if prepared.timesteps is not None else set_timesteps(
            model, scheduler, config.num_inference_steps, grid, dev)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(prepared.first_index if prepared is not None else 0)
    # the guidance (one pass per condition, or one batched pass, as the family's pipeline guides) and the second
    # transformer where the family switches over, with its own scale
    guidance, options = Guidance.of(guidance, config), dict(model_kwargs or {})
    options.update(prepared.model_kwargs if prepared is not None else {})

    def low(t) -> bool:
        return model.family.second_transformer_at(t, scheduler, pipeline_config or {})

    def scale_at(t) -> float:
        second = guidance_scale_2 if guidance_scale_2 is not None else guidance.scale
        return second if low(t) else guidance.scale

    guider = Guider(model.family.cfg, guidance, uncond=negative is not None, scale_at=scale_at)
    conds = {"cond": cond, "uncond": negative,
             "both": None if negative is None else Conditioning.cat([negative, cond])}
    cache_names = {"cond": "cond", "uncond": "uncond", "both": "cond_uncond"}
    sigmas = getattr(scheduler, "sigmas", None)

    def call(x, t, which, i):
        current = model_2 if low(t) else model
        where = {"step_index": i, "num_inference_steps": len(timesteps), "timestep": float(t),
                 **({"sigma": float(sigmas[i])} if sigmas is not None and len(sigmas) > i else {})}
        with cache_context(current, cache_names[which], **where):
            return current(x, t.expand(x.shape[0]), conds[which], **options).sample

    carry = None  # what a multistep scheduler hands the next step

    def step(prediction, i, t, x):
        nonlocal carry
        x, carry = model.family.step(scheduler, prediction, timesteps, i, x, generator, carry)
        return x

    reset_cache(model, *([model_2] if model_2 is not None else []))
    latents, _ = denoise(call, latents, timesteps, step, guider, scale_input=model_input(scheduler),
                         clamp=prepared.clamp if prepared is not None else None, callback=callback, progress=progress)
    return latents if prepared is None or prepared.finish is None else prepared.finish(latents)


def training_loss(model, x0: torch.Tensor, cond: Optional[Conditioning], generator=None) -> tuple[torch.Tensor, dict]:
    """The family's denoising loss on normalized latents ``x0`` (B, C, t, h, w), with per-sample randomness from
    ``generator`` (the same numbers whatever the split over processes)."""
    if model.in_channels != model.latent_channels and "condition" not in getattr(model, "call_options", {}):
        extra = model.in_channels - model.latent_channels
        raise UnsupportedError(f"training: {type(model.model).__name__} reads {extra} condition channels besides its "
                               "latents (an image-to-video transformer) and no condition was given; fine-tune its "
                               "image-to-video pipeline folder (pipeline=FOLDER) on shards encoded with "
                               "--first-frames, which builds each clip's first-frame condition")
    if x0.dim() != 5 or x0.shape[1] != model.latent_channels:
        raise InvalidInputError(f"x0 must be (B, {model.latent_channels}, t, h, w) latents, got {tuple(x0.shape)}")
    b, dev = x0.shape[0], x0.device
    r = rows(generator)
    noise = r.randn(*x0.shape).to(dev, x0.dtype)
    if model.prediction_type == "flow":
        s = torch.sigmoid(r.randn(b) * model.logit_normal_std).to(dev)
        xt, target, _ = flow_matching_pair(x0, noise, s)
        family, sched = model.family, model.noise_scheduler  # the model's timestep and velocity conventions
        timestep = family.training_timestep(s, sched)
        if family.velocity_sign(sched) < 0:
            target = -target
    else:
        sched = model.noise_scheduler
        if sched is None:
            raise InvalidInputError(f"{type(model.model).__name__}: v-prediction training needs noise_scheduler (the "
                                    "pipeline's scheduler)")
        timestep = r.randint(int(sched.config.num_train_timesteps), b).to(dev)
        xt = sched.add_noise(x0, noise, timestep)
        target = sched.get_velocity(x0, noise, timestep) if model.prediction_type == "v_prediction" else noise
    pred = model(xt, timestep, cond).sample
    loss = per_sample_mean(F.mse_loss(pred.float(), target.float(), reduction="none"), torch.ones_like(pred))
    return loss, {"mse": loss.item()}

"""The one flow sampler: every flow-type path (vidgen's flow pipeline, each diffusers family, each chunk of the
block-causal stream, the few-step students) denoises through :func:`denoise`.

Its inputs say what differs between those paths, and nothing else does:

- ``call(x, t, which, i)``: the model, called on ``x`` at timestep ``t`` for ``which`` condition (``"cond"``,
  ``"uncond"`` or ``"both"``: one batch of ``[uncond; cond]`` rows) at step ``i``;
- a :class:`Guider`: how a step's prediction is guided (one batched pass or separate passes), at which scale, and
  at which noise levels; :func:`~vidgen.generators.sampling.guide` is the one guidance formula;
- the schedule: the timesteps (:func:`flow_timesteps`: the scheduler's, or a distilled student's trained levels,
  the one place of the student rule) and the ``step`` from one timestep to the next;
- ``clamp``: the given frames put back after every step;
- ``callback``: diffusers' per-step callback, which may replace the latents, change the guidance scale, or stop.

::

    timesteps = flow_timesteps(scheduler, 25, device=dev)                  # 1. the schedule
    guider = Guider("batched", Guidance(4.0))                               # 2. guidance
    x, stopped = denoise(call, noise, timesteps, scheduler_step(scheduler), guider)   # 3. the loop
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators.sampling import Guidance, guide, step_callback

GUIDANCE_MODES = ("batched", "separate")


@dataclass
class Guider:
    """How one sampling run guides each step's prediction.

    ``mode``: ``"batched"`` runs ``[uncond; cond]`` in one call and guides in fp32 (vidgen's generators, the
    families whose pipelines batch); ``"separate"`` runs one call per condition and guides in the model's dtype (the
    families whose pipelines do). ``guidance``: the scale, read at every step (a callback may change it).
    ``doubled``: whether the guided pass runs, decided once at the start of the run (vidgen's samplers: a run that
    starts guided stays batched); None decides it at each step, as diffusers' pipelines do: guided when there is an
    unconditional prediction to guide against (``uncond``) and the scale there is above 1. ``interval``: guide only
    at noise levels ``t / num_train_timesteps`` in ``(low, high]``, the conditional prediction alone elsewhere.
    ``scale_at(t)``: the scale at timestep ``t`` when it is not ``guidance.scale`` everywhere (a family's second
    transformer with its own scale)."""

    mode: str
    guidance: Guidance
    doubled: Optional[bool] = None
    uncond: bool = True
    interval: Optional[tuple] = None
    num_train_timesteps: int = 1000
    scale_at: Optional[Callable] = field(default=None, repr=False)

    def __post_init__(self):
        if self.mode not in GUIDANCE_MODES:
            raise InvalidInputError(f"Guider mode must be one of {GUIDANCE_MODES}, got {self.mode!r}")

    def scale(self, t) -> float:
        """The guidance scale at timestep ``t``."""
        return self.guidance.scale if self.scale_at is None else self.scale_at(t)

    def __call__(self, call: Callable, x: torch.Tensor, t, i: int) -> torch.Tensor:
        """The guided prediction at ``x``, timestep ``t``, step ``i``."""
        s = self.scale(t)
        guided = self.doubled if self.doubled is not None else (self.uncond and s > 1.0)
        if self.mode == "separate":
            pos = call(x, t, "cond", i)
            return guide(call(x, t, "uncond", i), pos, s) if guided else pos
        if not guided:
            return call(x, t, "cond", i).float()
        uncond, cond = call(torch.cat([x, x]), t, "both", i).float().chunk(2)
        if self.interval is not None and not self.interval[0] < float(t) / self.num_train_timesteps <= self.interval[1]:
            return cond  # outside the guidance interval: the conditional prediction alone (guidance 1)
        return guide(uncond, cond, s)


#: the distillation families :func:`distillation_spec` accepts
METHODS = ("dmd2", "consistency")
#: the teacher's Euler steps over [0, 1] that consistency distillation walks (a multiple of every student step count,
#: so each student level lies on the grid)
CONSISTENCY_GRID = 32


def student_scheduler(spec: dict):
    """The scheduler a student samples with: ``FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)`` at the
    entry's ``shift`` (set a diffusers pipeline's ``scheduler`` to it; vidgen's own students pass their levels)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    return FlowMatchEulerDiscreteScheduler(shift=spec.get("shift") or 1.0, stochastic_sampling=True)


def distillation_spec(method: str, steps, guidance_scale: float, shift: Optional[float] = None) -> dict:
    """The ``distillation`` entry of a student's config, checked: ``steps`` each divide :data:`CONSISTENCY_GRID`;
    ``shift`` (None: uniform levels) the schedule :func:`student_sigmas` gives."""
    if method not in METHODS:
        raise ConfigError(f"distill.method must be one of {METHODS}, got {method!r}")
    steps = sorted({int(k) for k in steps}) if isinstance(steps, (list, tuple)) and steps else None
    if not steps or any(k < 1 or CONSISTENCY_GRID % k for k in steps):
        raise ConfigError(f"distill.steps must be a non-empty list of step counts dividing {CONSISTENCY_GRID} "
                          f"(e.g. [1, 2, 4]), got {steps!r}")
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or guidance_scale < 1:
        raise ConfigError(f"distill.guidance_scale must be a number >= 1 (the teacher's guidance the student "
                          f"learns), got {guidance_scale!r}")
    if shift is not None and (isinstance(shift, bool) or not isinstance(shift, (int, float)) or shift <= 0):
        raise ConfigError(f"distill.shift must be a number > 0 (the student's FlowMatchEuler shift), got {shift!r}")
    spec = {"method": method, "steps": steps, "guidance_scale": float(guidance_scale)}
    return spec if shift is None else {**spec, "shift": float(shift)}


def student_sigmas(num_steps: int, shift: Optional[float] = None) -> list[float]:
    """The noise levels a ``num_steps``-step student evaluates at: ``1, 1 - 1/k, ..., 1/k``; with ``shift``, those
    of diffusers' ``FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(k)`` (the scheduler a diffusers
    pipeline samples the student with)."""
    if shift is None:
        return [1 - i / num_steps for i in range(num_steps)]
    from diffusers import FlowMatchEulerDiscreteScheduler
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(num_steps)
    return scheduler.sigmas[:-1].tolist()


def check_student_call(spec: dict, num_inference_steps: int, guidance_scale: float) -> None:
    """A distilled student samples only at the step counts it was trained for, and at guidance 1."""
    if num_inference_steps not in spec["steps"]:
        raise InvalidInputError(f"num_inference_steps={num_inference_steps}: this student was distilled for "
                                f"{spec['steps']} steps only; pass one of those")
    if guidance_scale != 1:
        raise InvalidInputError(f"guidance_scale={guidance_scale}: this student has its teacher's guidance "
                                f"({spec['guidance_scale']}) built in and samples at guidance_scale=1; leave "
                                f"guidance_scale out or pass 1")


def flow_timesteps(scheduler, num_inference_steps: int, spec: Optional[dict] = None, device=None,
                   guidance_scale: Optional[float] = None) -> torch.Tensor:
    """Set and return ``scheduler``'s timesteps for ``num_inference_steps`` steps. ``spec``: a distilled student's
    ``distillation`` entry: the student samples only at its trained step counts, on the levels it was trained at,
    and at guidance 1 (checked when ``guidance_scale`` is given)."""
    if spec is None:
        scheduler.set_timesteps(num_inference_steps, device=device)
        return scheduler.timesteps
    if guidance_scale is not None:
        check_student_call(spec, num_inference_steps, guidance_scale)
    scheduler.set_timesteps(sigmas=student_sigmas(num_inference_steps, spec.get("shift")), device=device)
    return scheduler.timesteps


def student_settings(spec: dict) -> dict:
    """The sampling settings a distilled student samples at by default: its largest trained step count, guidance 1
    (its teacher's guidance is built in)."""
    return {"num_inference_steps": max(spec["steps"]), "guidance_scale": 1.0}


def scheduler_step(scheduler, generator: Optional[torch.Generator] = None) -> Callable:
    """``step(prediction, i, t, x)``: one step of a diffusers scheduler (a stochastic one draws from ``generator``)."""
    def step(prediction, i, t, x):
        return scheduler.step(prediction, t, x, generator=generator, return_dict=False)[0]
    return step


def model_input(scheduler) -> Optional[Callable]:
    """The scheduler's ``scale_model_input`` (DDPM-family schedulers), or None (flow matching has none)."""
    return getattr(scheduler, "scale_model_input", None)


def denoise(call: Callable, latents: torch.Tensor, timesteps, step: Callable, guider: Guider, *,
            scale_input: Optional[Callable] = None, clamp: Optional[Callable] = None,
            callback: Optional[Callable] = None, progress: Optional[Callable] = None, first_step: int = 0,
            finish_on_interrupt: bool = False) -> tuple[torch.Tensor, bool]:
    """Denoise ``latents`` along ``timesteps`` -> ``(latents, interrupted)`` (see the module docstring).

    ``scale_input(x, t)``: the scheduler's model-input scaling, if it has one. ``clamp(x)``: after every step (given
    frames kept exactly). ``callback(i, t, {"latents": x})`` after every step, ``i`` counted from ``first_step`` (a
    stream counts over its chunks); it may return new ``"latents"``, a ``"guidance_scale"`` or ``"interrupt": True``,
    which stops the loop there, or with ``finish_on_interrupt`` after the last step (a stream's chunk is finished
    before the stream ends). ``progress``: wraps the timesteps in a progress bar. Gradients are recorded as the
    caller's grad mode says (sampling runs under ``torch.no_grad``; a student's rollout in training may not)."""
    interrupted = False
    for i, t in enumerate(progress(timesteps) if progress else timesteps):
        x_in = scale_input(latents, t) if scale_input is not None else latents
        latents = step(guider(call, x_in, t, i), i, t, latents)
        if clamp is not None:
            latents = clamp(latents)
        latents, stop = step_callback(callback, first_step + i, t, "latents", latents, guider.guidance)
        interrupted = interrupted or stop
        if stop and not finish_on_interrupt:
            break
    return latents, interrupted

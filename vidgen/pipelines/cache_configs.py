"""The cache configs ``pipe.enable_cache(config)`` takes on a :class:`~vidgen.pipelines.DiffusersVideoPipeline`:
every cache config of ``diffusers.hooks`` (0.42: :data:`CACHE_CONFIGS`), made to work with vidgen's sampler:

- ``PyramidAttentionBroadcastConfig`` / ``FasterCacheConfig`` read the step's timestep through
  ``current_timestep_callback``; left out, it is filled with ``lambda: pipe.current_timestep``: the timestep the
  transformer was last called with (a forward pre-hook records it, as diffusers' pipelines set ``current_timestep``).
- ``FasterCacheConfig`` takes the unconditional half of a batched ``[uncond; cond]`` model call: the families whose
  pipeline runs guidance as one batched pass (``Family.cfg == "batched"``: CogVideoX, Mochi) take it; a family
  guided by separate passes (Wan, HunyuanVideo) takes it only with ``is_guidance_distilled=True`` (a model without
  CFG: every call conditional), and is refused by name otherwise, before any work. It splits the input's frames by
  frequency, so a transformer that takes packed tokens (LTX-Video) is refused by name too.
- ``MagCacheConfig`` needs per-checkpoint ``mag_ratios``: :func:`calibrate_mag_cache` samples once and returns them.

The others (``FirstBlockCacheConfig``, ``TaylorSeerCacheConfig``, ``SeaCacheConfig``, ``TextKVCacheConfig``) go to
diffusers as given. vidgen's sampler gives each model call diffusers' cache context (``cond`` / ``uncond``, the step)
and clears the hooks' state at the start of each call.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from vidgen.errors import InvalidInputError, UnsupportedError

#: the cache configs of ``diffusers.hooks`` (0.42) ``enable_cache`` takes, by name
CACHE_CONFIGS = ("FirstBlockCacheConfig", "MagCacheConfig", "TaylorSeerCacheConfig", "PyramidAttentionBroadcastConfig",
                 "FasterCacheConfig", "SeaCacheConfig", "TextKVCacheConfig")
#: the configs that read the current timestep through ``current_timestep_callback``
TIMESTEP_CONFIGS = ("PyramidAttentionBroadcastConfig", "FasterCacheConfig")
_PROBE = "_vidgen_timestep_probe"


def current_timestep(pipe) -> Optional[float]:
    """The timestep the pipeline's transformer(s) were last called with (None before the first call)."""
    return pipe.__dict__.get("_current_timestep")


def prepare_cache_config(pipe, config):
    """``config`` as ``enable_cache`` passes it to diffusers (module docstring): the timestep callback filled in,
    FasterCache refused by name where the family guides by separate passes. Configs of other types pass unchanged
    (diffusers' own refusal names them)."""
    name = type(config).__name__
    if name not in CACHE_CONFIGS or type(config).__module__.split(".")[0] != "diffusers":
        return config
    family = pipe.family
    if name == "FasterCacheConfig" and family.cfg != "batched" and not config.is_guidance_distilled:
        raise UnsupportedError(f"enable_cache: FasterCacheConfig reuses the unconditional half of a batched [uncond; "
                               f"cond] model call; the {family.pipeline} family guides by separate passes (one call "
                               f"per condition, as its diffusers pipeline does), so there is no such half. Pass "
                               f"is_guidance_distilled=True for a model sampled without CFG, or use another cache "
                               f"(FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig, "
                               f"PyramidAttentionBroadcastConfig)")
    if name == "FasterCacheConfig" and _packed(pipe):
        raise UnsupportedError(f"enable_cache: FasterCacheConfig splits the model input's frames by frequency and "
                               f"needs a video tensor (tensor_format BCFHW / BFCHW); the {family.pipeline} family's "
                               f"transformer takes packed tokens (B, N, C). Use another cache (FirstBlockCacheConfig, "
                               f"MagCacheConfig, TaylorSeerCacheConfig, PyramidAttentionBroadcastConfig)")
    if name in TIMESTEP_CONFIGS and config.current_timestep_callback is None:
        config = dataclasses.replace(config, current_timestep_callback=lambda: current_timestep(pipe))
    return config


def _packed(pipe) -> bool:
    """Whether the family's transformer takes packed tokens (B, N, C) rather than a video tensor (its pipeline's
    latent layout, ``Family.pipeline_latents``, on a small grid)."""
    return pipe.family.pipeline_latents(torch.zeros(1, 1, 4, 8, 8), pipe.transformer).dim() != 5


def add_timestep_probe(pipe, model) -> None:
    """Record the timestep of each call of ``model`` on ``pipe`` (a forward pre-hook: it runs before the cache
    hooks, which wrap ``forward``). The families call their transformer with ``timestep=`` (B,) or, Wan 2.2's
    per-token timesteps, (B, N): the first entry is the step's."""
    if getattr(model, _PROBE, None) is not None:
        return

    def probe(module, args, kwargs):
        t = kwargs.get("timestep")
        if t is not None:
            pipe.__dict__["_current_timestep"] = float(torch.as_tensor(t).reshape(-1)[0])
    setattr(model, _PROBE, model.register_forward_pre_hook(probe, with_kwargs=True))


def remove_timestep_probe(model) -> None:
    handle = getattr(model, _PROBE, None)
    if handle is not None:
        handle.remove()
        delattr(model, _PROBE)


def _mag_tail(model):
    """``(tail block, its MagCache hook)`` of ``model`` (the hook whose state holds the calibration ratios)."""
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook("mag_cache_block_hook") if registry is not None else None
        if hook is not None and getattr(hook, "is_tail", False):
            return module, hook
    raise UnsupportedError(f"calibrate_mag_cache: {type(model).__name__} has no MagCache tail block hook")


def calibrate_mag_cache(pipe, prompt, *, num_inference_steps: Optional[int] = None, per_context: bool = False,
                        **call_kwargs):
    """MagCache's ``mag_ratios`` for ``pipe``'s transformer at ``num_inference_steps`` (else the pipeline's): one
    call of ``pipe(prompt, num_inference_steps=..., **call_kwargs)`` with calibrating hooks (no step skipped), the
    ratios of each step's residual norm to the previous step's read from the hooks' state (diffusers would only print
    them). Returns the conditional pass's list, one ratio per step (the first 1.0), for
    ``MagCacheConfig(mag_ratios=..., num_inference_steps=...)``; ``per_context=True``: ``{"cond": [...], "uncond":
    [...]}`` (the unconditional pass's own under CFG with separate passes; ``"cond_uncond"`` for a batched family).
    The pipeline's cache is left off (refused by name when one is on)."""
    from diffusers.hooks import MagCacheConfig
    if getattr(pipe, "transformer_2", None) is not None:
        raise UnsupportedError("calibrate_mag_cache: the pipeline has a second transformer (a two-expert model), which "
                               "would need ratios of its own steps; calibrate pipe.transformer alone with "
                               "MagCacheConfig(calibrate=True) on each model")
    if getattr(pipe.transformer, "is_cache_enabled", False):
        raise InvalidInputError("calibrate_mag_cache: a cache is on; pipe.disable_cache() first")
    steps = num_inference_steps or pipe.sampling_config.num_inference_steps
    # one more step than sampled: diffusers' hook prints the ratios and clears them after the configured count;
    # below it they stay in the hooks' state, copied after each call of the tail block (the pipeline clears the
    # hooks' state when the call ends)
    pipe.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=steps + 1))
    ratios = {}
    try:
        block, hook = _mag_tail(pipe.transformer)

        def copy(*_):
            ratios.update({name: list(state.calibration_ratios)
                           for name, state in hook.state_manager._state_cache.items()})
        handle = block.register_forward_hook(copy)
        try:
            pipe(prompt, num_inference_steps=steps, **call_kwargs)
        finally:
            handle.remove()
    finally:
        pipe.disable_cache()
    if per_context:
        return ratios
    return ratios.get("cond") or ratios.get("cond_uncond") or next(iter(ratios.values()))

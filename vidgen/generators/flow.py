"""``DiffusionVideoTransformer``: latent flow matching (default) or DDPM epsilon / v prediction on VAE latents.

Training (minRF / SD3): ``x_t = (1 - s) x0 + s eps`` with logit-normal ``s``, target ``eps - x0``; the model sees
``timestep = s * 1000``, the scale diffusers' ``FlowMatchEulerDiscreteScheduler`` passes at sampling (one time
scale for both). ``prediction_type="epsilon" | "v_prediction"`` trains on diffusers' ``DDPMScheduler`` noising and
samples with ``DDIMScheduler`` (or any scheduler with the same ``prediction_type``): no scheduler math is written here.

Conditioning frames (image-to-video, prediction, interpolation) follow VDT with a mask over latent frames: the model
input is ``[noisy latents, given latents * mask, mask]`` along channels; the loss skips given frames and sampling
puts the given latents back exactly.

Self-conditioning (``self_condition=True``, flow only; Chen et al., Analog Bits; RIN): one more input, the model's
own estimate of the clean latents. Training feeds, for a random half of the samples, the estimate of a first
gradient-free pass (zeros for the rest); sampling feeds each step the previous step's estimate, at no extra cost.
Why it is here: the shapes models draw the layout early and the shape late, and rotation is decided only once a
shape is there (eval/caption_probe.py); refining an explicit estimate is the standard remedy. Its new input weights
start at zero, so a plain model continues as a self-conditioned one (``init_from``) from the same function.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators.base import GeneratorMixin, check_guidance, check_loss_weight, check_steps, per_sample_mean
from vidgen.generators.compiled import compiled_forward
from vidgen.generators.embeddings import Conditioning, PatchEmbed3D, TimestepEmbedding
from vidgen.generators.sampling import apply_cfg, cfg_batch, sample_given_mask
from vidgen.rng import GeneratorLike, rows

PREDICTION_TYPES = ("flow", "epsilon", "v_prediction")


class DiffusionVideoTransformer(GeneratorMixin, ModelMixin, ConfigMixin):
    """Latent DiT / Latte over ``(B, C, t, h, w)`` latents (see the module docstring)."""

    config_name = "config.json"
    training_only_config = GeneratorMixin.training_only_config + ("logit_normal_std",)

    @register_to_config
    def __init__(self, in_channels: int = 16, patch_size=(1, 2, 2), prediction_type: str = "flow",
                 cond_dropout: float = 0.1, task_prob: float = 0.3, logit_normal_std: float = 1.0,
                 self_condition: bool = False, architecture: Optional[dict] = None):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if self_condition and prediction_type != "flow":
            raise ConfigError(f"self_condition is implemented for prediction_type='flow', not {prediction_type!r}")
        self._build_shared(architecture)
        d = self.backbone_config.dim
        inputs = 2 * in_channels + 1 + (in_channels if self_condition else 0)  # [x_t, given, mask(, estimate)]
        self.patch = PatchEmbed3D(inputs, in_channels, d, patch_size)
        self.time_embed = TimestepEmbedding(d)
        self.head = nn.Linear(d, in_channels * math.prod(self.patch.patch_size))
        nn.init.zeros_(self.head.weight)  # DiT: the output starts at zero
        nn.init.zeros_(self.head.bias)
        self._noise_schedule = DDPMScheduler(num_train_timesteps=1000) if prediction_type != "flow" else None

    # ------------------------------------------------------------------ token interface
    @classmethod
    def tokenizer_kwargs(cls, tokenizer) -> dict:
        """Constructor arguments that pair a new generator with ``tokenizer``."""
        cls._check_kind(tokenizer)
        return {"in_channels": int(tokenizer.config.latent_channels)}

    @classmethod
    def _check_kind(cls, tokenizer) -> None:
        if not hasattr(tokenizer, "normalize_latents"):
            raise InvalidInputError(f"tokenizer: {cls.__name__} works on continuous latents and needs a "
                                    f"CausalVAE, got {type(tokenizer).__name__}")

    def check_tokenizer(self, tokenizer) -> None:
        self._check_kind(tokenizer)
        if tokenizer.config.latent_channels != self.config.in_channels:
            raise InvalidInputError(f"tokenizer: {tokenizer.config.latent_channels} latent channels, but the "
                                    f"generator takes in_channels={self.config.in_channels}")

    @torch.no_grad()
    def encode_videos(self, tokenizer, video: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        """Video -> normalized latents (the posterior mode), ``(B, C, t, h, w)``."""
        self.check_tokenizer(tokenizer)
        return tokenizer.normalize_latents(tokenizer.encode(video, chunk_frames=chunk_frames).latent_dist.mode())

    @torch.no_grad()
    def decode_videos(self, tokenizer, latents: torch.Tensor, num_frames: int, height: int, width: int,
                      chunk_frames: Optional[int] = None) -> torch.Tensor:
        self.check_tokenizer(tokenizer)
        z = tokenizer.denormalize_latents(latents.to(tokenizer.dtype))
        return tokenizer.decode(z, num_frames, height, width, chunk_frames=chunk_frames).sample

    # ------------------------------------------------------------------ model
    def check_latents(self, latents, name: str = "latents") -> None:
        c = self.config.in_channels
        if not isinstance(latents, torch.Tensor) or latents.dim() != 5 or latents.shape[1] != c:
            raise InvalidInputError(f"{name} must have shape (B, {c}, t, h, w), got "
                                    f"{tuple(getattr(latents, 'shape', ())) or type(latents).__name__}")
        if not latents.is_floating_point():
            raise InvalidInputError(f"{name} must be a float tensor, got {latents.dtype}")

    def load_related(self, source: "DiffusionVideoTransformer", differ: list[str]) -> bool:
        """``init_from`` a model of this class whose configuration differs only in ``differ``: coarser patches
        (:meth:`load_coarser_patches`) or no self-conditioning (:meth:`load_without_self_condition`). False if
        neither applies (the caller then reports the difference)."""
        if differ == ["patch_size"]:
            self.load_coarser_patches(source)
            return True
        if differ == ["self_condition"] and self.config.self_condition:
            self.load_without_self_condition(source)
            return True
        return False

    @torch.no_grad()
    def load_without_self_condition(self, source: "DiffusionVideoTransformer") -> None:
        """Start a self-conditioned model from a plain one: every weight copied, the estimate's input weights zero,
        so the new model computes exactly what ``source`` does until training moves them."""
        state = dict(source.state_dict())
        d, p = self.backbone_config.dim, math.prod(self.patch.patch_size)
        old = state["patch.proj.weight"].reshape(d, -1, p)  # features are flattened as (C, pt, ph, pw)
        extra = old.new_zeros(d, self.config.in_channels, p)
        state["patch.proj.weight"] = torch.cat([old, extra], dim=1).reshape(d, -1)
        self.load_state_dict(state)

    @torch.no_grad()
    def load_coarser_patches(self, source: "DiffusionVideoTransformer") -> None:
        """Start from ``source``, the same model trained with larger latent patches (e.g. 1x2x2 -> 1x1x1).

        Every weight but the patch embedding and the head is copied. A fine token gets the embedding the coarse
        model gave a patch filled with its value (the sum of the patch weights over the patch's cells) and predicts
        the mean of the coarse head's cells, so the new model starts as a blocky copy of ``source`` on a finer
        grid (RoPE positions count fine cells, which fine-tuning has to adapt to)."""
        fine, coarse = self.patch.patch_size, source.patch.patch_size
        if fine != (1, 1, 1) or coarse == fine:
            raise ConfigError(f"init_from: patches {list(coarse)} -> {list(fine)}: only coarser patches -> 1x1x1")
        same = ("in_channels", "prediction_type", "architecture", "self_condition")
        if type(source) is not type(self) or any(self.config[k] != source.config[k] for k in same):
            raise ConfigError(f"init_from: the source must match this model in {', '.join(same)}")
        state = {k: v for k, v in source.state_dict().items() if not k.startswith(("patch.", "head."))}
        d, c_in, c_out = self.backbone_config.dim, self.patch.in_channels, self.patch.out_channels
        # coarse token features are flattened as (C, pt, ph, pw)
        state["patch.proj.weight"] = source.patch.proj.weight.reshape(d, c_in, -1).sum(-1)  # (d, C_in)
        state["patch.proj.bias"] = source.patch.proj.bias
        state["head.weight"] = source.head.weight.reshape(c_out, -1, d).mean(1)  # (C_out, d)
        state["head.bias"] = source.head.bias.reshape(c_out, -1).mean(1)
        self.load_state_dict(state)

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, cond: Optional[Conditioning] = None,
                given_latents: Optional[torch.Tensor] = None, given_mask: Optional[torch.Tensor] = None,
                drop: Optional[torch.Tensor] = None, estimate: Optional[torch.Tensor] = None, return_dict: bool = True):
        """latents (B, C, t, h, w); timestep (B,) on the scheduler's 0..1000 scale; ``given_mask`` (B, t) bool marks
        latent frames given in ``given_latents``; ``drop`` (B,) bool selects the null condition; ``estimate``
        (B, C, t, h, w): a self-conditioned model's previous clean-latent estimate (None = zeros, no estimate)."""
        self.check_latents(latents)
        if estimate is not None:
            if not self.config.self_condition:
                raise InvalidInputError("estimate: this model was not trained with self_condition=True")
            if estimate.shape != latents.shape:
                raise InvalidInputError(f"estimate must have the latents' shape {tuple(latents.shape)}, "
                                        f"got {tuple(estimate.shape)}")
        b, c, t, h, w = latents.shape
        timestep = torch.as_tensor(timestep, device=latents.device).reshape(-1).expand(b)
        if given_mask is None:
            mask = latents.new_zeros(b, 1, t, h, w)
            given = torch.zeros_like(latents)
        else:
            if given_latents is None or given_mask.shape != (b, t):
                raise InvalidInputError(f"given_mask must be a ({b}, {t}) bool tensor with given_latents, "
                                        f"got {tuple(given_mask.shape)}")
            mask = given_mask[:, None, :, None, None].to(latents.dtype).expand(b, 1, t, h, w)
            given = given_latents.to(latents.dtype) * mask
        inputs = [latents, given, mask]
        if self.config.self_condition:
            inputs.append(torch.zeros_like(latents) if estimate is None else estimate.to(latents.dtype))
        x = self.patch(torch.cat(inputs, dim=1).to(self.dtype))  # (B, N, d); fp32 latents into bf16 weights too
        grid = self.patch.grid((t, h, w))
        prefix, context, vec = self.embed_condition(cond, b, drop)
        vec = vec + self.time_embed(timestep)
        out = self.backbone(x, grid, vec, prefix=prefix, context=context)
        sample = self.patch.unpatchify(self.head(out), (t, h, w))
        return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)

    def default_scheduler(self):
        """``FlowMatchEulerDiscreteScheduler`` for flow models, ``DDIMScheduler`` with the model's prediction type
        otherwise (any diffusers scheduler with a matching configuration can replace it via ``from_config``)."""
        from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
        if self.config.prediction_type == "flow":
            return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
        return DDIMScheduler(num_train_timesteps=1000, prediction_type=self.config.prediction_type,
                             clip_sample=False, timestep_spacing="trailing", set_alpha_to_one=False)

    def sample(self, grid, batch: int, cond: Optional[Conditioning] = None, negative: Optional[Conditioning] = None,
               guidance_scale: float = 1.0, num_inference_steps: int = 25,
               generator: Optional[torch.Generator] = None, scheduler=None, **kwargs) -> torch.Tensor:
        """The uniform sampling call of every generator: normalized latents (B, C, t, h, w) for a latent ``grid``."""
        return generate_latents(self, scheduler or self.default_scheduler(), (batch, self.config.in_channels, *grid),
                                cond, negative, guidance_scale, num_inference_steps, generator, **kwargs)

    # ------------------------------------------------------------------ training
    def loss(self, x0: torch.Tensor, cond: Optional[Conditioning] = None, generator: GeneratorLike = None,
             weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
        """Training loss on normalized latents ``x0`` (B, C, t, h, w); random CFG dropout and conditioning frames.
        ``weight``: optional (B, t, h, w) per-position weights (a weighted mean per sample)."""
        self.check_latents(x0, "x0")
        check_loss_weight(weight, (x0.shape[0], *x0.shape[2:]))
        b, t = x0.shape[0], x0.shape[2]
        dev = x0.device
        r = rows(generator)  # per-sample numbers, whatever the split over processes
        noise = r.randn(*x0.shape).to(dev, x0.dtype)
        given = sample_given_mask(b, (t, 1, 1), r, self.config.task_prob, spatial=False)[:, :, 0, 0].to(dev)
        if self.config.prediction_type == "flow":
            s = torch.sigmoid(r.randn(b) * self.config.logit_normal_std).to(dev)
            xt, target, timestep = flow_matching_pair(x0, noise, s)
        else:
            timestep = r.randint(1000, b).to(dev)
            xt = self._noise_schedule.add_noise(x0, noise, timestep)
            target = noise if self.config.prediction_type == "epsilon" else \
                self._noise_schedule.get_velocity(x0, noise, timestep)
        keep = given[:, None, :, None, None]
        xt = torch.where(keep, x0, xt)  # given frames enter clean, as at sampling time
        drop = self.sample_drop(b, r, dev)
        estimate = None
        if self.config.self_condition:
            estimate = self._training_estimate(xt, timestep, cond, x0, given, drop, r.rand(b).to(dev) < 0.5)
        pred = self(xt, timestep, cond, given_latents=x0, given_mask=given, drop=drop, estimate=estimate).sample
        position = (~keep).to(pred.dtype).expand_as(pred)
        if weight is not None:
            position = position * weight[:, None].to(pred)
        loss = per_sample_mean(F.mse_loss(pred.float(), target.float(), reduction="none"), position)  # target frames
        return loss, {"mse": loss.item()}

    @torch.no_grad()
    def _training_estimate(self, xt, timestep, cond, x0, given, drop, use: torch.Tensor) -> torch.Tensor:
        """Self-conditioning input: for samples where ``use`` (B,) holds, the clean-latent estimate of a
        gradient-free pass without one (given frames: their latents, as at sampling); zeros elsewhere."""
        estimate = torch.zeros_like(xt)
        if use.any():
            velocity = self(xt, timestep, cond, given_latents=x0, given_mask=given, drop=drop).sample
            first = clean_estimate(xt, velocity, timestep, given[:, None, :, None, None], x0)
            estimate = torch.where(use[:, None, None, None, None], first, estimate)
        return estimate


def flow_matching_pair(x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor):
    """The straight path at noise levels ``s`` (B,) in [0, 1]: ``x_s = (1 - s) x0 + s noise``, its velocity target
    ``noise - x0`` and the timestep ``s * 1000`` on the scheduler's scale. The one definition training and the
    probes in ``eval/`` share."""
    sb = s[:, None, None, None, None].to(x0.dtype)
    return (1 - sb) * x0 + sb * noise, noise - x0, s * 1000


def clean_estimate(xt: torch.Tensor, velocity: torch.Tensor, timestep: torch.Tensor, keep=None, given=None):
    """The flow model's clean latents ``x_s - s v`` at ``timestep = s * 1000`` (B,) (the inverse of
    :func:`flow_matching_pair`); where ``keep`` (broadcastable bool) holds, the given latents instead."""
    s = (timestep.to(xt.dtype) / 1000).reshape(-1, 1, 1, 1, 1)
    estimate = xt - s * velocity.to(xt.dtype)
    return estimate if keep is None else torch.where(keep, given.to(xt.dtype), estimate)


def check_scheduler(model: DiffusionVideoTransformer, scheduler) -> None:
    """A flow model needs a flow-matching scheduler; a DDPM model one with its ``prediction_type``."""
    name = type(scheduler).__name__
    kind = model.config.prediction_type
    is_flow = "FlowMatch" in name
    if kind == "flow" and not is_flow:
        raise InvalidInputError(f"scheduler: a flow-matching model needs a FlowMatch* scheduler, got {name}")
    if kind != "flow" and (is_flow or getattr(scheduler.config, "prediction_type", None) != kind):
        raise InvalidInputError(f"scheduler: the model predicts {kind!r}; {name} is configured for "
                                f"{getattr(scheduler.config, 'prediction_type', 'flow matching')!r}")


@torch.no_grad()
def generate_latents(model: DiffusionVideoTransformer, scheduler, shape, cond: Optional[Conditioning] = None,
                     negative: Optional[Conditioning] = None, guidance_scale: float = 1.0,
                     num_inference_steps: int = 25, generator: Optional[torch.Generator] = None,
                     latents: Optional[torch.Tensor] = None, given_latents: Optional[torch.Tensor] = None,
                     given_mask: Optional[torch.Tensor] = None,
                     callback: Optional[Callable[[int, torch.Tensor, dict], Optional[dict]]] = None,
                     progress: Optional[Callable] = None, compile: bool = False) -> torch.Tensor:
    """Sample normalized latents of ``shape`` (B, C, t, h, w) with a diffusers scheduler; fp32 whatever the
    model's compute dtype (the ODE state and the scheduler's update stay fp32, only the model call runs in bf16
    under autocast or with bf16 weights). ``compile=True``: the model call through ``torch.compile``
    (:mod:`vidgen.generators.compiled`; the first call of a shape compiles).

    CFG is one batched pass over ``[negative-or-null; cond]``. ``given_mask`` (B, t) keeps the frames of
    ``given_latents`` exactly (they enter every step clean, as in training). ``callback(i, t, {"latents": ...})`` may return a dict replacing ``latents``.
    """
    check_steps(num_inference_steps)
    check_guidance(guidance_scale)
    check_scheduler(model, scheduler)
    b = shape[0]
    dev, dtype = model.device, torch.float32  # the ODE state: fp32 (a bf16 state would round every Euler step)
    call = compiled_forward(model) if compile else model
    model.backbone.check_grid(model.patch.grid(shape[2:]))
    scheduler.set_timesteps(num_inference_steps, device=dev)
    if latents is None:
        latents = torch.randn(tuple(shape), generator=generator).to(dev, dtype)
    elif tuple(latents.shape) != tuple(shape):
        raise InvalidInputError(f"latents must have shape {tuple(shape)}, got {tuple(latents.shape)}")
    elif not latents.is_floating_point() or not torch.isfinite(latents).all():
        raise InvalidInputError(f"latents must be a finite float tensor (starting noise), got dtype {latents.dtype}"
                                f"{'' if not latents.is_floating_point() else ' with NaN or Inf values'}")
    latents = latents.to(dev, dtype) * getattr(scheduler, "init_noise_sigma", 1.0)  # as diffusers pipelines do
    if given_mask is not None or given_latents is not None:
        if given_mask is None or given_latents is None:
            raise InvalidInputError("given_mask and given_latents must be passed together")
        if tuple(given_mask.shape) != (b, shape[2]) or given_mask.dtype != torch.bool:
            raise InvalidInputError(f"given_mask must be a ({b}, {shape[2]}) bool tensor over latent frames, got "
                                    f"{given_mask.dtype} {tuple(given_mask.shape)}")
        if tuple(given_latents.shape) != tuple(shape):
            raise InvalidInputError(f"given_latents must have shape {tuple(shape)}, got {tuple(given_latents.shape)}")
    both, drop, doubled = cfg_batch(cond, negative, b, dev, guidance_scale)
    rep = (lambda x: None if x is None else torch.cat([x, x])) if doubled else (lambda x: x)  # noqa: E731
    keep = None
    if given_mask is not None:
        keep = given_mask[:, None, :, None, None].to(dev)
        latents = torch.where(keep, given_latents.to(dev, dtype), latents)
    estimate = None  # self-conditioning: each branch's (conditional / unconditional) previous clean estimate
    for i, t in enumerate(progress(scheduler.timesteps) if progress else scheduler.timesteps):
        x_in = rep(latents)
        if hasattr(scheduler, "scale_model_input"):  # DDPM-family schedulers; flow matching has none
            x_in = scheduler.scale_model_input(x_in, t)
        timestep = t.expand(x_in.shape[0])
        out = call(x_in, timestep, both, rep(given_latents), rep(given_mask), drop, estimate).sample.float()
        if model.config.self_condition:
            estimate = clean_estimate(x_in, out, timestep, rep(keep), rep(given_latents))
        if doubled:
            out = apply_cfg(out, guidance_scale)
        latents = scheduler.step(out, t, latents, generator=generator).prev_sample.to(dtype)
        if keep is not None:
            latents = torch.where(keep, given_latents.to(dev, dtype), latents)
        if callback is not None:
            changed = callback(i, t, {"latents": latents}) or {}
            latents = changed.get("latents", latents)
    return latents

"""``FlowVideoTransformer``: latent flow matching (default) or DDPM epsilon / v prediction on VAE latents.

Training (minRF / SD3): ``x_t = (1 - s) x0 + s eps`` with logit-normal ``s``, target ``eps - x0``; the model sees
``timestep = s * 1000``, the scale diffusers' ``FlowMatchEulerDiscreteScheduler`` passes at sampling (one time
scale for both). ``prediction_type="epsilon" | "v_prediction"`` trains on diffusers' ``DDPMScheduler`` noising and
samples with ``DDIMScheduler`` (or any scheduler with the same ``prediction_type``): no scheduler math is written here.

Conditioning frames (image-to-video, prediction, interpolation) follow VDT with a mask over latent frames: the model
input is ``[noisy latents, given latents * mask, mask]`` along channels; the loss skips given frames and sampling
puts the given latents back exactly.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators.base import (GeneratorMixin, LatentTokensMixin, check_loss_weight,
                                    check_positive_int, check_steps, check_story, per_sample_mean, story_rows)
from vidgen.generators.compiled import compiled_forward
from vidgen.generators.config import WEIGHTLESS_ARCHITECTURE_KEYS
from vidgen.generators.flow_sampler import distillation_spec
from vidgen.generators.embeddings import Conditioning, PatchEmbed3D, TimestepEmbedding
from vidgen.generators.flow_sampler import Guider, denoise, flow_timesteps, model_input, scheduler_step
from vidgen.generators.routing import draw_route
from vidgen.generators.sampling import Guidance, cfg_batch, check_guidance, flow_matching_pair, sample_given_mask
from vidgen.generators.sampling_config import SamplingConfig, check_context_frames
from vidgen.rng import GeneratorLike, rows

PREDICTION_TYPES = ("flow", "epsilon", "v_prediction")


class FlowVideoTransformer(GeneratorMixin, LatentTokensMixin, ModelMixin, ConfigMixin):
    """Latent DiT / Latte over ``(B, C, t, h, w)`` latents (see the module docstring)."""

    config_name = "config.json"
    former_class_names = ("DiffusionVideoTransformer",)
    supports_routing = True  # loss(..., routing=): token routing in training (vidgen.generators.routing)
    training_only_config = GeneratorMixin.training_only_config + ("logit_normal_std", "story_prob", "story_context")

    @register_to_config
    def __init__(self, in_channels: int = 16, patch_size=(1, 2, 2), prediction_type: str = "flow",
                 cond_dropout: float = 0.1, task_prob: float = 0.3, logit_normal_std: float = 1.0,
                 architecture: Optional[dict] = None, distillation: Optional[dict] = None, story_prob: float = 0.0,
                 story_context: int = 1):
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        check_story(story_prob, story_context)
        self._build_shared(architecture)
        d = self.backbone_config.dim
        self.patch = PatchEmbed3D(2 * in_channels + 1, in_channels, d, patch_size)  # [x_t, given, mask]
        self.time_embed = TimestepEmbedding(d)
        self.head = nn.Linear(d, in_channels * math.prod(self.patch.patch_size))
        nn.init.zeros_(self.head.weight)  # DiT: the output starts at zero
        nn.init.zeros_(self.head.bias)
        self._noise_schedule = DDPMScheduler(num_train_timesteps=1000) if prediction_type != "flow" else None
        if distillation is not None:  # a few-step student (vidgen.distillation.losses)
            distillation_spec(**distillation)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """A config carrying ``"self_condition": false`` (an option this model does not have) loads with the key
        dropped; a self-conditioned model cannot be built: a clear error instead of a weight mismatch."""
        config_dict = dict(config_dict)
        if config_dict.pop("self_condition", False):
            raise ConfigError("self_condition=true: self-conditioned flow models were an unshipped experiment and "
                              "are not supported; experiments/README.md names the revision of vidgen "
                              "that loads them")
        return super().extract_init_dict(config_dict, **kwargs)

    def load_related(self, source: "FlowVideoTransformer", differ: list[str]) -> bool:
        """``init_from`` a model of this class whose configuration differs only in ``differ``: coarser patches
        (:meth:`load_coarser_patches`), and architecture keys that shape no weight (the token extent ``max_grid``,
        the attention ``layout`` / ``window`` / backend). False otherwise (the caller then reports the difference)."""
        if type(source) is not type(self):
            return False
        if "architecture" in differ:
            if not same_weight_shapes(self.config["architecture"], source.config["architecture"]):
                return False
            differ = [k for k in differ if k != "architecture"]
            if not differ:
                self.load_state_dict(source.state_dict())
                return True
        if differ == ["patch_size"]:
            self.load_coarser_patches(source)
            return True
        if "in_channels" in differ and set(differ) <= {"in_channels", "patch_size"}:
            self.load_other_latents(source)
            return True
        return False

    @torch.no_grad()
    def load_other_latents(self, source: "FlowVideoTransformer") -> None:
        """Start from ``source``: the same model trained on another tokenizer's latents (another channel count,
        e.g. a VAE with 4x4-pixel latents whose 1x2x2 patches give the backbone the token grid of 8x8-pixel latents
        one per token). The backbone and the conditioning are copied; the patch embedding and the head start as
        this model built them (the latents mean other things)."""
        if type(source) is not type(self) or any(self.config[k] != source.config[k]
                                                 for k in ("prediction_type", "architecture")):
            raise ConfigError("init_from: the source must match this model in prediction_type and architecture")
        state = {k: v for k, v in source.state_dict().items() if not k.startswith(("patch.", "head."))}
        state.update({k: v for k, v in self.state_dict().items() if k.startswith(("patch.", "head."))})
        self.load_state_dict(state)

    @torch.no_grad()
    def load_coarser_patches(self, source: "FlowVideoTransformer") -> None:
        """Start from ``source``, the same model trained with larger latent patches (e.g. 1x2x2 -> 1x1x1).

        Every weight but the patch embedding and the head is copied. A fine token gets the embedding the coarse
        model gave a patch filled with its value (the sum of the patch weights over the patch's cells) and predicts
        the mean of the coarse head's cells, so the new model starts as a blocky copy of ``source`` on a finer
        grid (RoPE positions count fine cells, which fine-tuning has to adapt to)."""
        fine, coarse = self.patch.patch_size, source.patch.patch_size
        if fine != (1, 1, 1) or coarse == fine:
            raise ConfigError(f"init_from: patches {list(coarse)} -> {list(fine)}: only coarser patches -> 1x1x1")
        same = ("in_channels", "prediction_type")
        if type(source) is not type(self) or any(self.config[k] != source.config[k] for k in same) or not \
                same_weight_shapes(self.config["architecture"], source.config["architecture"]):
            raise ConfigError(f"init_from: the source must match this model in {', '.join(same)} and the "
                              "architecture's weights")
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
                drop: Optional[torch.Tensor] = None, return_dict: bool = True, *, sp=None, route=None):
        """latents (B, C, t, h, w); timestep (B,) on the scheduler's 0..1000 scale; ``given_mask`` (B, t) bool marks
        latent frames given in ``given_latents``; ``drop`` (B,) bool selects the null condition; ``sp``: the
        sequence-parallel group the backbone splits over (:mod:`vidgen.parallel`), None: unsplit; ``route``: a
        :class:`~vidgen.generators.routing.TokenRoute` over the patch tokens (training only), None: every token
        through every block."""
        self.check_latents(latents)
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
        # (B, N, d); fp32 latents into bf16 weights too
        x = self.patch(torch.cat([latents, given, mask], dim=1).to(self.dtype))
        grid = self.patch.grid((t, h, w))
        prefix, context, vec = self.embed_condition(cond, b, drop)
        vec = vec + self.time_embed(timestep, x.dtype)
        out = self.backbone(x, grid, vec, prefix=prefix, context=context, sp=sp, route=route)
        sample = self.patch.unpatchify(self.head(out), (t, h, w))
        return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)

    def default_scheduler(self):
        """``FlowMatchEulerDiscreteScheduler`` for flow models, ``DDIMScheduler`` with the model's prediction type
        otherwise (any diffusers scheduler with a matching configuration can replace it via ``from_config``)."""
        from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
        if self.config.prediction_type == "flow":  # a distilled student re-noises each clean estimate
            return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000,
                                                   stochastic_sampling=self.config.distillation is not None)
        return DDIMScheduler(num_train_timesteps=1000, prediction_type=self.config.prediction_type,
                             clip_sample=False, timestep_spacing="trailing", set_alpha_to_one=False)

    def sample(self, grid, batch: int, cond: Optional[Conditioning] = None, config=None, scheduler=None,
               **options) -> torch.Tensor:
        """The uniform sampling call of every generator: normalized latents (B, C, t, h, w) for a latent ``grid``;
        ``config`` and keyword ``options`` as :func:`generate_latents`."""
        return generate_latents(self, cond, config, scheduler=scheduler, grid=grid, batch=batch, **options)

    # ------------------------------------------------------------------ training
    def loss(self, x0: torch.Tensor, cond: Optional[Conditioning] = None, generator: GeneratorLike = None,
             weight: Optional[torch.Tensor] = None, *, sp=None, routing=None) -> tuple[torch.Tensor, dict]:
        """Training loss on normalized latents ``x0`` (B, C, t, h, w); random CFG dropout and conditioning frames.
        ``weight``: optional (B, t, h, w) per-position weights (a weighted mean per sample); ``sp``: as
        :meth:`forward`; ``routing``: a :class:`~vidgen.training.routing.RoutingConfig` whose ``ratio`` of the patch
        tokens, drawn from ``generator`` after the other draws, skips its span of blocks (None or ratio 0: none).
        With ``story_prob``, drawn last, clips given the next clip's last frames (:func:`story_rows`)."""
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
        drop = self.sample_drop(b, r, dev)
        route = draw_route(routing, r, b, math.prod(self.patch.grid(tuple(x0.shape[2:]))),
                           self.backbone_config.depth, dev)
        x0, given = self._story(x0, given, r)
        keep = given[:, None, :, None, None]
        xt = torch.where(keep, x0, xt)  # given frames enter clean, as at sampling time
        pred = self(xt, timestep, cond, given_latents=x0, given_mask=given, drop=drop, sp=sp, route=route).sample
        position = (~keep).to(pred.dtype).expand_as(pred)
        if weight is not None:
            position = position * weight[:, None].to(pred)
        loss = per_sample_mean(F.mse_loss(pred.float(), target.float(), reduction="none"), position)  # target frames
        return loss, {"mse": loss.item()}

    def _story(self, x0: torch.Tensor, given: torch.Tensor, r) -> tuple[torch.Tensor, torch.Tensor]:
        """Story rows (:func:`story_rows`): the first ``story_context`` latent frames are the next clip's last ones,
        given; the rest of the clip is generated (its own task's given frames dropped)."""
        k = self.config.story_context
        story = story_rows(r, x0.shape[0], x0.shape[2], self.config.story_prob, k, x0.device)
        if story is None:
            return x0, given
        x0, given = x0.clone(), given.clone()
        x0[story, :, :k] = x0.roll(-1, 0)[story, :, -k:]
        given[story] = False
        given[story, :k] = True
        return x0, given


def same_weight_shapes(architecture: Optional[dict], other: Optional[dict]) -> bool:
    """Whether two ``architecture`` configs build the same weights (they may differ in
    :data:`~vidgen.generators.config.WEIGHTLESS_ARCHITECTURE_KEYS`)."""
    def weights(a):
        return {k: v for k, v in (a or {}).items() if k not in WEIGHTLESS_ARCHITECTURE_KEYS}
    return weights(architecture) == weights(other)


def check_scheduler(model: FlowVideoTransformer, scheduler) -> None:
    """A flow model needs a flow-matching scheduler; a DDPM model one with its ``prediction_type``."""
    name = type(scheduler).__name__
    kind = model.config.prediction_type
    is_flow = "FlowMatch" in name
    if kind == "flow" and not is_flow:
        raise InvalidInputError(f"scheduler: a flow-matching model needs a FlowMatch* scheduler, got {name}")
    if kind != "flow" and (is_flow or getattr(scheduler.config, "prediction_type", None) != kind):
        raise InvalidInputError(f"scheduler: the model predicts {kind!r}; {name} is configured for "
                                f"{getattr(scheduler.config, 'prediction_type', 'flow matching')!r}")


def check_latents_input(model: FlowVideoTransformer, latents, shape) -> None:
    """The caller's starting noise: a finite float tensor of ``shape`` (B, C, t, h, w)."""
    if tuple(latents.shape) != tuple(shape):
        raise InvalidInputError(f"latents must have shape {tuple(shape)}, got {tuple(latents.shape)}")
    if not latents.is_floating_point() or not torch.isfinite(latents).all():
        raise InvalidInputError(f"latents must be a finite float tensor (starting noise), got dtype {latents.dtype}"
                                f"{'' if not latents.is_floating_point() else ' with NaN or Inf values'}")


def check_guidance_interval(interval) -> None:
    """None (guide every step), or ``(low, high)`` with ``0 <= low < high <= 1``: CFG only at the steps whose noise
    level (timestep / the scheduler's ``num_train_timesteps``) lies in ``(low, high]``; the others sample the
    conditional prediction alone (guidance 1)."""
    pair = isinstance(interval, (tuple, list)) and len(interval) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval)
    if interval is not None and not (pair and 0 <= interval[0] < interval[1] <= 1):
        raise InvalidInputError(f"guidance_interval must be None or a (low, high) pair with 0 <= low < high <= 1 (the "
                                f"noise levels where guidance applies), got {interval!r}")


@dataclasses.dataclass(frozen=True)
class FlowSamplingConfig(SamplingConfig):
    """The flow generator's sampling settings (:mod:`vidgen.generators.sampling_config`). ``context_frames``: the
    latent frames each chunk of a story or long video is given from before it (:mod:`vidgen.pipelines.story`)."""

    num_inference_steps: int = 25
    guidance_scale: float = 4.0
    guidance_interval: Optional[tuple] = None
    context_frames: int = 1
    checks: ClassVar[dict] = {"num_inference_steps": check_steps, "guidance_scale": check_guidance,
                              "guidance_interval": check_guidance_interval, "context_frames": check_context_frames}


def _check_given(model: FlowVideoTransformer, shape, given_latents, given_mask) -> None:
    if given_mask is None and given_latents is None:
        return
    if given_mask is None or given_latents is None:
        raise InvalidInputError("given_mask and given_latents must be passed together")
    if tuple(given_mask.shape) != shape[:1] + shape[2:3] or given_mask.dtype != torch.bool:
        raise InvalidInputError(f"given_mask must be a {shape[:1] + shape[2:3]} bool tensor over latent frames, got "
                                f"{given_mask.dtype} {tuple(given_mask.shape)}")
    if tuple(given_latents.shape) != shape:
        raise InvalidInputError(f"given_latents must have shape {shape}, got {tuple(given_latents.shape)}")


@torch.no_grad()
def generate_latents(model: FlowVideoTransformer, cond: Optional[Conditioning] = None,
                     config: Optional[FlowSamplingConfig] = None, *, grid, batch: int, scheduler=None,
                     negative: Optional[Conditioning] = None, generator: Optional[torch.Generator] = None,
                     latents: Optional[torch.Tensor] = None, given_latents: Optional[torch.Tensor] = None,
                     given_mask: Optional[torch.Tensor] = None,
                     callback: Optional[Callable[[int, torch.Tensor, dict], Optional[dict]]] = None,
                     progress: Optional[Callable] = None, compile: bool = False,
                     guidance: Optional[Guidance] = None, sp=None, **settings) -> torch.Tensor:
    """Sample normalized latents (B, C, t, h, w) for a latent ``grid`` (t, h, w) with a diffusers scheduler (the
    model's :meth:`~FlowVideoTransformer.default_scheduler` if None). ``config`` (default
    :class:`FlowSamplingConfig`) with ``settings`` applied (:meth:`~SamplingConfig.replace`) gives the steps,
    guidance and guidance interval. Everything is checked first.

    The ODE state and the scheduler's update stay fp32 whatever the model's compute dtype; only the model call runs
    in bf16 under autocast or with bf16 weights. ``compile=True``: the model call through ``torch.compile``
    (:mod:`vidgen.generators.compiled`; the first call of a shape compiles). CFG is one batched pass over
    ``[negative-or-null; cond]``, applied only at noise levels in ``guidance_interval``. ``given_mask`` (B, t) keeps
    the frames of ``given_latents`` exactly (they enter every step clean, as in training).
    ``callback(i, t, {"latents": ...})`` may return a dict with new ``"latents"``, a ``"guidance_scale"`` for the
    following steps, or ``"interrupt": True`` to stop. ``guidance``: the run's :class:`~vidgen.generators.sampling.
    Guidance` (a pipeline's, which its callbacks change), else one at ``config.guidance_scale``. ``sp``: each model
    call split over this sequence-parallel group (:mod:`vidgen.parallel`; every rank of it makes the same call and
    gets the same latents), None: on this process."""
    # 0. checks
    config = FlowSamplingConfig.resolve(config, settings)
    scheduler = scheduler if scheduler is not None else model.default_scheduler()
    check_positive_int("batch", batch)
    check_scheduler(model, scheduler)
    model.check_token_grid(model.patch.grid(tuple(grid)))
    dev, dtype = model.device, torch.float32  # the ODE state: fp32 (a bf16 state would round every Euler step)
    shape = (batch, model.config.in_channels, *grid)
    if latents is not None:
        check_latents_input(model, latents, shape)
    _check_given(model, shape, given_latents, given_mask)
    call = compiled_forward(model) if compile else model
    # 1. timesteps (a distilled student: the levels it was trained at, at guidance 1)
    timesteps = flow_timesteps(scheduler, config.num_inference_steps, model.config.distillation, dev,
                               config.guidance_scale)
    # 2. starting noise in the scheduler's scale (as diffusers pipelines do); given frames enter clean
    if latents is None:
        latents = torch.randn(shape, generator=generator).to(dev, dtype)
    latents = latents.to(dev, dtype) * getattr(scheduler, "init_noise_sigma", 1.0)
    clamp = None
    if given_mask is not None:
        keep, kept = given_mask[:, None, :, None, None].to(dev), given_latents.to(dev, dtype)
        latents = torch.where(keep, kept, latents)
        clamp = lambda x: torch.where(keep, kept, x)  # noqa: E731
    # 3. conditioning for one batched CFG pass over [negative-or-null; cond], applied in the guidance interval
    guidance = Guidance.of(guidance, config)
    both, drop, doubled = cfg_batch(cond, negative, batch, dev, guidance.scale)
    rep = (lambda x: None if x is None else torch.cat([x, x])) if doubled else (lambda x: x)  # noqa: E731
    guider = Guider("batched", guidance, doubled=doubled, interval=config.guidance_interval,
                    num_train_timesteps=scheduler.config.num_train_timesteps)

    def model_call(x, t, which, i):
        return call(x, t.expand(x.shape[0]), both, rep(given_latents), rep(given_mask), drop, sp=sp).sample

    # 4. the denoising loop; the caller's per-step callback may replace the latents, change the guidance, or stop
    latents, _ = denoise(model_call, latents, timesteps, scheduler_step(scheduler, generator), guider,
                         scale_input=model_input(scheduler), clamp=clamp, callback=callback, progress=progress)
    return latents


def __getattr__(name: str):
    """The flow generator's former class name still resolves (folders whose ``model_index.json`` names it load)."""
    if name == "DiffusionVideoTransformer":
        warnings.warn("DiffusionVideoTransformer is deprecated, use FlowVideoTransformer (the old name is removed in "
                      "vidgen 0.3; save the pipeline again to update a folder)", FutureWarning, stacklevel=2)
        return FlowVideoTransformer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

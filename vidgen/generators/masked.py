"""``MaskedVideoTransformer``: MaskGIT / MAGVIT / Phenaki-style masked token modelling on tokenizer ids.

Training: a cosine schedule picks the fraction of tokens to mask (MaskGIT), cross-entropy on masked positions with
optional label smoothing, CFG dropout, and MAGVIT's multi-task conditions (frame prediction, interpolation,
inpainting, outpainting) drawn at random: given tokens are never masked and never scored.

Sampling is diffusers' ``AmusedScheduler`` (flattened ids ``(B, N)``, ``mask_token_id = vocab_size``): per step the
model predicts every masked token, the scheduler samples ids with the caller's generator and re-masks the least
confident ones with annealed Gumbel noise; given tokens get infinite confidence, so they are kept exactly.
Top-k / nucleus filtering and CFG (one batched pass) are applied to the logits before the scheduler sees them;
``greedy_steps`` draws the most likely ids on the last steps. What each setting does on the shipped model is in
its model card and ``docs/results/sampling_sweep_masked.json``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from diffusers import AmusedScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from vidgen.errors import InvalidInputError
from vidgen.generators.base import (DiscreteTokensMixin, GeneratorMixin, check_loss_weight,
                                    check_positive_int, check_steps, per_sample_mean)
from vidgen.generators.compiled import compiled_forward
from vidgen.generators.embeddings import Conditioning, IdPatches
from vidgen.generators.sampling import (Guidance, apply_cfg, cfg_batch, check_guidance, check_top_k, check_top_p,
                                       filter_logits, sample_given_mask, step_callback)
from vidgen.generators.sampling_config import SamplingConfig, check_context_frames
from vidgen.rng import GeneratorLike, rows


class MaskedVideoTransformer(DiscreteTokensMixin, GeneratorMixin, ModelMixin, ConfigMixin):
    """Bidirectional transformer over ids ``(B, t, h, w)``; id ``vocab_size`` is MASK; logits over the codebook."""

    config_name = "config.json"
    training_only_config = GeneratorMixin.training_only_config + ("label_smoothing",)

    @register_to_config
    def __init__(self, vocab_size: int = 1000, label_smoothing: float = 0.1, cond_dropout: float = 0.1,
                 task_prob: float = 0.3, patch_size=(1, 1, 1), architecture: Optional[dict] = None):
        super().__init__()
        if vocab_size < 2:
            raise InvalidInputError(f"vocab_size must be >= 2, got {vocab_size}")
        if len(patch_size) != 3 or not all(isinstance(p, int) and p >= 1 for p in patch_size):
            raise InvalidInputError(f"patch_size must be three ints >= 1 (ids per backbone token), got {patch_size!r}")
        self._build_shared(architecture)
        d = self.backbone_config.dim
        self.patch = IdPatches(patch_size, vocab_size + 1, pad_id=vocab_size)  # ids per backbone token
        self.token_embed = nn.Embedding((vocab_size + 1) * self.patch.size, d)  # + MASK, per position in a patch
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.head = nn.Linear(d, vocab_size * self.patch.size)

    @property
    def mask_token_id(self) -> int:
        return self.config.vocab_size

    def forward(self, ids: torch.Tensor, cond: Optional[Conditioning] = None, drop: Optional[torch.Tensor] = None,
                return_dict: bool = True, *, sp=None):
        """ids (B, t, h, w) in ``[0, vocab_size]`` (``vocab_size`` = MASK) -> logits (B, t, h, w, vocab_size);
        ``sp``: the sequence-parallel group the backbone splits over (:mod:`vidgen.parallel`), None: unsplit."""
        self.check_ids(ids, allow_special=True)
        b, grid = ids.shape[0], tuple(ids.shape[1:])
        prefix, context, vec = self.embed_condition(cond, b, drop)
        tokens = self.token_embed(self.patch.slots(ids)).sum(2)  # (B, N, d): the ids of each patch, summed
        out = self.backbone(tokens, self.patch.grid(grid), vec, prefix=prefix, context=context, sp=sp)
        logits = self.patch.unpatchify(self.head(out), grid)  # (B, t, h, w, V)
        return {"logits": logits} if return_dict else (logits,)

    def sample(self, grid, batch: int, cond: Optional[Conditioning] = None, config=None, **options) -> torch.Tensor:
        """The uniform sampling call of every generator: ids (B, t, h, w); ``config`` and keyword ``options`` as
        :func:`generate_ids`."""
        return generate_ids(self, cond, config, grid=grid, batch=batch, **options)

    def loss(self, ids: torch.Tensor, cond: Optional[Conditioning] = None, generator: GeneratorLike = None,
             weight: Optional[torch.Tensor] = None, *, sp=None) -> tuple[torch.Tensor, dict]:
        """Masked cross-entropy on ids (B, t, h, w) with a cosine mask ratio per sample; ``weight``: optional
        (B, t, h, w) per-token weights (a weighted mean over each sample's masked tokens); ``sp``: as
        :meth:`forward`."""
        self.check_ids(ids)
        check_loss_weight(weight, ids.shape)
        b, t, h, w = ids.shape
        dev = ids.device
        r = rows(generator)  # per-sample numbers, whatever the split over processes
        given = sample_given_mask(b, (t, h, w), r, self.config.task_prob).reshape(b, -1).to(dev)
        given &= ~given.all(1, keepdim=True)  # a task that gives every token (tiny grids) leaves nothing to learn
        ratio = torch.cos(r.rand(b) * torch.pi / 2).to(dev)  # (B,) in (0, 1]
        free = (~given).sum(1)
        num_masked = (ratio * free).ceil().clamp(min=1).minimum(free.clamp(min=1))  # at least one, at most free
        score = r.rand(b, t * h * w).to(dev).masked_fill(given, 2.0)
        rank = score.argsort(1).argsort(1)  # rank of each position among this sample's scores
        masked = (rank < num_masked[:, None]) & ~given  # (B, N)
        inputs = ids.reshape(b, -1).masked_fill(masked, self.mask_token_id).reshape(ids.shape)
        logits = self(inputs, cond, drop=self.sample_drop(b, r, dev), sp=sp)["logits"]
        logits = logits.reshape(b, -1, self.config.vocab_size)
        ce = F.cross_entropy(logits.float().transpose(1, 2), ids.reshape(b, -1), reduction="none",
                             label_smoothing=self.config.label_smoothing)  # (B, N)
        loss = per_sample_mean(ce, masked if weight is None else masked * weight.reshape(b, -1))  # masked tokens
        with torch.no_grad():
            acc = (logits[masked].argmax(-1) == ids.reshape(b, -1)[masked]).float().mean().item()
        return loss, {"ce": loss.item(), "masked_acc": acc, "mask_ratio": masked.float().mean().item()}


def make_scheduler(model: MaskedVideoTransformer) -> AmusedScheduler:
    return AmusedScheduler(mask_token_id=model.mask_token_id, masking_schedule="cosine")


def check_scheduler(model: MaskedVideoTransformer, scheduler: AmusedScheduler) -> None:
    """The scheduler must mask with the model's mask id."""
    if scheduler.config.mask_token_id != model.mask_token_id:
        raise InvalidInputError(f"scheduler: mask_token_id {scheduler.config.mask_token_id} != the model's "
                                f"{model.mask_token_id}")


def check_temperature_schedule(temperature) -> None:
    """The re-masking temperature: a number >= 0, or a ``(start, end)`` pair of them annealed over the steps."""
    pair = isinstance(temperature, (tuple, list)) and len(temperature) == 2
    values = temperature if pair else (temperature,)
    if not all(not isinstance(v, bool) and isinstance(v, (int, float)) and v >= 0 for v in values):
        raise InvalidInputError(f"temperature must be a number >= 0 or a (start, end) pair of them, "
                                f"got {temperature!r}")


def check_greedy_steps(greedy_steps) -> None:
    """How many of the last steps draw the most likely id (top-k 1): an int >= 0 (more than the steps: all)."""
    if isinstance(greedy_steps, bool) or not isinstance(greedy_steps, int) or greedy_steps < 0:
        raise InvalidInputError(f"greedy_steps must be an int >= 0, got {greedy_steps!r}")


@dataclasses.dataclass(frozen=True)
class MaskedSamplingConfig(SamplingConfig):
    """The masked generator's sampling settings (:mod:`vidgen.generators.sampling_config`): steps, CFG scale, the
    re-masking ``temperature`` (a number or an annealed ``(start, end)`` pair), ``top_k`` / ``top_p`` filters of the
    ids drawn, ``greedy_steps`` (the last steps draw the most likely id) and ``context_frames`` (latent frames each
    chunk of a story or long video is given, :mod:`vidgen.pipelines.story`)."""

    num_inference_steps: int = 12
    guidance_scale: float = 3.0
    temperature: object = (2.0, 0.0)
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    greedy_steps: int = 0
    context_frames: int = 2
    checks: ClassVar[dict] = {"num_inference_steps": check_steps, "guidance_scale": check_guidance,
                              "temperature": check_temperature_schedule, "top_k": check_top_k, "top_p": check_top_p,
                              "greedy_steps": check_greedy_steps, "context_frames": check_context_frames}


@torch.no_grad()
def generate_ids(model: MaskedVideoTransformer, cond: Optional[Conditioning] = None,
                 config: Optional[MaskedSamplingConfig] = None, *, grid, batch: int,
                 negative: Optional[Conditioning] = None, generator: Optional[torch.Generator] = None,
                 scheduler: Optional[AmusedScheduler] = None, given_ids: Optional[torch.Tensor] = None,
                 given_mask: Optional[torch.Tensor] = None,
                 callback: Optional[Callable[[int, int, dict], Optional[dict]]] = None,
                 progress: Optional[Callable] = None, compile: bool = False, guidance: Optional[Guidance] = None,
                 sp=None, **settings) -> torch.Tensor:
    """Iterative parallel decoding of ids (B, t, h, w) for a latent ``grid`` (t, h, w). ``config`` (default
    :class:`MaskedSamplingConfig`) with ``settings`` applied (:meth:`~SamplingConfig.replace`) gives the steps,
    guidance, temperature, filters and greedy steps. Everything is checked first. ``given_mask`` (B, t, h, w) bool
    keeps ``given_ids`` exactly (prediction: first frames; interpolation: first + last; inpainting / outpainting: a
    region). ``callback(i, step, {"ids": ...})`` may return a dict with new ``"ids"``, a ``"guidance_scale"`` for the
    following steps, or ``"interrupt": True`` to stop (the tokens still masked take that step's most likely ids).
    ``guidance``: the run's :class:`~vidgen.generators.sampling.Guidance`, else one at ``config.guidance_scale``.

    Logits are taken to fp32 before CFG, top-k and the scheduler's draw, whatever the compute dtype (autocast or
    bf16 weights). ``compile=True``: the model call through ``torch.compile`` (:mod:`vidgen.generators.compiled`).
    ``sp``: each model call split over this sequence-parallel group (:mod:`vidgen.parallel`; every rank of it makes
    the same call and gets the same ids), None: on this process."""
    # 0. checks
    config = MaskedSamplingConfig.resolve(config, settings)
    scheduler = scheduler or make_scheduler(model)
    check_positive_int("batch", batch)
    model.check_token_grid(model.patch.grid(tuple(grid)))
    check_scheduler(model, scheduler)
    if given_mask is not None or given_ids is not None:
        shape = (batch, *grid)
        if given_ids is None or given_mask is None or tuple(given_mask.shape) != shape or \
                tuple(given_ids.shape) != shape:
            raise InvalidInputError(f"given_ids and given_mask must both have shape {shape}")
        model.check_ids(given_ids, "given_ids")
    t, h, w = grid
    dev = model.device
    # 1. start fully masked; given tokens are kept (infinite confidence)
    ids = torch.full((batch, t * h * w), model.mask_token_id, dtype=torch.long, device=dev)
    keep = torch.zeros(batch, t * h * w, dtype=torch.bool, device=dev)
    if given_mask is not None:
        keep = given_mask.reshape(batch, -1).to(dev)
        ids = torch.where(keep, given_ids.reshape(batch, -1).to(dev), ids)
    if bool(keep.all()):
        return ids.reshape(batch, t, h, w)
    # 2. conditioning for one batched CFG pass, the model call and the schedule
    guidance, steps = Guidance.of(guidance, config), config.num_inference_steps
    both, drop, doubled = cfg_batch(cond, negative, batch, dev, guidance.scale)
    call = compiled_forward(model) if compile else model
    given, start_ratio = ids.clone(), float((~keep).float().mean())
    scheduler.set_timesteps(steps, temperature=config.temperature, device=dev)
    # 3. denoising loop: predict every token, CFG and top-k in fp32, the scheduler reveals the most confident ones
    for i, step in enumerate(progress(scheduler.timesteps) if progress else scheduler.timesteps):
        x = ids.reshape(batch, t, h, w)
        logits = call(torch.cat([x, x]) if doubled else x, both, drop, sp=sp)["logits"].float()
        if doubled:
            logits = apply_cfg(logits, guidance.scale)
        greedy = i >= steps - config.greedy_steps
        logits = filter_logits(logits.reshape(batch, t * h * w, -1),
                               *((1, None) if greedy else (config.top_k, config.top_p)))
        ids = scheduler.step(logits, int(step), ids, starting_mask_ratio=start_ratio, generator=generator).prev_sample
        ids = torch.where(keep, given, ids)  # the scheduler re-masks at least one token per sample, given or not
        # 4. the caller's per-step callback may replace the ids, change the guidance, or stop: the tokens still
        # masked then take this step's most likely ids
        if callback is not None:
            x, stop = step_callback(callback, i, int(step), "ids", ids.reshape(batch, t, h, w), guidance)
            ids = x.reshape(batch, -1)
            if stop:
                ids = torch.where(ids == model.mask_token_id, logits.argmax(-1), ids)
                break
    return ids.reshape(batch, t, h, w)

"""Sampling helpers shared by the generators: CFG batching, logit filters, token draws, multi-task masks.

Every random draw takes the caller's ``torch.Generator``; nothing touches the global RNG.
"""
from __future__ import annotations

from typing import Optional

import torch

from vidgen.errors import InvalidInputError
from vidgen.generators.embeddings import Conditioning
from vidgen.rng import GeneratorLike, rows


def cfg_batch(cond: Optional[Conditioning], negative: Optional[Conditioning], batch: int, device,
              guidance_scale: float):
    """Conditioning for one batched CFG pass: ``[negative-or-null; cond]`` (2B) and the per-sample null flags.

    Without guidance (scale 1, or nothing to guide by) returns ``(cond, None, False)``.
    """
    unconditional = cond is None or cond.batch_size() is None
    if unconditional and negative is not None:
        raise InvalidInputError("negative: a negative condition needs a positive one (cond) to contrast with")
    if guidance_scale == 1.0 or (unconditional and negative is None):
        return cond, None, False
    if negative is None:  # null condition: learned null embeddings
        drop = torch.cat([torch.ones(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.bool)]).to(device)
        return Conditioning.cat([cond, cond]), drop, True
    return Conditioning.cat([negative, cond]), None, True


def guide(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, the one formula every sampler uses: ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def apply_cfg(out: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """:func:`guide` on a ``[uncond; cond]`` batch."""
    return guide(*out.chunk(2), guidance_scale)


def check_guidance(guidance_scale, name: str = "guidance_scale") -> None:
    """A number >= 0 (not a bool, not NaN); ``name`` says where it was given."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not guidance_scale >= 0:
        raise InvalidInputError(f"{name} must be a number >= 0, got {guidance_scale!r}")


class Guidance:
    """The guidance scale of one sampling run, in one place: the sampler reads :attr:`scale` at every step, and a
    step callback returning ``{"guidance_scale": s}`` (or, in a pipeline, ``pipe._guidance_scale = s``) sets it for
    the steps that follow. Samplers start one from their config's ``guidance_scale`` unless they are handed one."""

    __slots__ = ("scale",)

    def __init__(self, scale: float):
        self.scale = scale

    @classmethod
    def of(cls, guidance: Optional["Guidance"], config) -> "Guidance":
        """``guidance`` if given, else a new one at ``config.guidance_scale``."""
        return guidance if guidance is not None else cls(config.guidance_scale)

    def __repr__(self) -> str:
        return f"Guidance(scale={self.scale!r})"


def step_callback(callback, i: int, t, key: str, x: torch.Tensor, guidance: Guidance) -> tuple[torch.Tensor, bool]:
    """A sampler's per-step ``callback(i, t, {key: x})`` -> ``(x, stop)``: the ``key`` tensor it returned (else
    ``x``) and whether it returned ``"interrupt": True``; a ``"guidance_scale"`` it returned sets ``guidance``."""
    if callback is None:
        return x, False
    changed = callback(i, t, {key: x}) or {}
    if "guidance_scale" in changed:
        check_guidance(changed["guidance_scale"], f"the guidance_scale a step callback returned at step {i}")
        guidance.scale = changed["guidance_scale"]
    return changed.get(key, x), bool(changed.get("interrupt"))


def check_top_k(top_k) -> None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidInputError(f"top_k must be an int >= 1 or None, got {top_k!r}")


def check_top_p(top_p) -> None:
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise InvalidInputError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")


def check_temperature(temperature) -> None:
    """The softmax temperature of a token draw: a number >= 0 (0 = greedy)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise InvalidInputError(f"temperature must be a number >= 0, got {temperature!r}")


def filter_logits(logits: torch.Tensor, top_k: Optional[int] = None, top_p: Optional[float] = None) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) to -inf; last axis is the vocabulary. Runs every step, so it
    does not check its options: the samplers check them once (:func:`check_top_k`, :func:`check_top_p`)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        remove = torch.zeros_like(remove).scatter(-1, order, remove)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                  top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(..., V) logits -> (...) ids. ``temperature=0`` is greedy. Options unchecked, as :func:`filter_logits`."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat.cpu() if generator is not None and generator.device.type == "cpu" else flat, 1,
                             generator=generator).to(logits.device).reshape(probs.shape[:-1])


TASKS = ("none", "prediction", "interpolation", "inpainting", "outpainting")


def sample_given_mask(batch: int, grid, generator: GeneratorLike, task_prob: float,
                      spatial: bool = True) -> torch.Tensor:
    """Random multi-task conditioning (MAGVIT / VDT): (B, t, h, w) bool, True = the token is given.

    With probability ``1 - task_prob`` nothing is given; otherwise one of: frame prediction (first k latent frames),
    interpolation (first and last latent frame), and when ``spatial`` also inpainting (all but a box given) and
    outpainting (only a box given).
    """
    t, h, w = grid
    given = torch.zeros(batch, t, h, w, dtype=torch.bool)
    u = rows(generator).rand(batch, 4)
    kinds = 4 if spatial else 2
    for b in range(batch):
        if u[b, 0] >= task_prob:
            continue
        kind = min(int(u[b, 1] * kinds), kinds - 1)
        if kind == 0 and t > 1:  # prediction: first k frames
            given[b, : 1 + int(u[b, 2] * (t - 1))] = True
        elif kind == 1 and t > 2:  # interpolation: first and last
            given[b, 0] = given[b, -1] = True
        elif kind in (2, 3):
            bh, bw = max(1, h // 2), max(1, w // 2)
            y0, x0 = int(u[b, 2] * (h - bh + 1)), int(u[b, 3] * (w - bw + 1))
            box = torch.zeros(h, w, dtype=torch.bool)
            box[y0:y0 + bh, x0:x0 + bw] = True
            given[b] = ~box if kind == 2 else box
    return given


def frame_mask(num_frames: int, given_frames) -> torch.Tensor:
    """(t,) bool from latent-frame indices, e.g. ``[0]`` (image-to-video) or ``[0, t-1]`` (interpolation)."""
    mask = torch.zeros(num_frames, dtype=torch.bool)
    for i in given_frames:
        if not -num_frames <= i < num_frames:
            raise InvalidInputError(f"given frame index {i} is out of range for {num_frames} latent frames")
        mask[i] = True
    return mask


def flow_matching_pair(x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor):
    """The straight path at noise levels ``s`` (B,) in [0, 1]: ``x_s = (1 - s) x0 + s noise``, its velocity target
    ``noise - x0`` and the timestep ``s * 1000`` on the scheduler's scale. The one definition training and the
    probes in ``eval/`` share."""
    sb = s[:, None, None, None, None].to(x0.dtype)
    return (1 - sb) * x0 + sb * noise, noise - x0, s * 1000

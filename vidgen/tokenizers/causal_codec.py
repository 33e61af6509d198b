"""Causal video encoder / decoder shared by every vidgen tokenizer (KL VAE, VQ/FSQ/LFQ/BSQ).

Design (chosen by measurement on CPU, see eval/bench_vae_speed.py):

* a patchify stem (space-to-depth by ``patch_size`` + linear) replaces the full-resolution stage: a Haar
  wavelet stem is an orthogonal transform of the same patch, which the linear map can absorb;
* factorized (2+1)D residual blocks: per-frame 3x3 convs and a causal 1D temporal conv (a GEMM);
* per-pixel RMS norm (never across time or space), no attention: chunked == one-shot and tiles agree;
* causal in time: frame 0 is encoded on its own, latent frames = ``1 + ceil((T - 1) / tc)``.

Bottlenecks (KL, quantizers) sit between :class:`CausalEncoder` and :class:`CausalDecoder` by composition.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.tokenizers.layers import (
    CausalCache,
    CausalLayer,
    Downsample,
    PixelNorm,
    ResBlock,
    SpatialConv,
    Upsample,
    depth_to_space,
    norm_silu,
    space_to_depth,
)


@dataclass
class CodecConfig:
    """Shape of the encoder/decoder. ``widths[i]`` is the channel count of level ``i`` (level 0 after the stem)."""

    widths: tuple[int, ...] = (64, 128, 256)
    num_res_blocks: int = 2
    decoder_extra_blocks: int = 1  # the decoder does more work than the encoder (reconstruction is harder)
    patch_size: int = 2
    spatial_compression: int = 8
    temporal_compression: int = 4
    temporal_kernel: int = 3
    latent_channels: int = 16

    def __post_init__(self):
        widths = self.widths if isinstance(self.widths, (list, tuple)) else [self.widths]
        named = [(f.name, getattr(self, f.name)) for f in fields(self) if f.name != "widths"]
        for name, value in named + [("widths", w) for w in widths]:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # e.g. a YAML string override
                raise ConfigError(f"{name} must be an int (widths: a list of ints), got {value!r}")
        self.widths = tuple(int(w) for w in widths)
        if self.temporal_compression not in (1, 2, 4, 8):
            raise ConfigError(f"temporal_compression must be 1, 2, 4 or 8, got {self.temporal_compression}")
        if self.spatial_compression not in (4, 8, 16):
            raise ConfigError(f"spatial_compression must be 4, 8 or 16, got {self.spatial_compression}")
        if self.patch_size not in (1, 2, 4) or self.spatial_compression % self.patch_size:
            raise ConfigError(f"patch_size must be 1, 2 or 4 and divide spatial_compression, got {self.patch_size}")
        transitions = len(self.widths) - 1
        if max(self.num_spatial_downs, self.num_temporal_downs) > transitions:
            raise ConfigError(
                f"{len(self.widths)} widths give {transitions} down/up-sampling steps, but spatial compression "
                f"{self.spatial_compression} with patch {self.patch_size} needs {self.num_spatial_downs} and "
                f"temporal compression {self.temporal_compression} needs {self.num_temporal_downs}")
        if self.num_res_blocks < 1 or self.latent_channels < 1 or min(self.widths) < 1:
            raise ConfigError("num_res_blocks, latent_channels and widths must be positive")

    @property
    def num_spatial_downs(self) -> int:
        return int(math.log2(self.spatial_compression // self.patch_size))

    @property
    def num_temporal_downs(self) -> int:
        return int(math.log2(self.temporal_compression))

    def factors(self, transition: int) -> tuple[int, int]:
        """(spatial, temporal) factor of down/up-sampling step ``transition`` (earliest steps downsample)."""
        return (2 if transition < self.num_spatial_downs else 1, 2 if transition < self.num_temporal_downs else 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


def latent_frames(num_frames: int, temporal_compression: int) -> int:
    """Latent frames of ``num_frames`` output frames: the first frame alone, then one per ``temporal_compression``
    frames (a last partial group included)."""
    return 1 + math.ceil((num_frames - 1) / temporal_compression)


def assign_cache_slots(module: nn.Module) -> int:
    """Number every causal layer of ``module``; returns the slot count for :meth:`CausalCache.empty`."""
    count = 0
    for m in module.modules():
        if isinstance(m, CausalLayer) and not isinstance(m, ResBlock):
            m.slot = count
            count += 1
    return count


def _run(layers: nn.ModuleList, x: torch.Tensor, cache: CausalCache, checkpoint: Callable | None = None) -> torch.Tensor:
    """Run ``layers`` in order; with ``checkpoint`` (gradient checkpointing) every causal block is checkpointed."""
    for layer in layers:
        if not isinstance(layer, CausalLayer):
            x = layer(x)
        elif checkpoint is None:
            x = layer(x, cache)
        else:
            x = _checkpointed(checkpoint, layer, x, cache)
    return x


def _checkpointed(checkpoint: Callable, layer: nn.Module, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    """``layer(x, cache)`` under ``checkpoint(fn, x)``, recomputable in backward.

    Causal layers write into the cache (new tails, ``started`` flags), so a recomputation reading the shared cache
    would see the state *after* the forward and compute something else. The layer therefore always runs on a
    private copy of the cache as it was before the call; the first run's resulting state is copied back.
    """
    before = (list(cache.tails), list(cache.started))
    state: list[CausalCache] = []

    def step(inp: torch.Tensor) -> torch.Tensor:
        local = CausalCache(list(before[0]), list(before[1]))
        out = layer(inp, local)
        state.append(local)
        return out

    out = checkpoint(step, x)
    cache.tails[:], cache.started[:] = state[0].tails, state[0].started
    return out


def _checkpoint_fn(module: nn.Module) -> Callable | None:
    """The checkpoint function set by ``ModelMixin.enable_gradient_checkpointing`` while autograd records, else None."""
    if module.gradient_checkpointing and torch.is_grad_enabled():
        return module._gradient_checkpointing_func
    return None


class CausalEncoder(nn.Module):
    """``(B, 3, T, H, W)`` (T = 1 + k*tc, H and W multiples of the compression) -> ``(B, out_channels, t, h, w)``."""

    def __init__(self, cfg: CodecConfig, out_channels: int):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.stem = nn.Linear(3 * cfg.patch_size ** 2, w[0])
        layers: list[nn.Module] = []
        for level, width in enumerate(w):
            layers += [ResBlock(width, width, cfg.temporal_kernel) for _ in range(cfg.num_res_blocks)]
            if level < len(w) - 1:
                layers.append(Downsample(width, w[level + 1], *cfg.factors(level)))
        layers.append(ResBlock(w[-1], w[-1], cfg.temporal_kernel))  # mid block
        self.blocks = nn.ModuleList(layers)
        self.norm_out = PixelNorm(w[-1])
        self.conv_out = SpatialConv(w[-1], out_channels)
        self.num_slots = assign_cache_slots(self)
        self.gradient_checkpointing = False  # set by ModelMixin.enable_gradient_checkpointing()

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        cache = cache or CausalCache.empty(self.num_slots)
        h = space_to_depth(x.permute(0, 2, 3, 4, 1), self.cfg.patch_size)  # (B, T, H/p, W/p, 3p^2)
        h = _run(self.blocks, self.stem(h), cache, _checkpoint_fn(self))
        h = self.conv_out(norm_silu(self.norm_out, h))
        return h.permute(0, 4, 1, 2, 3)  # (B, C, t, h, w)


class CausalDecoder(nn.Module):
    """``(B, in_channels, t, h, w)`` -> ``(B, 3, 1 + (t-1)*tc, h*sc, w*sc)``."""

    def __init__(self, cfg: CodecConfig, in_channels: int):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.conv_in = SpatialConv(in_channels, w[-1])
        layers: list[nn.Module] = [ResBlock(w[-1], w[-1], cfg.temporal_kernel)]  # mid block
        n_blocks = cfg.num_res_blocks + cfg.decoder_extra_blocks
        for level in reversed(range(len(w))):
            layers += [ResBlock(w[level], w[level], cfg.temporal_kernel) for _ in range(n_blocks)]
            if level > 0:
                layers.append(Upsample(w[level], w[level - 1], *cfg.factors(level - 1)))
        self.blocks = nn.ModuleList(layers)
        self.norm_out = PixelNorm(w[0])
        self.head = nn.Linear(w[0], 3 * cfg.patch_size ** 2)
        self.num_slots = assign_cache_slots(self)
        self.gradient_checkpointing = False  # set by ModelMixin.enable_gradient_checkpointing()

    def forward(self, z: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        cache = cache or CausalCache.empty(self.num_slots)
        h = _run(self.blocks, self.conv_in(z.permute(0, 2, 3, 4, 1)), cache, _checkpoint_fn(self))
        h = self.head(norm_silu(self.norm_out, h))
        return depth_to_space(h, self.cfg.patch_size).permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W)


# ----------------------------------------------------------------------------------------------- inputs
# Input checks. Shape and dtype checks are static (free, and plain guards under torch.compile). The value checks
# (finite, video in [-1, 1]) need the data: they cost one reduction (``aminmax``, which propagates NaN) and one host
# sync per call, and are skipped while torch.compile traces (a data-dependent branch would break the graph); eager
# calls always run them. ``dtype`` is what the model *computes* in: one dtype or a tuple of accepted ones
# (``CausalCodecMixin.input_dtypes``: the model's compute dtype - under layerwise casting the hooks' compute dtype,
# not the storage dtype - plus autocast's while autocast is on). Nothing is cast.
def _value_range(x: torch.Tensor) -> tuple[float, float] | None:
    """``(min, max)`` of ``x`` (NaN if it holds a NaN), or None while compiling."""
    if torch.compiler.is_compiling():
        return None
    lo, hi = torch.aminmax(x.detach())
    return tuple(torch.stack([lo, hi]).float().tolist())  # one sync for both


def _check_float(x: torch.Tensor, name: str, dtype, what: str = "", hint: str = "") -> None:
    if not x.is_floating_point():
        raise InvalidInputError(f"{name} must be a float tensor{what}, got dtype {x.dtype}{hint}")
    accepted = dtype if isinstance(dtype, tuple) else (dtype,) if dtype is not None else ()
    if accepted and x.dtype not in accepted:
        names = " or ".join(str(d) for d in accepted)
        raise InvalidInputError(f"{name} has dtype {x.dtype} but the model computes in {names}; convert with "
                                f".to({accepted[0]})")


def check_video(x, name: str = "x", dtype=None, values: bool = True) -> None:
    """Raise :class:`InvalidInputError` unless ``x`` is a finite ``(B, 3, T, H, W)`` float video in [-1, 1].
    ``values=False`` checks only shape and dtype (free); :func:`check_values` then reads the data."""
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor of shape (B, 3, T, H, W), got {type(x).__name__}")
    if x.ndim != 5:
        hint = " (add a batch axis with x[None])" if x.ndim == 4 else ""
        raise InvalidInputError(f"{name} must have 5 dims (B, 3, T, H, W), got shape {tuple(x.shape)}{hint}")
    if x.shape[1] != 3:
        raise InvalidInputError(f"{name} must have 3 (RGB) channels on axis 1, got {x.shape[1]} (shape {tuple(x.shape)})")
    if min(x.shape) == 0:
        raise InvalidInputError(f"{name} is empty (shape {tuple(x.shape)})")
    _check_float(x, name, dtype, " in [-1, 1]", " (for uint8 frames use x.float() / 127.5 - 1)")
    if values:
        check_values(x, name, video=True)


def check_latent(z, channels: int, name: str = "z", dtype=None, values: bool = True) -> None:
    if not isinstance(z, torch.Tensor) or z.ndim != 5 or z.shape[1] != channels or min(z.shape) == 0:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise InvalidInputError(f"{name} must have shape (B, {channels}, t, h, w), got {shape}")
    _check_float(z, name, dtype)
    if values:
        check_values(z, name, video=False)


def check_values(x: torch.Tensor, name: str, video: bool) -> None:
    """The data checks of :func:`check_video` / :func:`check_latent`: finite, and for a video within [-1, 1]."""
    bounds = _value_range(x)
    if bounds is None:
        return
    lo, hi = bounds
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidInputError(f"{name} contains NaN or Inf values")
    if video and (lo < -1.001 or hi > 1.001):
        raise InvalidInputError(f"{name} values must be in [-1, 1], got [{lo:.3g}, {hi:.3g}]")


def pad_video(x: torch.Tensor, cfg: CodecConfig) -> torch.Tensor:
    """Replicate-pad the end of time to ``1 + k*tc`` frames and the bottom/right to multiples of ``sc``.

    Pure data movement, exact in any dtype: autocast is off around it, because CPU autocast runs replication_pad in
    fp32 and would turn a bf16 video into an fp32 copy (two needless casts)."""
    t, h, w = x.shape[2:]
    tc, sc = cfg.temporal_compression, cfg.spatial_compression
    pad_t = (latent_frames(t, tc) - 1) * tc + 1 - t
    pad_h, pad_w = (-h) % sc, (-w) % sc
    if pad_h or pad_w:
        b = x.shape[0]
        with torch.autocast(x.device.type, enabled=False):
            x = F.pad(x.reshape(b, 3 * t, h, w), (0, pad_w, 0, pad_h), mode="replicate")
        x = x.reshape(b, 3, t, h + pad_h, w + pad_w)
    if pad_t:
        x = torch.cat([x, x[:, :, -1:].expand(-1, -1, pad_t, -1, -1)], dim=2)
    return x


@dataclass
class StreamDecoder:
    """Decode latents pushed chunk by chunk (e.g. by a generator producing them frame by frame).

    ``frames = stream.push(z_chunk)`` returns the pixel frames ``(B, 3, n, H, W)`` that chunk completes; the
    concatenation of all returned frames equals one-shot decoding. The caller owns this object.
    """

    decode_chunk: Callable[[torch.Tensor, CausalCache], torch.Tensor]
    cache: CausalCache
    height: int | None = None
    width: int | None = None
    frames_out: int = 0
    latents_in: int = 0

    def push(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.decode_chunk(z, self.cache)
        self.latents_in += z.shape[2]
        self.frames_out += x.shape[2]
        return x[..., : self.height or x.shape[-2], : self.width or x.shape[-1]]

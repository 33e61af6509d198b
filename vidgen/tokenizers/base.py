"""Chunked, tiled, sliced and streamed encode/decode shared by every causal tokenizer (KL VAE and quantized VAEs),
and what makes them diffusers components (``AutoencoderMixin``, gradient checkpointing, device maps, config).

A subclass provides ``self.codec_config`` (:class:`CodecConfig`), ``self.encoder`` / ``self.decoder``
(:class:`CausalEncoder` / :class:`CausalDecoder`), ``self.encoder_channels`` (channels the encoder emits) and
``self.decoder_channels`` (channels the decoder takes); the bottleneck between them is the subclass's business.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Callable

import torch
from diffusers.configuration_utils import FrozenDict
from diffusers.models.autoencoders.vae import AutoencoderMixin
from diffusers.utils.accelerate_utils import apply_forward_hook

from vidgen.errors import InvalidInputError
from vidgen.precision import compute_dtypes, execution_device
from vidgen.tokenizers.causal_codec import (
    StreamDecoder,
    check_latent,
    check_values,
    check_video,
    latent_frames,
    pad_video,
)
from vidgen.tokenizers.layers import CausalCache
from vidgen.tokenizers.loading_mixins import StrictLoadingMixin
from vidgen.tokenizers.tiling import tiled_apply

#: Peak working memory of one codec pass, in copies of its largest activation (measured on CPU with the tiny and
#: small presets: 7.7x to 9x; a causal temporal conv stacks ``temporal_kernel`` shifted copies of its input).
ACTIVATION_COPIES = 8


def device_memory_bytes(device: torch.device | str) -> int | None:
    """Total memory of ``device`` (physical RAM for the CPU and unified-memory devices), or None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class CausalCodecMixin(StrictLoadingMixin, AutoencoderMixin):
    """Any T/H/W in, exactly T/H/W out; ``chunk_frames`` processing equal to one-shot; spatial tiling; slicing.

    diffusers integration: ``enable_tiling`` / ``disable_tiling`` / ``enable_slicing`` / ``disable_slicing`` with
    diffusers' keywords and ``use_tiling`` / ``use_slicing`` flags (from ``AutoencoderMixin``), gradient
    checkpointing of the encoder/decoder blocks, ``_no_split_modules`` for ``device_map`` / accelerate offload, and
    config-readable ``temporal_compression_ratio`` / ``spatial_compression_ratio`` (derived, see :attr:`config`),
    and a strict ``from_pretrained`` (:class:`~vidgen.tokenizers.loading_mixins.StrictLoadingMixin`).
    """

    _supports_gradient_checkpointing = True
    # blocks whose forward combines tensors of several children (residual sums, shortcuts): never split across devices
    _no_split_modules = ["ResBlock", "Downsample", "Upsample"]
    _derived_config_keys = ("temporal_compression_ratio", "spatial_compression_ratio")

    use_tiling: bool = False
    use_slicing: bool = False
    tile_sample_min_height: int = 128
    tile_sample_min_width: int = 128
    tile_sample_stride_height: int = 96
    tile_sample_stride_width: int = 96

    # ------------------------------------------------------------------ config and shapes
    @property
    def config(self) -> FrozenDict:
        """The registered config plus read-only derived entries (:meth:`_derived_config`) that diffusers pipelines
        read, e.g. ``config.temporal_compression_ratio``. Derived entries are never saved (``config.json`` holds only
        ``__init__`` arguments), always follow the stored values, and are dropped when a config is loaded."""
        stored = self._internal_dict
        return FrozenDict({**stored, **self._derived_config(stored)})

    @classmethod
    def _derived_config(cls, cfg) -> dict:
        return {"temporal_compression_ratio": cfg["temporal_compression"],
                "spatial_compression_ratio": cfg["spatial_compression"]}

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """Drop the derived entries (``from_config(model.config)`` must not warn about or re-register them)."""
        config_dict = {k: v for k, v in config_dict.items() if k not in cls._derived_config_keys}
        return super().extract_init_dict(config_dict, **kwargs)

    def register_to_config(self, **kwargs) -> None:
        """diffusers' ``register_to_config``, and a key updated after ``__init__`` (e.g. ``scaling_factor`` by the
        training script) stops being listed as a default, so ``from_config(model.config)`` keeps its value."""
        super().register_to_config(**kwargs)
        defaults = self._internal_dict.get("_use_default_values")
        if defaults and "_use_default_values" not in kwargs and any(k in kwargs for k in defaults):
            super().register_to_config(_use_default_values=[k for k in defaults if k not in kwargs])

    @property
    def temporal_compression_ratio(self) -> int:
        return self.codec_config.temporal_compression

    @property
    def spatial_compression_ratio(self) -> int:
        return self.codec_config.spatial_compression

    @property
    def model_dtype(self) -> torch.dtype:
        """The model's compute dtype ``ModelMixin.dtype`` reports (under layerwise casting the hooks' compute dtype,
        not the storage dtype of the weights)."""
        return self.dtype

    def input_dtypes(self, device: torch.device | None = None) -> tuple[torch.dtype, ...]:
        """The dtypes inputs on ``device`` (default: the model's) may have: :attr:`model_dtype`, plus autocast's
        dtype while autocast is on for that device type (autocast casts the inputs of every conv / linear, so both
        give the same computation). Devices autocast does not know (``meta`` under offloading) accept the model's.

        Outputs have the dtype the computation produces: under ``torch.autocast("cpu", torch.bfloat16)`` encode and
        decode return bf16 (as diffusers' VAEs do under autocast), with bf16 weights bf16, otherwise the model's
        dtype. Tiled outputs are blended in fp32 and then cast to that same dtype."""
        device_type = torch.device(device if device is not None else self.device).type
        if device_type not in ("cpu", "cuda", "xpu", "mps", "hpu", "xla"):
            return (self.model_dtype,)
        return compute_dtypes(self.model_dtype, device_type)

    def latent_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """``(t, h, w)`` of the latent grid for a ``num_frames x height x width`` video (the generators' ``grid``)."""
        sc = self.codec_config.spatial_compression
        return latent_frames(num_frames, self.codec_config.temporal_compression), math.ceil(height / sc), math.ceil(width / sc)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Deprecated name of :meth:`latent_grid`, removed in vidgen 0.3."""
        warnings.warn("latent_shape() is deprecated (removed in vidgen 0.3); use latent_grid(num_frames, height, width)",
                      FutureWarning, stacklevel=2)
        return self.latent_grid(num_frames, height, width)

    # ------------------------------------------------------------------ tiling (slicing: AutoencoderMixin)
    def enable_tiling(self, tile_sample_min_height: int | None = None, tile_sample_min_width: int | None = None,
                      tile_sample_stride_height: int | None = None, tile_sample_stride_width: int | None = None, *,
                      tile_sample_size: int | None = None, tile_overlap: int | None = None) -> None:
        """Encode / decode frames larger than a tile in overlapping, blended spatial tiles (pixel units).

        diffusers' keywords (as ``AutoencoderKLWan``): a frame is tiled when it is taller than
        ``tile_sample_min_height`` or wider than ``tile_sample_min_width``; tiles start every ``tile_sample_stride_*``
        pixels (overlap = min - stride). vidgen's aliases: ``tile_sample_size`` sets both minimums, ``tile_overlap``
        both overlaps. Arguments left at None keep the current value; a new tile size without a stride keeps the
        current *overlap*. Defaults: 128 x 128 tiles, stride 96 (overlap 32). Every value must be a multiple of the
        spatial compression with ``0 < stride <= min``.
        """
        if tile_sample_size is not None and (tile_sample_min_height is not None or tile_sample_min_width is not None):
            raise InvalidInputError("pass either tile_sample_size or tile_sample_min_height/width, not both")
        if tile_overlap is not None and (tile_sample_stride_height is not None or tile_sample_stride_width is not None):
            raise InvalidInputError("pass either tile_overlap or tile_sample_stride_height/width, not both")
        sizes, strides = [], []
        for new_min, new_stride, old_min, old_stride in (
                (tile_sample_min_height, tile_sample_stride_height, self.tile_sample_min_height, self.tile_sample_stride_height),
                (tile_sample_min_width, tile_sample_stride_width, self.tile_sample_min_width, self.tile_sample_stride_width)):
            size = new_min if new_min is not None else tile_sample_size if tile_sample_size is not None else old_min
            overlap = tile_overlap if tile_overlap is not None else old_min - old_stride
            sizes.append(size)
            strides.append(new_stride if new_stride is not None else size - overlap)
        sc = self.codec_config.spatial_compression
        for size, stride in zip(sizes, strides):
            if not (isinstance(size, int) and isinstance(stride, int) and size % sc == 0 and stride % sc == 0
                    and 0 < stride <= size):
                raise InvalidInputError(
                    f"tile sizes {tuple(sizes)} and strides {tuple(strides)} (overlap = size - stride) must be "
                    f"multiples of the spatial compression {sc}, with 0 < stride <= size")
        self.tile_sample_min_height, self.tile_sample_min_width = sizes
        self.tile_sample_stride_height, self.tile_sample_stride_width = strides
        self.use_tiling = True

    # ------------------------------------------------------------------ memory
    def estimate_memory(self, batch: int, num_frames: int, height: int, width: int, decode: bool = True,
                        chunk_frames: int | None = None) -> int:
        """Rough peak bytes of decoding a ``batch x num_frames x height x width`` video (``decode``) or of encoding
        one: the whole output (and the padded input when encoding) plus :data:`ACTIVATION_COPIES` copies of the
        largest activation of one piece of work (``chunk_frames`` frames - latent frames when decoding -, one tile
        when tiling is on, one sample when slicing is on). Nothing is allocated."""
        cfg = self.codec_config
        tc, sc, p = cfg.temporal_compression, cfg.spatial_compression, cfg.patch_size
        t = latent_frames(num_frames, tc)
        frames, h, w = 1 + (t - 1) * tc, math.ceil(height / sc) * sc, math.ceil(width / sc) * sc  # padded size
        total = batch * 3 * frames * h * w
        if not decode:
            total += batch * self.encoder_channels * t * (h // sc) * (w // sc)
        if chunk_frames:
            frames = min(frames, chunk_frames * (tc if decode else 1))
        if self.use_tiling and (h > self.tile_sample_min_height or w > self.tile_sample_min_width):
            h, w = min(h, self.tile_sample_min_height), min(w, self.tile_sample_min_width)
        largest = 3 * frames * h * w  # the pixels themselves (stem input / head output)
        for level, channels in enumerate(cfg.widths):
            s, r = p * 2 ** min(level, cfg.num_spatial_downs), 2 ** min(level, cfg.num_temporal_downs)
            largest = max(largest, channels * math.ceil(frames / r) * math.ceil(h / s) * math.ceil(w / s))
        rows = 1 if self.use_slicing else batch
        return (total + ACTIVATION_COPIES * rows * largest) * self.model_dtype.itemsize

    def check_memory(self, name: str, batch: int, num_frames: int, height: int, width: int, decode: bool = True,
                     chunk_frames: int | None = None) -> None:
        """Refuse up front (:class:`InvalidInputError`, with the estimate) a request whose
        :meth:`estimate_memory` exceeds the total memory of the model's device, instead of running out of memory
        midway (or spending minutes validating a huge input first). Skipped while torch.compile traces (the device
        query is not traceable), like the value checks."""
        if torch.compiler.is_compiling():
            return
        need = self.estimate_memory(batch, num_frames, height, width, decode, chunk_frames)
        limit = device_memory_bytes(self.device)
        if limit is not None and need > limit:
            raise InvalidInputError(
                f"{name}: {'decoding' if decode else 'encoding'} {batch} video(s) of {num_frames} frames of "
                f"{height}x{width} would need about {need / 2**30:,.1f} GiB, more than the {limit / 2**30:,.1f} GiB "
                f"of {self.device}; use fewer frames or a smaller size (chunk_frames and enable_tiling() reduce the "
                "working memory, not the output)")

    @staticmethod
    def _check_chunk(chunk_frames, name: str = "chunk_frames") -> None:
        if chunk_frames is not None and (not isinstance(chunk_frames, int) or chunk_frames < 1):
            raise InvalidInputError(f"{name} must be a positive int or None, got {chunk_frames!r}")

    # ------------------------------------------------------------------ chunked core
    def _encode_chunks(self, x: torch.Tensor, chunk_frames: int | None) -> torch.Tensor:
        """Padded video -> encoder output, ``chunk_frames`` pixel frames at a time (the cache carries the past)."""
        step = chunk_frames or x.shape[2]
        cache = CausalCache.empty(self.encoder.num_slots)
        parts = [self.encoder(x[:, :, s:s + step], cache) for s in range(0, x.shape[2], step)]
        return torch.cat(parts, dim=2)

    def _decode_chunks(self, z: torch.Tensor, chunk_frames: int | None) -> torch.Tensor:
        """Latents -> all decoded frames, written chunk by chunk into one preallocated output (allocated at the
        first chunk, in the dtype the decoder produces: bf16 under bf16 autocast even for fp32 latents)."""
        tc, sc = self.codec_config.temporal_compression, self.codec_config.spatial_compression
        b, _, t, h, w = z.shape
        out, step, pos = None, chunk_frames or t, 0
        cache = CausalCache.empty(self.decoder.num_slots)
        for s in range(0, t, step):
            frames = self.decoder(z[:, :, s:s + step], cache)
            if out is None:
                out = frames.new_empty(b, 3, 1 + (t - 1) * tc, h * sc, w * sc)
            out[:, :, pos:pos + frames.shape[2]] = frames
            pos += frames.shape[2]
        return out

    def _tiled(self, fn: Callable, x: torch.Tensor, scale: float, out_shape: tuple[int, ...]) -> torch.Tensor:
        """``fn`` on the whole frame, or on blended tiles when tiling is on and the frame is larger than a tile
        (``out_shape``: the output's shape without the batch axis); one sample at a time when slicing is on
        (identical results: nothing mixes samples)."""
        if self.use_slicing and x.shape[0] > 1:
            return torch.cat([self._tiled(fn, x[i:i + 1], scale, out_shape) for i in range(x.shape[0])])
        unit = 1 if scale < 1 else self.codec_config.spatial_compression  # decode tiles are in latent units
        h, w = x.shape[-2:]
        if not self.use_tiling or (h * unit <= self.tile_sample_min_height and w * unit <= self.tile_sample_min_width):
            return fn(x)
        # blend in fp32 at least (bf16 tiles summed in bf16 would round at every overlap); tiled_apply returns the
        # tiles' own dtype
        out = x.new_empty(x.shape[0], *out_shape, dtype=torch.promote_types(x.dtype, torch.float32))
        tile = (self.tile_sample_min_height // unit, self.tile_sample_min_width // unit)
        overlap = ((self.tile_sample_min_height - self.tile_sample_stride_height) // unit,
                   (self.tile_sample_min_width - self.tile_sample_stride_width) // unit)
        return tiled_apply(fn, x, tile, overlap, scale, out)

    # ------------------------------------------------------------------ public building blocks
    @property
    def device(self) -> torch.device:
        """Where encode / decode compute (:func:`~vidgen.precision.execution_device`)."""
        return execution_device(self, super().device)

    @apply_forward_hook  # under model offload, encode and decode (not only forward) bring the weights over
    def encode_features(self, x: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """``x`` ``(B, 3, T, H, W)`` in [-1, 1], any size -> encoder output ``(B, encoder_channels, t, h, w)``."""
        check_video(x, "x", self.input_dtypes(getattr(x, "device", None)), values=False)
        self._check_chunk(chunk_frames)
        self.check_memory("x", x.shape[0], *x.shape[2:], decode=False, chunk_frames=chunk_frames)
        check_values(x, "x", video=True)  # after the memory check: reading a huge input takes minutes
        x = pad_video(x, self.codec_config)
        _, _, t, h, w = x.shape
        sc, tc = self.codec_config.spatial_compression, self.codec_config.temporal_compression
        out_shape = (self.encoder_channels, latent_frames(t, tc), h // sc, w // sc)
        return self._tiled(lambda v: self._encode_chunks(v, chunk_frames), x, 1 / sc, out_shape)

    @apply_forward_hook
    def decode_latents(self, z: torch.Tensor, num_frames: int | None = None, height: int | None = None,
                       width: int | None = None, chunk_frames: int | None = None) -> torch.Tensor:
        """Decoder input ``(B, C, t, h, w)`` -> ``(B, 3, T, H, W)``, cropped to ``num_frames x height x width``
        (defaults: ``1 + (t-1)*tc``, ``h*sc``, ``w*sc``)."""
        check_latent(z, self.decoder_channels, "z", self.input_dtypes(getattr(z, "device", None)), values=False)
        self._check_chunk(chunk_frames)
        tc, sc = self.codec_config.temporal_compression, self.codec_config.spatial_compression
        _, _, t, h, w = z.shape
        full_t = 1 + (t - 1) * tc
        for name, value, limit in (("num_frames", num_frames, full_t), ("height", height, h * sc), ("width", width, w * sc)):
            if value is not None and not (isinstance(value, int) and 1 <= value <= limit):
                raise InvalidInputError(f"{name}={value!r} is out of range for latents of shape {tuple(z.shape)} "
                                        f"(1..{limit})")
        self.check_memory("z", z.shape[0], full_t, h * sc, w * sc, chunk_frames=chunk_frames)
        check_values(z, "z", video=False)
        out = self._tiled(lambda v: self._decode_chunks(v, chunk_frames), z, sc, (3, full_t, h * sc, w * sc))
        return out[:, :, : num_frames or full_t, : height or h * sc, : width or w * sc]

    def _stream_decoder(self, to_latent: Callable[[torch.Tensor], torch.Tensor], height: int | None,
                        width: int | None) -> StreamDecoder:
        return StreamDecoder(lambda z, cache: self._decode_stream_chunk(z, cache, to_latent),
                             CausalCache.empty(self.decoder.num_slots), height, width)

    @apply_forward_hook  # a stream decodes chunk by chunk: each chunk brings the weights over under model offload
    def _decode_stream_chunk(self, z: torch.Tensor, cache: CausalCache, to_latent: Callable) -> torch.Tensor:
        z = to_latent(z)  # ids -> codes reads the codebook: after the hook
        check_latent(z, self.decoder_channels, "z", self.input_dtypes(getattr(z, "device", None)))
        return self.decoder(z, cache)

    @property
    def last_decoder_layer(self) -> torch.Tensor:
        """Weight used by the adaptive GAN weight (gradient-norm ratio)."""
        return self.decoder.head.weight

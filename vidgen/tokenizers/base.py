"""Chunked, tiled and streamed encode/decode shared by every causal tokenizer (KL VAE and quantized VAEs).

A subclass provides ``self.codec_config`` (:class:`CodecConfig`), ``self.encoder`` / ``self.decoder``
(:class:`CausalEncoder` / :class:`CausalDecoder`), ``self.encoder_channels`` (channels the encoder emits) and
``self.decoder_channels`` (channels the decoder takes); the bottleneck between them is the subclass's business.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from vidgen.errors import InvalidInputError
from vidgen.tokenizers.causal_codec import StreamDecoder, check_latent, check_video, latent_frames, pad_video
from vidgen.tokenizers.layers import CausalCache
from vidgen.tokenizers.tiling import tiled_apply


class CausalCodecMixin:
    """Any T/H/W in, exactly T/H/W out; ``chunk_frames`` processing equal to one-shot; spatial tiling."""

    tile_sample_size: int | None = None
    tile_overlap: int = 0

    # ------------------------------------------------------------------ shapes and options
    @property
    def model_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """``(t, h, w)`` of the latent grid for a ``num_frames x height x width`` video."""
        sc = self.codec_config.spatial_compression
        return latent_frames(num_frames, self.codec_config.temporal_compression), math.ceil(height / sc), math.ceil(width / sc)

    def enable_tiling(self, tile_sample_size: int = 128, tile_overlap: int = 32) -> None:
        """Process frames larger than ``tile_sample_size`` pixels in overlapping, blended spatial tiles."""
        sc = self.codec_config.spatial_compression
        if tile_sample_size % sc or tile_overlap % sc or not 0 <= tile_overlap < tile_sample_size:
            raise InvalidInputError(f"tile_sample_size ({tile_sample_size}) and tile_overlap ({tile_overlap}) must be "
                                    f"multiples of the spatial compression {sc}, with 0 <= overlap < tile size")
        self.tile_sample_size, self.tile_overlap = tile_sample_size, tile_overlap

    def disable_tiling(self) -> None:
        self.tile_sample_size = None

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
        """Latents -> all decoded frames, written chunk by chunk into one preallocated output."""
        tc, sc = self.codec_config.temporal_compression, self.codec_config.spatial_compression
        b, _, t, h, w = z.shape
        out = z.new_empty(b, 3, 1 + (t - 1) * tc, h * sc, w * sc)
        step, pos = chunk_frames or t, 0
        cache = CausalCache.empty(self.decoder.num_slots)
        for s in range(0, t, step):
            frames = self.decoder(z[:, :, s:s + step], cache)
            out[:, :, pos:pos + frames.shape[2]] = frames
            pos += frames.shape[2]
        return out

    def _tiled(self, fn: Callable, x: torch.Tensor, scale: float, out_shape) -> torch.Tensor:
        """Run ``fn`` on the whole frame, or on blended tiles when tiling is on and the frame is larger."""
        unit = 1 if scale < 1 else self.codec_config.spatial_compression  # decode tiles are in latent units
        if self.tile_sample_size is None or max(x.shape[-2:]) * unit <= self.tile_sample_size:
            return fn(x)
        out = x.new_empty(out_shape)
        return tiled_apply(fn, x, self.tile_sample_size // unit, self.tile_overlap // unit, scale, out)

    # ------------------------------------------------------------------ public building blocks
    def encode_features(self, x: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """``x`` ``(B, 3, T, H, W)`` in [-1, 1], any size -> encoder output ``(B, encoder_channels, t, h, w)``."""
        check_video(x, "x", self.model_dtype)
        self._check_chunk(chunk_frames)
        x = pad_video(x, self.codec_config)
        b, _, t, h, w = x.shape
        sc, tc = self.codec_config.spatial_compression, self.codec_config.temporal_compression
        out_shape = (b, self.encoder_channels, latent_frames(t, tc), h // sc, w // sc)
        return self._tiled(lambda v: self._encode_chunks(v, chunk_frames), x, 1 / sc, out_shape)

    def decode_latents(self, z: torch.Tensor, num_frames: int | None = None, height: int | None = None,
                       width: int | None = None, chunk_frames: int | None = None) -> torch.Tensor:
        """Decoder input ``(B, C, t, h, w)`` -> ``(B, 3, T, H, W)``, cropped to ``num_frames x height x width``
        (defaults: ``1 + (t-1)*tc``, ``h*sc``, ``w*sc``)."""
        check_latent(z, self.decoder_channels, "z", self.model_dtype)
        self._check_chunk(chunk_frames)
        tc, sc = self.codec_config.temporal_compression, self.codec_config.spatial_compression
        b, _, t, h, w = z.shape
        full_t = 1 + (t - 1) * tc
        for name, value, limit in (("num_frames", num_frames, full_t), ("height", height, h * sc), ("width", width, w * sc)):
            if value is not None and not (isinstance(value, int) and 1 <= value <= limit):
                raise InvalidInputError(f"{name}={value!r} is out of range for latents of shape {tuple(z.shape)} "
                                        f"(1..{limit})")
        out = self._tiled(lambda v: self._decode_chunks(v, chunk_frames), z, sc, (b, 3, full_t, h * sc, w * sc))
        return out[:, :, : num_frames or full_t, : height or h * sc, : width or w * sc]

    def _stream_decoder(self, to_latent: Callable[[torch.Tensor], torch.Tensor], height: int | None,
                        width: int | None) -> StreamDecoder:
        def decode_chunk(z, cache):
            z = to_latent(z)
            check_latent(z, self.decoder_channels, "z", self.model_dtype)
            return self.decoder(z, cache)

        return StreamDecoder(decode_chunk, CausalCache.empty(self.decoder.num_slots), height, width)

    @property
    def last_decoder_layer(self) -> torch.Tensor:
        """Weight used by the adaptive GAN weight (gradient-norm ratio)."""
        return self.decoder.head.weight

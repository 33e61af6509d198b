"""``CausalVQVAE``: the causal encoder/decoder of :class:`CausalVAE` with a quantizer in place of the KL bottleneck.

The token interface every generator uses::

    tok = CausalVQVAE.from_preset("small", quantizer="fsq")
    ids = tok.tokenize(video, chunk_frames=17)      # (B, t, h, w) LongTensor in [0, tok.vocab_size)
    video = tok.detokenize(ids, num_frames=T)        # (B, 3, T, H, W) in [-1, 1]
    tok.latent_grid(T, H, W)                         # (t, h, w)

Residual quantizers (``num_quantizers > 1``) add a trailing depth axis to ids. ``tokenize(chunk_frames=k)`` is
exact (quantization is per position, the encoder is causal and chunk-exact).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin

from vidgen.errors import ConfigError
from vidgen.tokenizers.base import CausalCodecMixin
from vidgen.tokenizers.causal_codec import CausalDecoder, CausalEncoder, CodecConfig, StreamDecoder, check_video, pad_video
from vidgen.tokenizers.loading_mixins import check_init_options
from vidgen.tokenizers.quantizers import QuantizerBottleneck, QuantizerConfig
from vidgen.tokenizers.outputs import ReconstructionOutput
from vidgen.tokenizers.presets import VAE_PRESETS


@dataclass
class TokenizerEncoding:
    codes: torch.Tensor  # (B, D, t, h, w) quantized codes (the decoder input)
    ids: torch.Tensor  # (B, t, h, w[, depth]) token ids


class CausalVQVAE(CausalCodecMixin, ModelMixin, ConfigMixin):
    """Discrete causal video tokenizer (VQ / FSQ / LFQ / BSQ, optionally residual). See the module docstring."""

    config_name = "config.json"
    # the quantizer's codebooks stay fp32 under from_pretrained(torch_dtype=...), layerwise casting and .to(dtype)
    # (QuantizerBottleneck._apply); ModelMixin.dtype then reports the codec's dtype
    _keep_in_fp32_modules = ["bottleneck"]

    @register_to_config
    def __init__(self, widths=(32, 64, 128), num_res_blocks: int = 1, decoder_extra_blocks: int = 1,
                 patch_size: int = 2, spatial_compression: int = 8, temporal_compression: int = 4,
                 temporal_kernel: int = 3, quantizer: str = "fsq", fsq_levels=(8, 5, 5, 5), lfq_bits: int = 10,
                 codebook_size: int = 1024, codebook_dim: int = 8, num_quantizers: int = 1,
                 commitment_weight: float = 0.25, entropy_weight: float = 0.1, vq_decay: float = 0.99,
                 vq_cosine: bool = False, vq_kmeans_init: bool = False, vq_rotation_trick: bool = True,
                 fsq_entropy_weight: float = 0.0, fsq_entropy_temperature: float = 0.5):
        super().__init__()
        self.quantizer_config = QuantizerConfig(
            quantizer, fsq_levels, lfq_bits, codebook_size, codebook_dim, num_quantizers, commitment_weight,
            entropy_weight, vq_decay, vq_cosine, vq_kmeans_init, vq_rotation_trick, fsq_entropy_weight,
            fsq_entropy_temperature)
        self.bottleneck = QuantizerBottleneck(self.quantizer_config)
        self.encoder_channels = self.decoder_channels = self.bottleneck.encoder_channels
        self.codec_config = CodecConfig(widths, num_res_blocks, decoder_extra_blocks, patch_size,
                                        spatial_compression, temporal_compression, temporal_kernel,
                                        self.encoder_channels)
        self.encoder = CausalEncoder(self.codec_config, self.encoder_channels)
        self.decoder = CausalDecoder(self.codec_config, self.decoder_channels)

    @classmethod
    def from_preset(cls, name: str, quantizer: str = "fsq", **overrides) -> "CausalVQVAE":
        if name not in VAE_PRESETS:
            raise ConfigError(f"unknown tokenizer preset {name!r}; choose from {sorted(VAE_PRESETS)}")
        check_init_options(cls, overrides, f"{cls.__name__}.from_preset({name!r})")
        sizes = {k: v for k, v in VAE_PRESETS[name].items() if k != "latent_channels"}
        return cls(**{**sizes, "quantizer": quantizer, **overrides})

    # ------------------------------------------------------------------ token interface
    @property
    def vocab_size(self) -> int:
        """Number of token ids per position (per depth for residual quantizers); ids are ``[0, vocab_size)``."""
        return self.bottleneck.vocab_size

    @property
    def bits_per_token(self) -> float:
        return self.quantizer_config.num_quantizers * torch.log2(torch.tensor(float(self.vocab_size))).item()

    def encode(self, x: torch.Tensor, chunk_frames: int | None = None) -> TokenizerEncoding:
        """``(B, 3, T, H, W)`` in [-1, 1] -> quantized codes and ids (the codebook is never updated here)."""
        features = self.encode_features(x, chunk_frames)
        codes, ids, _ = self.bottleneck.quantize(features, update_codebook=False)
        return TokenizerEncoding(codes, ids)

    @torch.no_grad()
    def tokenize(self, video: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in [-1, 1] -> ids ``(B, t, h, w)`` (``(B, t, h, w, depth)`` if residual)."""
        return self.encode(video, chunk_frames).ids

    def decode(self, codes: torch.Tensor, num_frames: int | None = None, height: int | None = None,
               width: int | None = None, chunk_frames: int | None = None, return_dict: bool = True,
               generator: torch.Generator | None = None):
        """Quantized codes ``(B, D, t, h, w)`` -> ``DecoderOutput(sample=(B, 3, T, H, W))``. ``generator`` is
        accepted for diffusers' signature and ignored (decoding is deterministic)."""
        out = self.decode_latents(codes, num_frames, height, width, chunk_frames)
        return DecoderOutput(sample=out) if return_dict else (out,)

    @torch.no_grad()
    def detokenize(self, ids: torch.Tensor, num_frames: int | None = None, height: int | None = None,
                   width: int | None = None, chunk_frames: int | None = None) -> torch.Tensor:
        """Ids ``(B, t, h, w[, depth])`` -> video ``(B, 3, T, H, W)``, cropped to the given size."""
        if isinstance(ids, torch.Tensor) and ids.ndim >= 4:  # before any id is read or any code allocated
            self._check_chunk(chunk_frames)
            b, t, h, w = ids.shape[:4]
            tc, sc = self.codec_config.temporal_compression, self.codec_config.spatial_compression
            self.check_memory("ids", b, 1 + (t - 1) * tc, h * sc, w * sc, chunk_frames=chunk_frames)
        codes = self.bottleneck.codes_from_ids(ids).to(self.model_dtype)
        return self.decode_latents(codes, num_frames, height, width, chunk_frames)

    def stream_decoder(self, height: int | None = None, width: int | None = None) -> StreamDecoder:
        """Caller-owned decoder: ``frames = s.push(ids_chunk)``; the pieces concatenate to ``detokenize(ids)``."""
        return self._stream_decoder(lambda ids: self.bottleneck.codes_from_ids(ids).to(self.model_dtype), height, width)

    # ------------------------------------------------------------------ training
    def reconstruct(self, x: torch.Tensor, sample_posterior: bool = True, generator=None) -> ReconstructionOutput:
        """Training entry point shared by all vidgen tokenizers: straight-through reconstruction + quantizer loss."""
        check_video(x, "x", self.input_dtypes(getattr(x, "device", None)))
        t, h, w = x.shape[2:]
        features = self.encoder(pad_video(x, self.codec_config))
        bottleneck = self.bottleneck(features)
        y = self.decoder(bottleneck.latent)[:, :, :t, :h, :w]
        return ReconstructionOutput(y, bottleneck)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        """Straight-through reconstruction through the encode / decode path (so tiling and slicing apply); in
        training mode a VQ codebook updates as in :meth:`reconstruct`."""
        features = self.encode_features(sample)
        codes, _, _ = self.bottleneck.quantize(features, update_codebook=self.training)
        out = self.decode_latents(codes.to(features.dtype), *sample.shape[2:])
        return DecoderOutput(sample=out) if return_dict else (out,)


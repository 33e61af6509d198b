"""``CausalVAE``: causal encoder + diagonal-Gaussian (KL) bottleneck + causal decoder.

Loads and saves like diffusers' VAEs (``ModelMixin`` + ``ConfigMixin``, safetensors)::

    vae = CausalVAE.from_preset("small")                  # or CausalVAE.from_pretrained("runs/vae_small/final")
    z = vae.encode(x, chunk_frames=17).latent_dist.mode()  # x: (B, 3, T, H, W) in [-1, 1], any T/H/W
    y = vae.decode(z, num_frames=T, height=H, width=W, chunk_frames=4).sample

``encode(chunk_frames=k)`` processes ``k`` pixel frames at a time, ``decode(chunk_frames=k)`` ``k`` latent frames
at a time; both equal one-shot (the causal cache carries the needed past). ``stream_decoder()`` returns a
caller-owned object for latents that arrive piece by piece.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin

from vidgen.errors import ConfigError
from vidgen.rng import GeneratorLike, rows
from vidgen.tokenizers.base import CausalCodecMixin
from vidgen.tokenizers.causal_codec import CausalDecoder, CausalEncoder, CodecConfig, StreamDecoder, check_video, pad_video
from vidgen.tokenizers.loading_mixins import check_init_options
from vidgen.tokenizers.outputs import BottleneckOutput, ReconstructionOutput
from vidgen.tokenizers.presets import VAE_PRESETS

__all__ = ["VAE_PRESETS", "BottleneckOutput", "CausalVAE", "DiagonalGaussian", "KLBottleneck", "ReconstructionOutput"]


def _loss_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _up(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32 at least, for loss terms and their reductions (CPU/CUDA autocast leaves exp / pow / sum alone)."""
    return x.to(_loss_dtype(x))


class DiagonalGaussian:
    """Posterior ``N(mean, exp(logvar))`` over latents ``(B, C, t, h, w)``.

    The interface of diffusers' ``DiagonalGaussianDistribution`` (``parameters``, ``mean``, ``logvar``, ``std``,
    ``var``, ``deterministic``, ``sample`` / ``mode`` / ``kl`` / ``nll``), except that ``kl`` and ``nll`` sum over
    every non-batch axis (diffusers' sum over axes 1-3 assumes images) and return ``(B,)`` (zeros when
    ``deterministic``: then ``std = var = 0`` and ``sample()`` returns the mean).
    """

    def __init__(self, moments: torch.Tensor, deterministic: bool = False):
        self.parameters = moments
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.deterministic = deterministic
        self.std = torch.zeros_like(self.mean) if deterministic else torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> torch.Tensor:
        return torch.zeros_like(self.mean) if self.deterministic else torch.exp(self.logvar)

    def sample(self, generator: GeneratorLike = None) -> torch.Tensor:
        # rows(): the noise of a sample does not depend on how its batch is split over processes (vidgen.rng)
        noise = rows(generator).randn(*self.mean.shape).to(self.mean)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self, other: "DiagonalGaussian | None" = None) -> torch.Tensor:
        """KL to ``other`` (default N(0, I)) summed over all latent elements: ``(B,)``, in fp32 at least
        (a loss reduction: bf16 moments are upcast first)."""
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0], dtype=_loss_dtype(self.mean))
        mean, logvar = _up(self.mean), _up(self.logvar)
        if other is None:
            terms = mean.pow(2) + logvar.exp() - 1.0 - logvar
        else:
            o_mean, o_logvar = _up(other.mean), _up(other.logvar)
            terms = ((mean - o_mean).pow(2) + logvar.exp()) / o_logvar.exp() - 1.0 - logvar + o_logvar
        return 0.5 * terms.flatten(1).sum(1)

    def nll(self, sample: torch.Tensor, dims: tuple[int, ...] | None = None) -> torch.Tensor:
        """Negative log-likelihood of ``sample``, summed over ``dims`` (default: every non-batch axis)."""
        if self.deterministic:
            return self.mean.new_zeros(self.mean.shape[0], dtype=_loss_dtype(self.mean))
        logvar = _up(self.logvar)
        terms = math.log(2.0 * math.pi) + logvar + (_up(sample) - _up(self.mean)).pow(2) / logvar.exp()
        return 0.5 * (terms.flatten(1).sum(1) if dims is None else terms.sum(dim=dims))


class KLBottleneck(nn.Module):
    """Encoder emits ``2*C`` channels (mean, log-variance); extra loss = ``kl_weight * mean KL per element``."""

    def __init__(self, latent_channels: int, kl_weight: float):
        super().__init__()
        self.latent_channels, self.kl_weight = latent_channels, kl_weight
        self.encoder_channels = 2 * latent_channels

    def forward(self, moments: torch.Tensor, sample: bool = True, generator=None) -> BottleneckOutput:
        post = DiagonalGaussian(moments)
        z = post.sample(generator) if sample else post.mode()
        kl = post.kl().mean() / post.mean[0].numel()
        return BottleneckOutput(z, self.kl_weight * kl, {"kl": kl.item(), "z_std": z.detach().std().item()})


class CausalVAE(CausalCodecMixin, ModelMixin, ConfigMixin):
    """Causal 3D VAE (see module docstring). ``scaling_factor`` / ``shift_factor``: ``(z - shift) * scale`` has
    unit variance on the training data (computed by the training script and stored in the config).

    For diffusers pipelines the same statistics are readable as per-channel ``latents_mean`` / ``latents_std``
    (properties and derived config entries, never saved): ``latents_mean = [shift_factor] * latent_channels``,
    ``latents_std = [1 / scaling_factor] * latent_channels``, so ``(z - mean) / std == normalize_latents(z)``.
    """

    config_name = "config.json"
    _derived_config_keys = CausalCodecMixin._derived_config_keys + ("latents_mean", "latents_std")

    @register_to_config
    def __init__(self, widths=(32, 64, 128), num_res_blocks: int = 1, decoder_extra_blocks: int = 1,
                 patch_size: int = 2, spatial_compression: int = 8, temporal_compression: int = 4,
                 temporal_kernel: int = 3, latent_channels: int = 16, kl_weight: float = 1e-6,
                 scaling_factor: float = 1.0, shift_factor: float = 0.0):
        super().__init__()
        self.codec_config = CodecConfig(widths, num_res_blocks, decoder_extra_blocks, patch_size,
                                        spatial_compression, temporal_compression, temporal_kernel, latent_channels)
        self.bottleneck = KLBottleneck(latent_channels, kl_weight)
        self.encoder = CausalEncoder(self.codec_config, self.bottleneck.encoder_channels)
        self.decoder = CausalDecoder(self.codec_config, latent_channels)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "CausalVAE":
        if name not in VAE_PRESETS:
            raise ConfigError(f"unknown VAE preset {name!r}; choose from {sorted(VAE_PRESETS)}")
        check_init_options(cls, overrides, f"{cls.__name__}.from_preset({name!r})")
        return cls(**{**VAE_PRESETS[name], **overrides})

    @classmethod
    def _derived_config(cls, cfg) -> dict:
        channels = cfg["latent_channels"]
        return {**super()._derived_config(cfg), "latents_mean": [float(cfg["shift_factor"])] * channels,
                "latents_std": [1.0 / cfg["scaling_factor"]] * channels}

    @property
    def latents_mean(self) -> list[float]:
        """``[shift_factor] * latent_channels`` (diffusers' name for the latent statistics)."""
        return self.config.latents_mean

    @property
    def latents_std(self) -> list[float]:
        """``[1 / scaling_factor] * latent_channels``."""
        return self.config.latents_std

    @property
    def encoder_channels(self) -> int:
        return self.bottleneck.encoder_channels

    @property
    def decoder_channels(self) -> int:
        return self.codec_config.latent_channels

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> roughly unit-variance latents for generators: ``(z - shift) * scale``."""
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.config.scaling_factor + self.config.shift_factor

    def encode(self, x: torch.Tensor, chunk_frames: int | None = None, return_dict: bool = True):
        """``x`` ``(B, 3, T, H, W)`` in [-1, 1] -> ``AutoencoderKLOutput(latent_dist=DiagonalGaussian)``."""
        dist = DiagonalGaussian(self.encode_features(x, chunk_frames))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, num_frames: int | None = None, height: int | None = None,
               width: int | None = None, chunk_frames: int | None = None, return_dict: bool = True,
               generator: torch.Generator | None = None):
        """Latents ``(B, C, t, h, w)`` -> ``DecoderOutput(sample=(B, 3, T, H, W))``.

        ``num_frames`` / ``height`` / ``width`` crop to the original size (defaults: ``1+(t-1)*tc``, ``h*sc``, ``w*sc``);
        ``chunk_frames`` counts latent frames. ``generator`` is accepted for diffusers' signature and ignored:
        decoding is deterministic.
        """
        out = self.decode_latents(z, num_frames, height, width, chunk_frames)
        return DecoderOutput(sample=out) if return_dict else (out,)

    def stream_decoder(self, height: int | None = None, width: int | None = None) -> StreamDecoder:
        """A caller-owned decoder: ``frames = s.push(z_chunk)``; concatenated outputs equal one-shot decode."""
        return self._stream_decoder(lambda z: z, height, width)

    def forward(self, sample: torch.Tensor, sample_posterior: bool = False, generator=None, return_dict: bool = True):
        """Reconstruction through :meth:`encode` / :meth:`decode` (so tiling and slicing apply); the posterior
        mode, or a sample drawn with ``generator`` if ``sample_posterior``. Training uses :meth:`reconstruct`."""
        post = self.encode(sample).latent_dist
        z = post.sample(generator) if sample_posterior else post.mode()
        out = self.decode(z, *sample.shape[2:]).sample
        return DecoderOutput(sample=out) if return_dict else (out,)

    def reconstruct(self, x: torch.Tensor, sample_posterior: bool = True, generator=None) -> ReconstructionOutput:
        """Training entry point shared by all vidgen tokenizers: reconstruction + bottleneck loss/logs."""
        check_video(x, "x", self.input_dtypes(getattr(x, "device", None)))
        t, h, w = x.shape[2:]
        moments = self.encoder(pad_video(x, self.codec_config))
        bott = self.bottleneck(moments, sample=sample_posterior, generator=generator)
        y = self.decoder(bott.latent)[:, :, :t, :h, :w]
        return ReconstructionOutput(y, bott)

"""``DiffusersVideoVAE``: a diffusers video VAE (the VAE of a family of :mod:`vidgen.families`) with vidgen's
tokenizer interface, so vidgen's flow generator trains on its latents and ``vidgen eval recon`` measures it::

    vae = DiffusersVideoVAE.from_pretrained(vae_folder)    # or DiffusersVideoVAE(AutoencoderKLWan(...)), any family's
    z = vae.normalize_latents(vae.encode(x).latent_dist.mode())    # x: (B, 3, T, H, W) in [-1, 1], any T/H/W
    y = vae.decode(vae.denormalize_latents(z), num_frames=T, height=H, width=W).sample   # exactly T x H x W

An adapter around the diffusers model (kept as ``.vae``), not a subclass: the folder it saves is the diffusers VAE's
own, which diffusers' pipelines and ``from_pretrained`` read unchanged. Each family's geometry and latent
statistics are read from its config the way its diffusers pipeline reads them (the family's
:class:`~vidgen.families.VaeSpec`).
"""
from __future__ import annotations

import inspect
import math
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import diffusers
import torch
from diffusers.configuration_utils import FrozenDict
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from torch import nn

import vidgen.tokenizers.base as codec_base
from vidgen.errors import ConfigError, InvalidInputError, MissingWeightsError, UnsupportedError
from vidgen.families import DIFFUSERS_VIDEO_VAES, vae_family
from vidgen.precision import compute_dtypes, dtype_argument
from vidgen.tokenizers.causal_codec import check_latent, check_values, check_video, latent_frames, pad_video
from vidgen.tokenizers.loading_mixins import read_config
from vidgen.tokenizers.vae import DiagonalGaussian


def is_diffusers_video_vae(obj) -> bool:
    """Whether ``obj`` is a raw (unwrapped) diffusers video VAE that :class:`DiffusersVideoVAE` can wrap."""
    return isinstance(obj, nn.Module) and vae_family(obj) is not None


class DiffusersVideoVAE(nn.Module):
    """vidgen's tokenizer interface (that of :class:`~vidgen.tokenizers.CausalVAE`) over a diffusers video VAE.

    **Exact frame counts.** diffusers' video VAEs take ``1 + k*m`` frames (``m``: the temporal compression, twice
    it for CogVideoX, see :class:`~vidgen.families.VaeSpec`; 4 for Wan, 8 for LTX-Video) and frames in multiples
    of the spatial compression (LTX-Video: 32), and silently drop or add frames otherwise (Wan and LTX encode 6
    frames as 5).
    :meth:`encode` replicate-pads the end of time (the last frame repeated) and the bottom/right edges (the edge
    pixels) up to that rule; :meth:`decode` crops back to ``num_frames x height x width``, and raises if the VAE
    returns another count than the rule says, so no frame is ever dropped or added silently. :meth:`latent_grid`
    gives the latent grid of any size.

    ``chunk_frames`` is accepted for vidgen's signature and ignored: these VAEs bound their working memory
    themselves (frame batches, ``enable_tiling()``), so chunked and one-shot results are the same computation.
    Streaming decode (:meth:`stream_decoder`) is not available.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        family = vae_family(vae) if isinstance(vae, nn.Module) else None
        if family is None:
            hint = ""
            if isinstance(vae, DiffusersVideoVAE):
                hint = "; it is already wrapped (DiffusersVideoVAE.wrap(obj) returns it as it is)"
            elif isinstance(vae, nn.Module):
                hint = ("; an image VAE such as AutoencoderKL has no temporal compression, and vidgen's own "
                        "tokenizers (CausalVAE, CausalVQVAE) are used directly")
            raise InvalidInputError(f"vae: {type(vae).__module__}.{type(vae).__name__} is not a supported diffusers "
                                    f"video VAE ({', '.join(DIFFUSERS_VIDEO_VAES)}){hint}")
        self.vae, self.family, self._spec = vae, family.vae, family.vae_spec
        self.temporal_compression_ratio = int(self._spec.temporal(vae))
        self.spatial_compression_ratio = int(self._spec.spatial(vae))
        self.latent_channels = int(self._spec.channels(vae.config))
        # the geometry vidgen's pipelines read (codec_config.temporal_compression), as CausalVAE.codec_config
        self.codec_config = SimpleNamespace(temporal_compression=self.temporal_compression_ratio,
                                            spatial_compression=self.spatial_compression_ratio,
                                            latent_channels=self.latent_channels)
        # the padding rule, in pad_video's terms: pixel frames per step (CogVideoX: 2 latent frames), spatial multiple
        self._padding = SimpleNamespace(temporal_compression=self.temporal_compression_ratio * self._spec.latent_step,
                                        spatial_compression=self.spatial_compression_ratio)

    # ------------------------------------------------------------------ wrapping, loading, saving
    @classmethod
    def wrap(cls, obj) -> "DiffusersVideoVAE":
        """``obj`` if it is already a :class:`DiffusersVideoVAE`, else ``obj`` wrapped (a supported diffusers VAE)."""
        return obj if isinstance(obj, cls) else cls(obj)

    @staticmethod
    def unwrap(obj):
        """The raw diffusers model of an adapter (what a diffusers pipeline registers and saves), else ``obj``."""
        return obj.vae if isinstance(obj, DiffusersVideoVAE) else obj

    @classmethod
    def from_pretrained(cls, path, *, dtype: Optional[torch.dtype] = None, torch_dtype: Optional[torch.dtype] = None,
                        **kwargs) -> "DiffusersVideoVAE":
        """The VAE saved in the folder ``path`` by the diffusers class its ``config.json`` names (or by this
        adapter), wrapped, in eval mode. ``dtype``: diffusers' name (``torch_dtype``, its other spelling, is taken too); other
        keywords go to diffusers' ``from_pretrained``. Safetensors only, and the weights must match the config
        exactly (diffusers would leave missing tensors random, with a warning)."""
        dtype = dtype_argument(dtype, torch_dtype)
        folder = Path(str(path)) / (kwargs.get("subfolder") or "")
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise MissingWeightsError(f"{folder}: no config.json here; expected a local folder written by "
                                      "save_pretrained() (for a Hub id: DiffusersVideoVAE(<the VAE's diffusers "
                                      "class>.from_pretrained(id, subfolder='vae')))")
        name = read_config(config_file).get("_class_name")
        if name not in DIFFUSERS_VIDEO_VAES:
            raise ConfigError(f"{config_file}: _class_name {name!r} is not a supported diffusers video VAE "
                              f"({', '.join(DIFFUSERS_VIDEO_VAES)})")
        kwargs.setdefault("use_safetensors", True)  # never unpickle a weight file
        try:
            vae, info = getattr(diffusers, name).from_pretrained(str(path), dtype=dtype, output_loading_info=True,
                                                                 **kwargs)
        except OSError as err:
            raise MissingWeightsError(f"{folder}: cannot load the {name} weights: {err}") from err
        except ValueError as err:
            if "expected shape" not in str(err):
                raise
            detail = str(err).split(" If you want")[0].replace("Cannot load  because ", "")  # diffusers' wording
            raise ConfigError(f"{config_file} does not match the weights in {folder}: {detail}") from err
        missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
        if missing or unexpected:
            raise MissingWeightsError(f"{folder}: the weight file does not match {config_file}: {len(missing)} "
                                      f"tensor(s) of the model are missing {missing[:5]}, {len(unexpected)} in the "
                                      f"file are unexpected {unexpected[:5]}")
        return cls(vae.eval())

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """The wrapped VAE's own diffusers folder (``config.json`` names its class), readable without vidgen."""
        self.vae.save_pretrained(save_directory, **kwargs)

    # ------------------------------------------------------------------ what vidgen reads
    @property
    def config(self) -> FrozenDict:
        """The wrapped VAE's config plus vidgen's names for its geometry (``latent_channels``: Wan calls it
        ``z_dim``; ``temporal_compression_ratio`` / ``spatial_compression_ratio``); derived, never saved."""
        return FrozenDict({**self.vae.config, "latent_channels": self.latent_channels,
                           "temporal_compression_ratio": self.temporal_compression_ratio,
                           "spatial_compression_ratio": self.spatial_compression_ratio})

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @property
    def device(self) -> torch.device:
        return self.vae.device

    model_dtype = dtype

    def input_dtypes(self, device=None) -> tuple[torch.dtype, ...]:
        """The VAE's dtype, plus autocast's while autocast is on (as :meth:`CausalVAE.input_dtypes`)."""
        device_type = torch.device(device if device is not None else self.device).type
        known = device_type in ("cpu", "cuda", "xpu", "mps", "hpu", "xla")
        return compute_dtypes(self.dtype, device_type) if known else (self.dtype,)

    def to(self, *args, **kwargs) -> "DiffusersVideoVAE":
        self.vae.to(*args, **kwargs)  # diffusers' own .to (its checks for quantized / offloaded models)
        return self

    def latent_grid(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """``(t, h, w)`` of the latents of a ``num_frames x height x width`` video (after the padding above)."""
        for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be an int >= 1, got {value!r}")
        padded = latent_frames(num_frames, self._padding.temporal_compression)
        sc = self.spatial_compression_ratio
        return 1 + (padded - 1) * self._spec.latent_step, math.ceil(height / sc), math.ceil(width / sc)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Deprecated name of :meth:`latent_grid`, removed in vidgen 0.3."""
        warnings.warn("latent_shape() is deprecated (removed in vidgen 0.3); use latent_grid(num_frames, height, width)",
                      FutureWarning, stacklevel=2)
        return self.latent_grid(num_frames, height, width)

    # ------------------------------------------------------------------ latent statistics
    def _statistics(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(mean, std, scale)`` of ``normalize(z) = (z - mean) * scale / std``, as the family's pipeline reads
        them: Wan / Mochi / Cosmos per-channel lists in the config, LTX buffers and ``scaling_factor``, CogVideoX /
        HunyuanVideo ``scaling_factor`` (and ``shift_factor`` if set; their pipelines leave it out, shipped
        checkpoints have none)."""
        cfg = self.vae.config
        scale = float(cfg.get("scaling_factor") or 1.0)  # Wan has none
        if self._spec.stats == "buffers":
            mean, std = self.vae.latents_mean, self.vae.latents_std
        elif self._spec.stats == "config" and None not in (cfg.get("latents_mean"), cfg.get("latents_std")):
            mean, std = torch.tensor(cfg.latents_mean), torch.tensor(cfg.latents_std)
        else:
            mean, std = torch.tensor(float(cfg.get("shift_factor") or 0.0)), torch.ones(())
        mean, std = (s.to(z.device, z.dtype).reshape(1, -1, 1, 1, 1) if s.numel() == 1 else
                     s.to(z.device, z.dtype).reshape(1, self.latent_channels, -1, 1, 1) for s in (mean, std))
        if mean.shape[2] > 1:  # Cosmos: one statistic per latent frame
            if z.shape[2] > mean.shape[2]:
                raise InvalidInputError(f"z has {z.shape[2]} latent frames, but the {self.family} statistics cover "
                                        f"{mean.shape[2]} (latents_mean holds one value per channel and frame)")
            mean, std = mean[:, :, :z.shape[2]], std[:, :, :z.shape[2]]
        return mean, std, scale

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents -> the normalized latents the family's diffusers pipeline denoises."""
        mean, std, scale = self._statistics(z)
        if self._spec.reciprocal_std:
            return (z - mean) * (1.0 / std) * scale
        return (z - mean) * scale / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, std, scale = self._statistics(z)
        if self._spec.reciprocal_std:
            return z / (1.0 / std) / scale + mean
        return z * std / scale + mean

    # ------------------------------------------------------------------ encode / decode
    def encode(self, x: torch.Tensor, chunk_frames: Optional[int] = None, return_dict: bool = True):
        """``x`` ``(B, 3, T, H, W)`` in [-1, 1] -> ``AutoencoderKLOutput(latent_dist=DiagonalGaussian)`` over the
        :meth:`latent_grid` (padded as the class docstring says). Cosmos' deterministic latents come back as a
        posterior with zero variance."""
        check_video(x, "x", self.input_dtypes(getattr(x, "device", None)), values=False)
        codec_base.CausalCodecMixin._check_chunk(chunk_frames)
        self.check_memory("x", x.shape[0], *x.shape[2:], decode=False)
        check_values(x, "x", video=True)
        posterior = self.vae.encode(pad_video(x, self._padding)).latent_dist
        moments = posterior.parameters
        if isinstance(posterior, DiagonalGaussianDistribution):
            dist = DiagonalGaussian(moments, deterministic=posterior.deterministic)
        else:  # IdentityDistribution
            dist = DiagonalGaussian(torch.cat([moments, torch.zeros_like(moments)], 1), deterministic=True)
        self._check_rule("encoded", x.shape[2:], dist.mean.shape[2:], self.latent_grid(*x.shape[2:]))
        return AutoencoderKLOutput(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z: torch.Tensor, num_frames: Optional[int] = None, height: Optional[int] = None,
               width: Optional[int] = None, chunk_frames: Optional[int] = None, return_dict: bool = True,
               generator: Optional[torch.Generator] = None, timestep: Optional[torch.Tensor] = None):
        """Latents ``(B, C, t, h, w)`` -> ``DecoderOutput(sample=(B, 3, T, H, W))`` cropped to ``num_frames`` /
        ``height`` / ``width`` (defaults: ``1+(t-1)*tc``, ``h*sc``, ``w*sc``). ``generator`` is accepted for
        diffusers' signature and ignored; LTX decoders with timestep conditioning get ``timestep`` (B,), default 0
        (their pipeline's default ``decode_timestep``)."""
        check_latent(z, self.latent_channels, "z", self.input_dtypes(getattr(z, "device", None)), values=False)
        codec_base.CausalCodecMixin._check_chunk(chunk_frames)
        tc, sc, step = self.temporal_compression_ratio, self.spatial_compression_ratio, self._spec.latent_step
        b, _, t, h, w = z.shape
        if (t - 1) % step:
            raise InvalidInputError(f"z has {t} latent frames, but {self.family} decodes 1 + {step}k latent frames "
                                    "(latent_grid() gives the grid of a video)")
        full = (1 + (t - 1) * tc, h * sc, w * sc)
        for name, value, limit in zip(("num_frames", "height", "width"), (num_frames, height, width), full):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit):
                raise InvalidInputError(f"{name}={value!r} is out of range for latents of shape {tuple(z.shape)} "
                                        f"(1..{limit})")
        self.check_memory("z", b, *full)
        check_values(z, "z", video=False)
        temb = {"temb": z.new_zeros(b) if timestep is None else torch.as_tensor(timestep).to(z).expand(b)} \
            if self.vae.config.get("timestep_conditioning") else {}
        out = self.vae.decode(z, **temb).sample
        self._check_rule("decoded", z.shape[2:], out.shape[2:], full)
        out = out[:, :, : num_frames or full[0], : height or full[1], : width or full[2]]
        return DecoderOutput(sample=out) if return_dict else (out,)

    def _check_rule(self, what: str, given, got, expected) -> None:
        if tuple(got) != tuple(expected):
            raise UnsupportedError(f"{self.family} {what} a {tuple(given)} grid to {tuple(got)}, not the "
                                   f"{tuple(expected)} its frame rule gives: this configuration is not supported")

    def forward(self, sample: torch.Tensor, sample_posterior: bool = False, generator=None, return_dict: bool = True):
        """Reconstruction at the input's exact size (posterior mode, or a sample drawn with ``generator``)."""
        post = self.encode(sample).latent_dist
        out = self.decode(post.sample(generator) if sample_posterior else post.mode(), *sample.shape[2:]).sample
        return DecoderOutput(sample=out) if return_dict else (out,)

    def stream_decoder(self, height: Optional[int] = None, width: Optional[int] = None):
        raise UnsupportedError(f"{self.family}: streaming decode (long videos, prompt schedules, pipe.stream(), "
                               "autoregressive frame-by-frame output) needs a vidgen causal tokenizer (CausalVAE, "
                               "whose decoder carries a causal cache); decode whole videos with decode() instead")

    # ------------------------------------------------------------------ tiling, slicing, memory
    def enable_tiling(self, *args, tile_sample_size: Optional[int] = None, tile_overlap: Optional[int] = None,
                      **kwargs) -> None:
        """The wrapped VAE's ``enable_tiling`` with its own arguments, plus vidgen's aliases (``vidgen eval recon``
        passes them): ``tile_sample_size`` sets both tile minimums, ``tile_overlap`` the pixels neighbouring tiles
        share (a stride for Wan / LTX / HunyuanVideo / Mochi / Cosmos, an overlap factor for CogVideoX)."""
        aliases = {}
        if tile_sample_size is not None or tile_overlap is not None:
            size = tile_sample_size if tile_sample_size is not None else self.vae.tile_sample_min_height
            if not (isinstance(size, int) and size > 0 and (tile_overlap is None or isinstance(tile_overlap, int)
                                                            and 0 <= tile_overlap < size)):
                raise InvalidInputError(f"tile_sample_size={size!r} must be a positive int and tile_overlap="
                                        f"{tile_overlap!r} an int in [0, tile_sample_size)")
            aliases = {"tile_sample_min_height": size, "tile_sample_min_width": size}
            params = inspect.signature(self.vae.enable_tiling).parameters
            if tile_overlap is not None and "tile_sample_stride_height" in params:
                stride = size - tile_overlap
                aliases.update(tile_sample_stride_height=stride, tile_sample_stride_width=stride)
            elif tile_overlap is not None:
                factor = tile_overlap / size
                aliases.update(tile_overlap_factor_height=factor, tile_overlap_factor_width=factor)
            clash = sorted(set(aliases) & set(kwargs)) + (["positional arguments"] if args else [])
            if clash:
                raise InvalidInputError(f"pass either tile_sample_size / tile_overlap or {', '.join(clash)}, not both")
        self.vae.enable_tiling(*args, **aliases, **kwargs)
        for key, value in aliases.items():  # diffusers keeps the current value for a 0 ("value or current")
            setattr(self.vae, key, value)

    def disable_tiling(self) -> None:
        self.vae.disable_tiling()

    def enable_slicing(self) -> None:
        self.vae.enable_slicing()

    def disable_slicing(self) -> None:
        self.vae.disable_slicing()

    def estimate_memory(self, batch: int, num_frames: int, height: int, width: int, decode: bool = True,
                        chunk_frames: Optional[int] = None) -> int:
        """Rough peak bytes of decoding (or encoding) a ``batch x num_frames x height x width`` video: the padded
        video plus :data:`~vidgen.tokenizers.base.ACTIVATION_COPIES` copies of the full-resolution activation of the
        frames one pass holds (one tile with tiling, one sample with slicing). Not measured on these architectures:
        it refuses requests that cannot fit (a typo asking for petabytes), not tight ones."""
        vae, tc, sc = self.vae, self.temporal_compression_ratio, self.spatial_compression_ratio
        t, h, w = self.latent_grid(num_frames, height, width)
        frames, h, w = 1 + (t - 1) * tc, h * sc, w * sc
        total = batch * 3 * frames * h * w + (0 if decode else batch * 2 * self.latent_channels * t * h * w // sc ** 2)
        if self._spec.pass_frames is not None:
            frames = min(frames, self._spec.pass_frames(vae, tc))
        elif getattr(vae, "use_framewise_decoding" if decode else "use_framewise_encoding", False):
            frames = min(frames, getattr(vae, "tile_sample_min_num_frames", frames) + tc)
        if vae.use_tiling:
            h, w = min(h, vae.tile_sample_min_height), min(w, vae.tile_sample_min_width)
        largest = max(3, self._spec.width(vae.config)) * frames * h * w
        rows = 1 if vae.use_slicing else batch
        return int(total + codec_base.ACTIVATION_COPIES * rows * largest) * self.dtype.itemsize

    def check_memory(self, name: str, batch: int, num_frames: int, height: int, width: int, decode: bool = True,
                     chunk_frames: Optional[int] = None) -> None:
        """:class:`InvalidInputError` up front when :meth:`estimate_memory` exceeds the device's total memory
        (skipped while torch.compile traces: the device query is not traceable)."""
        if torch.compiler.is_compiling():
            return
        need = self.estimate_memory(batch, num_frames, height, width, decode)
        limit = codec_base.device_memory_bytes(self.device)
        if limit is not None and need > limit:
            raise InvalidInputError(
                f"{name}: {'decoding' if decode else 'encoding'} {batch} video(s) of {num_frames} frames of "
                f"{height}x{width} would need about {need / 2**30:,.1f} GiB, more than the {limit / 2**30:,.1f} GiB "
                f"of {self.device}; use fewer frames or a smaller size (enable_tiling() and enable_slicing() reduce "
                "the working memory, not the output)")

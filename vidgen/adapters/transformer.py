"""``DiffusersVideoTransformer``: a diffusers video transformer (any family of :mod:`vidgen.families` with a
transformer) behind vidgen's generator token interface, so vidgen's pipeline samples it, its trainer fine-tunes it
and its attention kernels run inside it::

    gen = DiffusersVideoTransformer(WanTransformer3DModel.from_pretrained(folder, subfolder="transformer"))
    pred = gen(latents, timestep, cond).sample      # latents (B, C, t, h, w), cond a vidgen Conditioning
    latents = gen.sample(grid, batch, cond, negative=neg, scheduler=sched, num_inference_steps=50)

An adapter around the diffusers model (kept as ``.model``), not a subclass, as
:class:`~vidgen.tokenizers.DiffusersVideoVAE` is for the VAE: the folder it saves is the diffusers model's own. The
latents are always vidgen's ``(B, C, t, h, w)``; the family (``.family``, a :class:`~vidgen.families.Family`) turns
them into its own layout and positional and text inputs the way its diffusers pipeline does. The sampling loop is
:mod:`vidgen.adapters.sampling`.
"""
from __future__ import annotations

from typing import Optional

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from vidgen.errors import InvalidInputError
from vidgen.families import PIPELINE_FAMILIES, transformer_family
from vidgen.families.base import patch_size_of
from vidgen.generators.embeddings import Conditioning


class DiffusersVideoTransformer(nn.Module):
    """A diffusers video transformer with vidgen's generator interface (see the module docstring).

    ``noise_scheduler``: the scheduler whose noising training uses for ``v_prediction`` families; the pipeline sets
    its own. ``call_options``: keyword options of the family's model call (:meth:`configure` sets those the pipeline
    fixes, e.g. a rotary frame rate or per-token timesteps)."""

    def __init__(self, model: nn.Module, noise_scheduler=None, **call_options):
        super().__init__()
        family = transformer_family(model)
        if family is None:
            raise InvalidInputError(f"model: {type(model).__name__} is not a supported diffusers video transformer "
                                    f"({', '.join(f.transformer for f in PIPELINE_FAMILIES)})")
        self.model, self.family, self.noise_scheduler = model, family, noise_scheduler
        self.call_options = {**family.model_options(), **call_options}
        self.logit_normal_std = 1.0  # flow-matching training: noise levels s = sigmoid(N(0, std))

    @classmethod
    def wrap(cls, obj, **kwargs) -> "DiffusersVideoTransformer":
        return obj if isinstance(obj, cls) else cls(obj, **kwargs)

    def configure(self, pipeline_config=None, vae=None) -> None:
        """The call options fixed by the pipeline's config and its VAE (a ``DiffusersVideoVAE``)."""
        self.call_options.update(self.family.model_options(pipeline_config, vae))

    # ------------------------------------------------------------------ properties vidgen reads
    @property
    def config(self):
        return self.model.config

    @property
    def in_channels(self) -> int:
        """The transformer's input channels: the latents', plus a conditioned model's condition channels."""
        return int(self.model.config.in_channels)

    @property
    def latent_channels(self) -> int:
        """Channels of the latents it samples and predicts (the VAE's; ``Family.latent_channels``)."""
        return self.family.latent_channels(self.model)

    @property
    def prediction_type(self) -> str:
        """The family's (``"flow"`` or ``"v_prediction"``); a v-prediction family's is its scheduler's."""
        if self.family.prediction_type != "flow" and self.noise_scheduler is not None:
            return self.noise_scheduler.config.get("prediction_type", self.family.prediction_type)
        return self.family.prediction_type

    @property
    def max_text_tokens(self) -> int:
        """The family's prompt length (fixed by the transformer in some families)."""
        return self.family.max_text_tokens_of(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """``(pt, ph, pw)``: latent cells per token along each axis."""
        return patch_size_of(self.model)

    def token_grid(self, grid) -> tuple[int, int, int]:
        """The transformer's token grid for a latent grid (t, h, w)."""
        return tuple(int(g) // p for g, p in zip(grid, self.patch_size))

    def check_grid(self, grid) -> None:
        """A latent grid the transformer can patchify (every axis a multiple of its patch size)."""
        bad = [f"{axis}={g} is not a multiple of {p}" for axis, g, p in zip("thw", grid, self.patch_size) if g % p]
        if bad:
            raise InvalidInputError(f"latent grid {tuple(grid)}: {'; '.join(bad)} ({type(self.model).__name__} "
                                    f"patches of {self.patch_size}); choose another num_frames / height / width")

    # ------------------------------------------------------------------ token interface (as FlowVideoTransformer's)
    def check_tokenizer(self, tokenizer) -> None:
        if not hasattr(tokenizer, "normalize_latents"):
            raise InvalidInputError(f"tokenizer: {type(self.model).__name__} works on continuous latents and needs "
                                    f"a vidgen.tokenizers.DiffusersVideoVAE, got {type(tokenizer).__name__}")
        channels = getattr(tokenizer, "latent_channels", None) or tokenizer.config.get("latent_channels")
        if channels != self.latent_channels:
            raise InvalidInputError(f"tokenizer: {channels} latent channels, but {type(self.model).__name__} samples "
                                    f"{self.latent_channels} (out_channels)")

    @torch.no_grad()
    def encode_videos(self, tokenizer, video: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        """Video (B, 3, T, H, W) in [-1, 1] -> normalized latents (the posterior mode), ``(B, C, t, h, w)``, as the
        family's pipeline scales them."""
        from vidgen.tokenizers import video_to_tokens
        return video_to_tokens(tokenizer, video, chunk_frames)

    @torch.no_grad()
    def decode_videos(self, tokenizer, latents: torch.Tensor, num_frames: int, height: int, width: int,
                      chunk_frames: Optional[int] = None) -> torch.Tensor:
        """Normalized latents -> video (B, 3, num_frames, height, width)."""
        from vidgen.tokenizers import tokens_to_video
        return tokens_to_video(tokenizer, latents, num_frames, height, width, chunk_frames)

    # ------------------------------------------------------------------ the model call
    def noise(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """Starting noise of ``shape`` (B, C, t, h, w), drawn as the family's pipeline draws it (so a seed gives
        diffusers' noise), in vidgen's layout."""
        return self.family.noise(shape, generator, device, dtype)

    def forward(self, latents: torch.Tensor, timestep, cond: Conditioning, return_dict: bool = True, **kwargs):
        """The family's prediction for ``latents`` (B, C, t, h, w) at ``timestep`` (B,) on the scheduler's scale,
        conditioned on ``cond`` (text states, and the mask / pooled embedding where the family reads them); extra
        keyword arguments go to the family's model call (``attention_kwargs``, and its own options). Returns the
        prediction in vidgen's layout with the model's dtype."""
        if cond is None or cond.text is None:
            raise InvalidInputError(f"cond: {type(self.model).__name__} needs text embeddings (a Conditioning with "
                                    "text), as its pipeline's encode_prompt makes them")
        b, c, t, h, w = latents.shape
        self.check_grid((t, h, w))
        timestep = torch.as_tensor(timestep, device=latents.device).reshape(-1).expand(b) \
            if torch.as_tensor(timestep).dim() <= 1 else timestep
        out = self.family.forward(self, latents, timestep, cond, **{**self.call_options, **kwargs})
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    # ------------------------------------------------------------------ sampling and training
    def sample(self, grid, batch: int, cond: Optional[Conditioning] = None, config=None, scheduler=None,
               **options) -> torch.Tensor:
        """Normalized latents (B, C, t, h, w) for a latent ``grid``: :func:`~vidgen.adapters.sampling.
        sample_latents` (``negative`` the negative prompt's Conditioning; without one, no guidance)."""
        from vidgen.adapters.sampling import sample_latents
        return sample_latents(self, cond, config, scheduler=scheduler, grid=grid, batch=batch, **options)

    def loss(self, x0: torch.Tensor, cond: Optional[Conditioning] = None, generator=None, weight=None):
        """The family's training loss on normalized latents ``x0`` (B, C, t, h, w)
        (:func:`~vidgen.adapters.sampling.training_loss`)."""
        from vidgen.adapters.sampling import training_loss
        return training_loss(self, x0, cond, generator)

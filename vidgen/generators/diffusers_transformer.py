"""``DiffusersFlowTransformer``: a diffusers video transformer (Wan 2.1 / 2.2, CogVideoX, LTX-Video) behind vidgen's
flow-generator token interface, so vidgen's pipeline samples it, its trainer fine-tunes it and its attention
kernels run inside it::

    gen = DiffusersFlowTransformer(WanTransformer3DModel.from_pretrained(folder, subfolder="transformer"))
    pred = gen(latents, timestep, cond).sample      # latents (B, C, t, h, w), cond a vidgen Conditioning
    latents = gen.sample(grid, batch, cond, negative=neg, scheduler=sched, num_inference_steps=50)

An adapter around the diffusers model (kept as ``.model``), not a subclass, as
:class:`~vidgen.tokenizers.DiffusersVideoVAE` is for the VAE: the folder it saves is the diffusers model's own. Each
family's latent layout (Wan ``(B, C, t, h, w)``, CogVideoX ``(B, t, C, h, w)``, LTX packed ``(B, t*h*w, C)``), its
positional inputs (CogVideoX's rotary table, LTX's grid and frame rate) and its text inputs are handled here, the
way its diffusers pipeline passes them; the sampling loop is :mod:`vidgen.generators.diffusers_sampling`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from vidgen.errors import InvalidInputError
from vidgen.generators.embeddings import Conditioning


@dataclass(frozen=True)
class TransformerFamily:
    """What vidgen needs to know about one diffusers video transformer class."""

    name: str  # "wan", "cogvideox", "ltx"
    pipeline: str  # the diffusers text-to-video pipeline class that holds it
    prediction_type: str  # "flow" (velocity, FlowMatch schedulers) or "v_prediction" (DDIM / DPM)
    cfg: str  # "separate": one pass per condition (Wan), "batched": one pass over [negative; prompt]
    max_text_tokens: int  # the pipeline's default max_sequence_length
    text_mask: bool  # whether the transformer takes the text attention mask


FAMILIES = {
    "WanTransformer3DModel": TransformerFamily("wan", "WanPipeline", "flow", "separate", 512, False),
    "CogVideoXTransformer3DModel": TransformerFamily("cogvideox", "CogVideoXPipeline", "v_prediction", "batched",
                                                     226, False),
    "LTXVideoTransformer3DModel": TransformerFamily("ltx", "LTXPipeline", "flow", "batched", 128, True),
}


def transformer_family(model) -> Optional[TransformerFamily]:
    """The :class:`TransformerFamily` of a diffusers transformer (or of a subclass), else None."""
    for cls in type(model).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__]
    return None


class DiffusersFlowTransformer(nn.Module):
    """A diffusers video transformer with vidgen's flow-generator interface (see the module docstring).

    ``noise_scheduler``: the scheduler whose noising training uses for ``v_prediction`` families (CogVideoX); the
    pipeline sets its own. ``frame_rate``: LTX's rotary frame scale (its pipeline's ``frame_rate``, default 25)."""

    def __init__(self, model: nn.Module, noise_scheduler=None, frame_rate: float = 25.0):
        super().__init__()
        family = transformer_family(model)
        if family is None:
            raise InvalidInputError(f"model: {type(model).__name__} is not a supported diffusers video transformer "
                                    f"({', '.join(sorted(FAMILIES))})")
        self.model, self.family = model, family
        self.noise_scheduler, self.frame_rate = noise_scheduler, frame_rate
        self.logit_normal_std = 1.0  # flow-matching training: noise levels s = sigmoid(N(0, std))
        self.expand_timesteps = False  # Wan 2.2 TI2V's pipeline setting
        self.vae_ratios = (8, 32)  # LTX: (frames, pixels) per latent cell, set from the pipeline's VAE

    @classmethod
    def wrap(cls, obj, **kwargs) -> "DiffusersFlowTransformer":
        return obj if isinstance(obj, cls) else cls(obj, **kwargs)

    # ------------------------------------------------------------------ properties vidgen reads
    @property
    def config(self):
        return self.model.config

    @property
    def in_channels(self) -> int:
        return int(self.model.config.in_channels)

    @property
    def prediction_type(self) -> str:
        """``"flow"`` for Wan / LTX; CogVideoX's is its scheduler's (``v_prediction`` for the released models)."""
        if self.family.prediction_type != "flow" and self.noise_scheduler is not None:
            return self.noise_scheduler.config.get("prediction_type", self.family.prediction_type)
        return self.family.prediction_type

    @property
    def max_text_tokens(self) -> int:
        """The family's prompt length (CogVideoX's transformer fixes it: ``max_text_seq_length``)."""
        return int(self.model.config.get("max_text_seq_length") or self.family.max_text_tokens)

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
        if channels != self.in_channels:
            raise InvalidInputError(f"tokenizer: {channels} latent channels, but {type(self.model).__name__} takes "
                                    f"in_channels={self.in_channels}")

    @torch.no_grad()
    def encode_videos(self, tokenizer, video: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
        """Video -> normalized latents (the posterior mode), ``(B, C, t, h, w)``, as the family's pipeline scales
        them."""
        from vidgen.generators.flow import FlowVideoTransformer
        return FlowVideoTransformer.encode_videos(self, tokenizer, video, chunk_frames)

    @torch.no_grad()
    def decode_videos(self, tokenizer, latents: torch.Tensor, num_frames: int, height: int, width: int,
                      chunk_frames: Optional[int] = None) -> torch.Tensor:
        from vidgen.generators.flow import FlowVideoTransformer
        return FlowVideoTransformer.decode_videos(self, tokenizer, latents, num_frames, height, width, chunk_frames)

    # ------------------------------------------------------------------ the model call
    def noise(self, shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        """Starting noise of ``shape`` (B, C, t, h, w), drawn in the family's own layout and ``dtype`` as its
        pipeline draws it (so a seed gives diffusers' noise), returned in vidgen's layout."""
        from diffusers.utils.torch_utils import randn_tensor
        b, c, t, h, w = shape
        if self.family.name == "cogvideox":
            return randn_tensor((b, t, c, h, w), generator=generator, device=device,
                                dtype=dtype).permute(0, 2, 1, 3, 4)
        return randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)

    def forward(self, latents: torch.Tensor, timestep, cond: Conditioning, return_dict: bool = True, **kwargs):
        """The family's prediction for ``latents`` (B, C, t, h, w) at ``timestep`` (B,) on the scheduler's scale,
        conditioned on ``cond.text`` (and ``cond.text_mask`` where the family reads it); extra keyword arguments go
        to the diffusers model (``attention_kwargs``, LTX's ``frame_rate``). Returns the prediction in vidgen's
        layout with the model's dtype."""
        if cond is None or cond.text is None:
            raise InvalidInputError(f"cond: {type(self.model).__name__} needs text embeddings (a Conditioning with "
                                    "text), as its pipeline's encode_prompt makes them")
        b, c, t, h, w = latents.shape
        self.check_grid((t, h, w))
        x = latents.to(self.dtype).contiguous()  # bf16 kernels round by layout: diffusers' inputs are contiguous
        text = cond.text.to(self.device, self.dtype)
        timestep = torch.as_tensor(timestep, device=latents.device).reshape(-1).expand(b) \
            if torch.as_tensor(timestep).dim() <= 1 else timestep
        frame_rate = kwargs.pop("frame_rate", self.frame_rate)
        name = self.family.name
        if name == "wan":
            if self.expand_timesteps:  # Wan 2.2 TI2V: one timestep per token
                pt, ph, pw = self.patch_size
                timestep = timestep[:, None].expand(b, (t // pt) * (h // ph) * (w // pw))
            out = self.model(hidden_states=x, timestep=timestep, encoder_hidden_states=text, return_dict=False,
                             **kwargs)[0]
        elif name == "cogvideox":
            ofs = None if self.model.config.get("ofs_embed_dim") is None else x.new_full((1,), 2.0)
            out = self.model(hidden_states=x.permute(0, 2, 1, 3, 4).contiguous(), encoder_hidden_states=text,
                             timestep=timestep, ofs=ofs, image_rotary_emb=self.rotary_embedding((t, h, w)),
                             return_dict=False, **kwargs)[0].permute(0, 2, 1, 3, 4)
        else:  # ltx: tokens packed (B, t*h*w, C)
            mask = cond.text_mask.to(self.device) if cond.text_mask is not None else None
            pt, ps, _ = self.patch_size
            tc, sc = self.vae_ratios
            out = self.model(hidden_states=pack_latents(x, ps, pt).contiguous(), encoder_hidden_states=text,
                             timestep=timestep, encoder_attention_mask=mask, num_frames=t // pt, height=h // ps,
                             width=w // ps,
                             rope_interpolation_scale=(tc / frame_rate, sc, sc), return_dict=False, **kwargs)[0]
            out = unpack_latents(out, (t, h, w), ps, pt)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    def rotary_embedding(self, grid):
        """CogVideoX's rotary table for a latent grid, as its pipeline builds it (None without rotary
        embeddings)."""
        cfg = self.model.config
        if not cfg.use_rotary_positional_embeddings:
            return None
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
        p, pt = cfg.patch_size, cfg.get("patch_size_t")
        gh, gw = grid[1] // p, grid[2] // p
        base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
        if pt is None:
            crops = get_resize_crop_region_for_grid((gh, gw), base_w, base_h)
            cos, sin = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=crops,
                                               grid_size=(gh, gw), temporal_size=grid[0], device=self.device)
        else:
            cos, sin = get_3d_rotary_pos_embed(embed_dim=cfg.attention_head_dim, crops_coords=None,
                                               grid_size=(gh, gw), temporal_size=(grid[0] + pt - 1) // pt,
                                               grid_type="slice", max_size=(base_h, base_w), device=self.device)
        return cos, sin

    # ------------------------------------------------------------------ sampling and training
    def sample(self, grid, batch: int, cond: Optional[Conditioning] = None, config=None, scheduler=None,
               **options) -> torch.Tensor:
        """Normalized latents (B, C, t, h, w) for a latent ``grid``: :func:`~vidgen.generators.diffusers_sampling.
        sample_latents` (``negative`` the negative prompt's Conditioning; without one, no guidance)."""
        from vidgen.generators.diffusers_sampling import sample_latents
        return sample_latents(self, cond, config, scheduler=scheduler, grid=grid, batch=batch, **options)

    def loss(self, x0: torch.Tensor, cond: Optional[Conditioning] = None, generator=None, weight=None):
        """The family's training loss on normalized latents ``x0`` (B, C, t, h, w)
        (:func:`~vidgen.generators.diffusers_sampling.training_loss`)."""
        from vidgen.generators.diffusers_sampling import training_loss
        return training_loss(self, x0, cond, generator)


def patch_size_of(model) -> tuple[int, int, int]:
    """``(pt, ph, pw)`` of a diffusers video transformer: latent cells per token along t, h, w."""
    cfg = model.config
    if isinstance(cfg.patch_size, (tuple, list)):  # Wan
        return tuple(int(p) for p in cfg.patch_size)
    return int(cfg.get("patch_size_t") or 1), int(cfg.patch_size), int(cfg.patch_size)


def pack_latents(x: torch.Tensor, p: int = 1, pt: int = 1) -> torch.Tensor:
    """(B, C, t, h, w) -> (B, tokens, C * pt * p * p), tokens in (t, h, w) order: LTX's packing."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // pt, pt, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)


def unpack_latents(x: torch.Tensor, grid, p: int = 1, pt: int = 1) -> torch.Tensor:
    """The inverse of :func:`pack_latents` for a latent ``grid`` (t, h, w)."""
    t, h, w = grid
    b = x.shape[0]
    x = x.reshape(b, t // pt, h // p, w // p, -1, pt, p, p)
    return x.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, -1, t, h, w)

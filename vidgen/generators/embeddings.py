"""Input embeddings shared by the generators: timesteps, latent patches, token ids, and the conditioning.

Conditioning (:class:`Conditioning`) is what a text encoder or a class label gives; :class:`ConditionEmbedder`
turns it into prefix tokens (or cross-attention context) and the adaLN vector. Classifier-free guidance uses
learned null embeddings (the DiT habit: the null class is one extra row), selected per sample by ``drop``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from vidgen.errors import InvalidInputError
from vidgen.generators.config import BackboneConfig


@dataclass
class Conditioning:
    """What a generator is conditioned on; every field is optional and batched on axis 0."""

    text: Optional[torch.Tensor] = None  # (B, M, text_dim) per-token hidden states
    text_mask: Optional[torch.Tensor] = None  # (B, M) bool, True = real token
    pooled: Optional[torch.Tensor] = None  # (B, text_dim) pooled sentence embedding
    class_labels: Optional[torch.Tensor] = None  # (B,) long

    def batch_size(self) -> Optional[int]:
        for x in (self.text, self.pooled, self.class_labels):
            if x is not None:
                return x.shape[0]
        return None

    def index(self, idx) -> "Conditioning":
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return Conditioning(pick(self.text), pick(self.text_mask), pick(self.pooled), pick(self.class_labels))

    def repeat(self, n: int) -> "Conditioning":
        rep = lambda x: None if x is None else x.repeat_interleave(n, dim=0)  # noqa: E731
        return Conditioning(rep(self.text), rep(self.text_mask), rep(self.pooled), rep(self.class_labels))

    def to(self, device, non_blocking: bool = False) -> "Conditioning":
        """On ``device`` (dtypes kept); also how accelerate's offload hooks move it with a forward's arguments."""
        move = lambda x: None if x is None else x.to(device, non_blocking=non_blocking)  # noqa: E731
        return Conditioning(move(self.text), move(self.text_mask), move(self.pooled), move(self.class_labels))

    @staticmethod
    def cat(items: list["Conditioning"]) -> "Conditioning":
        def join(name):
            vals = [getattr(c, name) for c in items]
            return None if any(v is None for v in vals) else torch.cat(vals, dim=0)
        return Conditioning(join("text"), join("text_mask"), join("pooled"), join("class_labels"))


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (B,) timesteps on the scheduler's scale (0..1000): (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B,) timesteps -> (B, dim); ``dtype``: the model's compute dtype (under diffusers' layerwise casting the
        weights are stored in another one and cast at each call)."""
        return self.mlp(timestep_features(t, self.freq_dim).to(dtype))


class PatchEmbed3D(nn.Module):
    """Latents (B, C, t, h, w) -> tokens (B, t'*h'*w', dim) with (pt, ph, pw) patches; grids that are not
    multiples of the patch are zero-padded (and :meth:`unpatchify` crops back), so any frame count works."""

    def __init__(self, in_channels: int, out_channels: int, dim: int, patch_size):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.proj = nn.Linear(in_channels * math.prod(self.patch_size), dim)

    def grid(self, latent_grid) -> tuple[int, int, int]:
        return tuple(math.ceil(n / p) for n, p in zip(latent_grid, self.patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, ph, pw = self.patch_size
        t, h, w = self.grid(x.shape[2:])
        x = nn.functional.pad(x, (0, w * pw - x.shape[4], 0, h * ph - x.shape[3], 0, t * pt - x.shape[2]))
        b, c = x.shape[:2]
        x = x.reshape(b, c, t, pt, h, ph, w, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, t, h, w, C, pt, ph, pw)
        return self.proj(x.reshape(b, t * h * w, -1))

    def unpatchify(self, tokens: torch.Tensor, latent_grid) -> torch.Tensor:
        """(B, N, out_channels * pt*ph*pw) -> (B, out_channels, t, h, w) cropped to ``latent_grid``."""
        pt, ph, pw = self.patch_size
        t, h, w = self.grid(latent_grid)
        b = tokens.shape[0]
        x = tokens.reshape(b, t, h, w, self.out_channels, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        x = x.reshape(b, self.out_channels, t * pt, h * ph, w * pw)
        return x[:, :, : latent_grid[0], : latent_grid[1], : latent_grid[2]]


class IdPatches(nn.Module):
    """How a discrete generator groups token ids into backbone tokens: each backbone token carries a (pt, ph, pw)
    patch of ids (MAGVIT-style tokens at 4x4 pixels would otherwise make 1280 tokens per clip). No weights: the
    owner's embedding table holds one row block per position in the patch (:meth:`slots` offsets the ids into it,
    the embeddings are summed per token), and its head predicts every id of the patch (:meth:`unpatchify`). Grids
    that are not multiples of the patch are padded with ``pad_id`` and the logits cropped back. 1x1x1 = one id per
    token, the layout every model before patches had (same weight shapes)."""

    def __init__(self, patch_size, num_ids: int, pad_id: int):
        super().__init__()
        self.patch_size, self.num_ids, self.pad_id = tuple(patch_size), num_ids, pad_id

    @property
    def size(self) -> int:
        return math.prod(self.patch_size)

    def grid(self, id_grid) -> tuple[int, int, int]:
        return tuple(math.ceil(n / p) for n, p in zip(id_grid, self.patch_size))

    def group(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T, H, W) -> (B, t*h*w, pt*ph*pw): the ids of each patch, in raster order of the patches."""
        pt, ph, pw = self.patch_size
        t, h, w = self.grid(ids.shape[1:])
        ids = nn.functional.pad(ids, (0, w * pw - ids.shape[3], 0, h * ph - ids.shape[2], 0, t * pt - ids.shape[1]),
                                value=self.pad_id)
        b = ids.shape[0]
        return ids.reshape(b, t, pt, h, ph, w, pw).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, t * h * w, -1)

    def ungroup(self, patches: torch.Tensor, id_grid) -> torch.Tensor:
        """(B, t*h*w, pt*ph*pw) ids of each patch -> ids (B, T, H, W) cropped to ``id_grid`` (inverse of :meth:`group`)."""
        return self.unpatchify(patches[..., None], id_grid)[..., 0]

    def offset(self, patches: torch.Tensor) -> torch.Tensor:
        """(..., pt*ph*pw) ids -> rows of the owner's table: id + slot * ``num_ids``."""
        return patches + torch.arange(self.size, device=patches.device) * self.num_ids

    def slots(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T, H, W) -> (B, t*h*w, pt*ph*pw) rows of the owner's table: id + slot * ``num_ids``."""
        return self.offset(self.group(ids))

    def unpatchify(self, logits: torch.Tensor, id_grid) -> torch.Tensor:
        """(B, t*h*w, pt*ph*pw * V) -> (B, T, H, W, V) cropped to ``id_grid``."""
        pt, ph, pw = self.patch_size
        t, h, w = self.grid(id_grid)
        b = logits.shape[0]
        x = logits.reshape(b, t, h, w, pt, ph, pw, -1).permute(0, 1, 4, 2, 5, 3, 6, 7)
        x = x.reshape(b, t * pt, h * ph, w * pw, -1)
        return x[:, : id_grid[0], : id_grid[1], : id_grid[2]]


class ConditionEmbedder(nn.Module):
    """Conditioning -> (text tokens (B, P, dim) or None, adaLN vector (B, dim)).

    Text: per-token states are projected; padded positions (mask False) take a learned pad embedding, so the
    prefix has a fixed length ``max_text_tokens`` and needs no key mask. The pooled embedding feeds the adaLN
    vector. Dropped samples (CFG) take learned null tokens / a null pooled vector / the null class row.
    """

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        if cfg.text_dim:
            self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
            self.pooled_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.SiLU(), nn.Linear(d, d))
            self.null_text = nn.Parameter(torch.randn(cfg.max_text_tokens, d) * 0.02)
            self.pad_text = nn.Parameter(torch.randn(d) * 0.02)
            self.null_pooled = nn.Parameter(torch.zeros(d))
        if cfg.num_classes:
            self.class_embed = nn.Embedding(cfg.num_classes + 1, d)  # last row = null class
        self.uncond = nn.Parameter(torch.zeros(d))  # adaLN vector when nothing conditions the model

    def check(self, cond: Conditioning, batch: int) -> None:
        cfg = self.cfg
        if cond.text is not None or cond.pooled is not None:
            if not cfg.text_dim:
                raise InvalidInputError("text conditioning given but this model has text_dim=0 (no text input)")
            if cond.text is None or cond.pooled is None:
                raise InvalidInputError("text conditioning needs both per-token states (text) and pooled states")
            if cond.text.dim() != 3 or cond.text.shape[0] != batch or cond.text.shape[2] != cfg.text_dim:
                raise InvalidInputError(f"text must have shape ({batch}, M, {cfg.text_dim}), got {tuple(cond.text.shape)}")
            if cond.text.shape[1] > cfg.max_text_tokens:
                raise InvalidInputError(f"text has {cond.text.shape[1]} tokens, more than max_text_tokens="
                                        f"{cfg.max_text_tokens}; truncate the prompt when encoding it")
            if cond.pooled.shape != (batch, cfg.text_dim):
                raise InvalidInputError(f"pooled must have shape ({batch}, {cfg.text_dim}), got {tuple(cond.pooled.shape)}")
            if cond.text_mask is not None and cond.text_mask.shape != cond.text.shape[:2]:
                raise InvalidInputError(f"text_mask must have shape {tuple(cond.text.shape[:2])}, "
                                        f"got {tuple(cond.text_mask.shape)}")
        if cond.class_labels is not None:
            if not cfg.num_classes:
                raise InvalidInputError("class_labels given but this model has num_classes=0")
            labels = cond.class_labels
            if labels.shape != (batch,) or labels.dtype != torch.long:
                raise InvalidInputError(f"class_labels must be a ({batch},) long tensor, got {labels.dtype} "
                                        f"{tuple(labels.shape)}")
            if labels.numel() and (labels.min() < 0 or labels.max() > cfg.num_classes):
                raise InvalidInputError(f"class_labels must be in [0, {cfg.num_classes}] ({cfg.num_classes} = null)")

    def forward(self, cond: Conditioning, batch: int, drop: Optional[torch.Tensor] = None):
        """``drop``: (B,) bool, True = use the null condition (classifier-free guidance)."""
        cfg = self.cfg
        self.check(cond, batch)
        dtype = self.uncond.dtype
        vec = self.uncond.expand(batch, -1)
        tokens = None
        if cfg.text_dim:
            if cond.text is None:  # no text given: the text part is null (class labels, if any, still count)
                text = self.null_text.expand(batch, -1, -1)
                pooled = self.null_pooled.expand(batch, -1)
            else:
                m = cond.text.shape[1]
                text = self.text_proj(cond.text.to(dtype))  # (B, M, d)
                mask = cond.text_mask if cond.text_mask is not None else torch.ones(batch, m, dtype=torch.bool,
                                                                                    device=text.device)
                text = torch.where(mask[..., None], text, self.pad_text)
                pad = self.pad_text.expand(batch, cfg.max_text_tokens - m, -1)
                text = torch.cat([text, pad], dim=1)
                pooled = self.pooled_proj(cond.pooled.to(dtype))
            if drop is not None:
                text = torch.where(drop[:, None, None], self.null_text, text)
                pooled = torch.where(drop[:, None], self.null_pooled, pooled)
            tokens, vec = text, vec + pooled
        if cfg.num_classes:
            labels = cond.class_labels
            if labels is None:
                labels = torch.full((batch,), cfg.num_classes, dtype=torch.long, device=vec.device)
            if drop is not None:
                labels = torch.where(drop, torch.full_like(labels, cfg.num_classes), labels)
            vec = vec + self.class_embed(labels)
        return tokens, vec

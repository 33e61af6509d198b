"""Block-causal flow generation: latent frames in chunks, each chunk denoised while it attends earlier chunks through a
rolling KV cache (diffusion forcing; CausVid / Self-Forcing / LongLive's streaming layout).

* **Chunks.** ``chunk_frames`` token frames make a chunk. Chunk ``i`` attends itself, the ``window_chunks`` chunks
  before it and the first ``sink_chunks`` chunks (the sink); ``window_chunks=0`` means every earlier chunk (and then
  no sink). :func:`attended_chunks` is the rule, one pure function.
* **Bounded positions.** Keys are cached before RoPE. The temporal RoPE position of a frame is its index in the
  attended chunks laid end to end (sink, window, own chunk), so no position exceeds
  ``(sink_chunks + window_chunks + 1) * chunk_frames - 1`` however long the video: RoPE scores depend on offsets
  only, and inside the window the offsets are the true ones.
* **Per-chunk noise levels.** Each chunk has its own timestep; the adaLN vector is per token (the backbone's
  per-token modulation). Training (:meth:`CausalFlowVideoTransformer.loss`) draws a level per chunk, the clean
  frames' flow-matching target: diffusion forcing under teacher forcing.
* **Two paths, one result.** :meth:`~CausalFlowVideoTransformer.forward` runs the whole sequence, every chunk's
  attention over its attended chunks (the reference, and training); :mod:`vidgen.generators.causal_stream`'s
  ``ChunkStream`` runs one chunk at a time against a ``RollingKVCache`` filled by clean passes of the chunks before it
  (sampling). With the context chunks clean (timestep 0) the two agree (``tests/unit/test_causal.py``).
* Text enters through cross-attention (``text_conditioning="cross"``): a prompt switch re-encodes the cached chunks
  under the new prompt (:meth:`~vidgen.generators.causal_stream.ChunkStream.recache`).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange

from vidgen.errors import ConfigError, InvalidInputError, UnsupportedError
from vidgen.generators.base import GeneratorMixin, LatentTokensMixin, check_positive_int, check_steps
from vidgen.generators.causal_stream import (RopeTable, attend_rotated, attended_chunks, check_chunking, qkv_heads,
                                             stream_latents)
from vidgen.generators.config import WEIGHTLESS_ARCHITECTURE_KEYS
from vidgen.generators.flow_sampler import distillation_spec
from vidgen.generators.embeddings import Conditioning, PatchEmbed3D, TimestepEmbedding
from vidgen.generators.sampling import check_guidance
from vidgen.generators.sampling_config import SamplingConfig
from vidgen.rng import GeneratorLike, rows


PROMPT_SWITCHES = ("recache", "reset")


def check_prompt_switch(value) -> None:
    if value not in PROMPT_SWITCHES:
        raise InvalidInputError(f"prompt_switch must be one of {PROMPT_SWITCHES}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class CausalSamplingConfig(SamplingConfig):
    """The block-causal generator's sampling settings (:mod:`vidgen.generators.sampling_config`):
    ``num_inference_steps`` Euler steps per chunk, classifier-free guidance at ``guidance_scale`` (1: none), and
    ``window_chunks``: a shorter window than the model's for a faster stream (LongLive's short window).
    ``prompt_switch``: at a prompt switch, ``"recache"`` the kept chunks under the new prompt (LongLive's KV re-cache)
    or ``"reset"`` the cache (the story goes on as a new video)."""

    num_inference_steps: int = 4
    guidance_scale: float = 1.0
    window_chunks: Optional[int] = None  # chunks of the past attended; None: the model's (a stream may attend fewer)
    prompt_switch: str = "recache"
    checks: ClassVar[dict] = {"num_inference_steps": check_steps, "guidance_scale": check_guidance,
                              "window_chunks": lambda v: v is None or check_positive_int("window_chunks", v),
                              "prompt_switch": check_prompt_switch}


class CausalFlowVideoTransformer(GeneratorMixin, LatentTokensMixin, ModelMixin, ConfigMixin):
    """A flow-matching video transformer whose chunks of latent frames are block-causal (module docstring)."""

    config_name = "config.json"
    training_only_config = GeneratorMixin.training_only_config + ("logit_normal_std",)

    @register_to_config
    def __init__(self, in_channels: int = 16, patch_size=(1, 2, 2), cond_dropout: float = 0.1,
                 logit_normal_std: float = 1.0, chunk_frames: int = 1, window_chunks: int = 4, sink_chunks: int = 1,
                 architecture: Optional[dict] = None, distillation: Optional[dict] = None):
        super().__init__()
        if distillation is not None:  # a few-step student (Self-Forcing, vidgen.distillation.self_forcing)
            distillation_spec(**distillation)
        architecture = {**(architecture or {}), "text_conditioning": "cross"}
        self._build_shared(architecture)
        if tuple(patch_size)[0] != 1:
            raise ConfigError(f"patch_size: a block-causal model patches one latent frame at a time (pt = 1), got "
                              f"{tuple(patch_size)}")
        if self.backbone_config.layout != "full":
            raise ConfigError(f"layout={self.backbone_config.layout!r}: a block-causal model attends its chunks "
                              "densely (its window is window_chunks chunks of the past); use layout: full")
        check_chunking(chunk_frames, window_chunks, sink_chunks, self.backbone_config.max_grid[0])
        d = self.backbone_config.dim
        self.patch = PatchEmbed3D(in_channels, in_channels, d, patch_size)
        self.time_embed = TimestepEmbedding(d)
        self.head = torch.nn.Linear(d, in_channels * self.patch.patch_size[1] * self.patch.patch_size[2])
        torch.nn.init.zeros_(self.head.weight)  # DiT: the output starts at zero
        torch.nn.init.zeros_(self.head.bias)
        self.rope = RopeTable()

    @torch.no_grad()
    def load_related(self, source, differ: list[str]) -> bool:
        """``init_from`` a bidirectional flow model of the same backbone (CausVid's start): every weight of the same
        name and shape, and the patch embedding's columns of the noisy latents (the flow model also embeds given
        frames and their mask); the cross-attention to the text starts as this model built it. False for any other
        source."""
        from vidgen.generators.flow import FlowVideoTransformer

        def weights(a):  # how a prompt enters shapes no backbone weight it shares
            return {k: v for k, v in (a or {}).items() if k not in (*WEIGHTLESS_ARCHITECTURE_KEYS, "text_conditioning")}
        c, s = self.config, source.config
        if type(source) is not FlowVideoTransformer or s.prediction_type != "flow" or c.in_channels != s.in_channels \
                or tuple(c.patch_size) != tuple(s.patch_size) or weights(c.architecture) != weights(s.architecture):
            return False
        theirs = source.state_dict()
        for name, value in self.state_dict().items():
            if name == "patch.proj.weight":
                value.copy_(theirs[name][:, :value.shape[1]])  # [x_t, given, mask] -> x_t
            elif name in theirs and theirs[name].shape == value.shape:
                value.copy_(theirs[name])
        return True

    def default_scheduler(self):
        """``FlowMatchEulerDiscreteScheduler``; a distilled student's re-noises each clean estimate."""
        from diffusers import FlowMatchEulerDiscreteScheduler
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000,
                                               stochastic_sampling=self.config.distillation is not None)

    @property
    def chunking(self) -> tuple[int, int, int]:
        """(chunk_frames, window_chunks, sink_chunks)."""
        c = self.config
        return c.chunk_frames, c.window_chunks, c.sink_chunks

    def max_position(self) -> int:
        """The largest temporal RoPE position any query or key is given, at any length (None: unbounded)."""
        c, window, sink = self.chunking
        return (sink + window + 1) * c - 1 if window else None

    def _tokens(self, latents: torch.Tensor, timestep: torch.Tensor, cond, drop, embedded=None):
        """(tokens (B, N, d), adaLN vectors (B, N, d) per token, or (B, d) for one chunk, context, token grid);
        ``timestep`` (B, chunks); ``embedded``: ``embed_condition(cond, B, drop)`` made once (its context may be
        each block's ``context_kv``)."""
        b, _, t, h, w = latents.shape
        x = self.patch(latents.to(self.dtype))
        grid = self.patch.grid((t, h, w))
        _, context, vec = embedded or self.embed_condition(cond, b, drop)
        per_chunk = self.time_embed(timestep.reshape(-1), x.dtype).unflatten(0, timestep.shape)  # (B, n, d)
        if per_chunk.shape[1] == 1:  # one chunk, one noise level: the backbone's shared modulation, (B, d)
            return x, vec + per_chunk[:, 0], context, grid
        per_frame = per_chunk.repeat_interleave(self.config.chunk_frames, dim=1)[:, :grid[0]]
        vec = vec[:, None] + per_frame.repeat_interleave(grid[1] * grid[2], dim=1)
        return x, vec, context, grid

    def check_token_grid(self, grid) -> None:
        """Any number of token frames when a window bounds the attended positions (:meth:`max_position`, below
        ``max_grid[0]``), else at most ``max_grid``; the frame's extent at most ``max_grid``'s."""
        limit = self.backbone_config.max_grid[0]
        self.backbone.check_grid((min(grid[0], limit) if self.chunking[1] else grid[0], *grid[1:]))

    def chunk_timesteps(self, timestep, batch: int, frames: int, device) -> torch.Tensor:
        """``timestep`` as (B, chunks): a number or (B,) for every chunk, or (B, chunks) as given."""
        n = -(-frames // self.config.chunk_frames)
        timestep = torch.as_tensor(timestep, device=device, dtype=torch.float32)
        if timestep.dim() == 2:
            if timestep.shape != (batch, n):
                raise InvalidInputError(f"timestep must be (B,) or (B, chunks) = ({batch}, {n}), got "
                                        f"{tuple(timestep.shape)}")
            return timestep
        return timestep.reshape(-1).expand(batch)[:, None].expand(batch, n)

    def forward(self, latents: torch.Tensor, timestep, cond: Optional[Conditioning] = None,
                drop: Optional[torch.Tensor] = None, return_dict: bool = True, *, sp=None):
        """latents (B, C, t, h, w); timestep (B,) or (B, chunks) on the 0..1000 scale; every chunk attends its
        attended chunks (:func:`attended_chunks`) of this same sequence. The reference of
        :class:`~vidgen.generators.causal_stream.ChunkStream`. ``sp`` other than None is refused by the backbone:
        the chunked attention is not split over processes."""
        self.check_latents(latents)
        b, _, t, h, w = latents.shape
        self.check_token_grid(self.patch.grid((t, h, w)))
        x, vec, context, grid = self._tokens(latents, self.chunk_timesteps(timestep, b, t, latents.device), cond,
                                             drop)
        c, window, sink = self.chunking
        hw, n = grid[1] * grid[2], -(-grid[0] // c)

        def attend(i, attn, y):
            q, k, v = qkv_heads(attn, y)
            outs = []
            for j in range(n):
                frames = [f for ch in attended_chunks(j, sink, window) for f in range(ch * c, min(ch * c + c, grid[0]))]
                idx = torch.tensor(frames, device=y.device)
                tok = (idx[:, None] * hw + torch.arange(hw, device=y.device)).reshape(-1)
                own = tok[-(min(j * c + c, grid[0]) - j * c) * hw:]
                outs.append(attend_rotated(attn, q[:, :, own], k[:, :, tok], v[:, :, tok], len(frames), grid[1:],
                                    self.rope))
            return attn.proj(rearrange(torch.cat(outs, dim=2), "b h n d -> b n (h d)"))

        out = self.backbone(x, grid, vec, context=context, attend=attend, sp=sp)
        sample = self.patch.unpatchify(self.head(out), (t, h, w))
        return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)

    def sample(self, grid, batch: int, cond: Optional[Conditioning] = None, config=None, scheduler=None,
               generator: Optional[torch.Generator] = None, **settings) -> torch.Tensor:
        """The uniform sampling call of every generator: normalized latents (B, C, t, h, w) for a latent ``grid``,
        streamed chunk by chunk (:func:`~vidgen.generators.causal_stream.stream_latents`) with ``config`` (a
        :class:`CausalSamplingConfig`) and ``settings`` (``num_inference_steps``, ``guidance_scale``,
        ``window_chunks``)."""
        config = CausalSamplingConfig.resolve(config, settings)
        chunks = stream_latents(self, cond, frames=grid[0], hw=tuple(grid[1:]), batch=batch, generator=generator,
                                num_inference_steps=config.num_inference_steps,
                                guidance_scale=config.guidance_scale, scheduler=scheduler,
                                window_chunks=config.window_chunks)
        return torch.cat(list(chunks), dim=2)

    def loss(self, x0: torch.Tensor, cond: Optional[Conditioning] = None, generator: GeneratorLike = None,
             weight: Optional[torch.Tensor] = None, *, sp=None, context_swap: float = 0.0) -> tuple[torch.Tensor, dict]:
        """Diffusion forcing on normalized latents ``x0`` (B, C, t, h, w): a logit-normal noise level per chunk, the
        flow-matching loss over every frame (``sp``: as :meth:`forward`, refused). ``context_swap``: the share of
        clips whose first 1 .. n-1 chunks are another clip's of the batch, a prompt switch as a stream re-caches it
        (:func:`swap_context`); their loss covers their own chunks only."""
        self.check_latents(x0, "x0")
        if weight is not None:
            raise UnsupportedError("weight: per-position loss weights are not supported by the block-causal model")
        b, t, dev = x0.shape[0], x0.shape[2], x0.device
        r = rows(generator)
        n = -(-t // self.config.chunk_frames)
        noise = r.randn(*x0.shape).to(dev, x0.dtype)
        s = torch.sigmoid(r.randn(b, n) * self.config.logit_normal_std).to(dev)  # (B, chunks)
        s_frames = s.repeat_interleave(self.config.chunk_frames, dim=1)[:, :t]  # (B, t)
        own = None
        if context_swap > 0 and b > 1 and n > 1:
            x0, own = swap_context(x0, r.rand(b) < context_swap, r.rand(b), r.rand(b), self.config.chunk_frames)
        xt = (1 - s_frames[:, None, :, None, None]) * x0 + s_frames[:, None, :, None, None] * noise
        pred = self(xt, s * 1000, cond, drop=self.sample_drop(b, r, dev), sp=sp).sample
        if own is None:
            loss = F.mse_loss(pred.float(), (noise - x0).float())
        else:  # the mean over each clip's own frames
            err = (pred.float() - (noise - x0).float()).square().mean(dim=(1, 3, 4))  # (B, t)
            loss = (err * own).sum() / own.sum()
        return loss, {"mse": loss.detach()}


def other_rows(pick: torch.Tensor) -> torch.Tensor:
    """For each of B rows, another row of the batch, never itself (B > 1): row ``(i + 1 + floor(pick[i] * (B - 1)))
    % B``, from uniform draws ``pick`` in [0, 1)."""
    b = pick.shape[0]
    return (torch.arange(b) + 1 + (pick * (b - 1)).long().clamp(max=max(b - 2, 0))) % b


def swap_context(x0: torch.Tensor, swap: torch.Tensor, cut: torch.Tensor, pick: torch.Tensor,
                 chunk_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0 with the first chunks of the ``swap`` rows taken from another row, (B, t) 1.0 on each row's own frames).
    ``cut``, ``pick``: uniform draws in [0, 1) per row; a swapped row keeps chunks ``1 + floor(cut * (n - 1))`` on
    (its first chunk, the sink, is always another clip's) and takes the chunks before from row
    ``(i + 1 + floor(pick * (B - 1))) % B``, never itself."""
    b, t = x0.shape[0], x0.shape[2]
    n = -(-t // chunk_frames)
    first = 1 + (cut * (n - 1)).long().clamp(max=n - 2)  # (B,) in 1 .. n-1
    donor = other_rows(pick)
    chunks = swap[:, None] & (torch.arange(n)[None] < first[:, None])  # (B, n) chunks from the donor
    frames = chunks.repeat_interleave(chunk_frames, dim=1)[:, :t].to(x0.device)
    return torch.where(frames[:, None, :, None, None], x0[donor.to(x0.device)], x0), (~frames).to(x0.dtype)

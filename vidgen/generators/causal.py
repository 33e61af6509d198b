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
  attention over its attended chunks (the reference, and training); :class:`ChunkStream` runs one chunk at a time
  against a :class:`RollingKVCache` filled by clean passes of the chunks before it (sampling). With the context
  chunks clean (timestep 0) the two agree (``tests/test_causal.py``).
* Text enters through cross-attention (``text_conditioning="cross"``): a prompt switch re-encodes the cached chunks
  under the new prompt (:meth:`ChunkStream.recache`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange

from vidgen.attention.rope import apply_rope, rope3d_angles
from vidgen.errors import ConfigError, InvalidInputError, UnsupportedError
from vidgen.generators.base import (GeneratorMixin, LatentTokensMixin, check_guidance, check_positive_int,
                                   check_steps)
from vidgen.generators.config import WEIGHTLESS_ARCHITECTURE_KEYS
from vidgen.generators.distillation import check_student_call, distillation_spec, student_sigmas
from vidgen.generators.embeddings import Conditioning, PatchEmbed3D, TimestepEmbedding
from vidgen.generators.sampling import Guidance, apply_cfg, cfg_batch, step_callback
from vidgen.generators.sampling_config import SamplingConfig
from vidgen.rng import GeneratorLike, rows


@dataclasses.dataclass(frozen=True)
class CausalSamplingConfig(SamplingConfig):
    """The block-causal generator's sampling settings (:mod:`vidgen.generators.sampling_config`):
    ``num_inference_steps`` Euler steps per chunk, classifier-free guidance at ``guidance_scale`` (1: none), and
    ``window_chunks``: a shorter window than the model's for a faster stream (LongLive's short window)."""

    num_inference_steps: int = 4
    guidance_scale: float = 1.0
    window_chunks: Optional[int] = None  # chunks of the past attended; None: the model's (a stream may attend fewer)
    checks: ClassVar[dict] = {"num_inference_steps": check_steps, "guidance_scale": check_guidance,
                              "window_chunks": lambda v: v is None or check_positive_int("window_chunks", v)}


def attended_chunks(i: int, sink: int, window: int) -> list[int]:
    """The chunks chunk ``i`` attends, in order: the first ``sink`` chunks, the ``window`` chunks before ``i``
    (``window=0``: all of them), then ``i``."""
    if window == 0:
        return list(range(i + 1))
    sinks = list(range(min(sink, i)))
    return sinks + list(range(max(len(sinks), i - window), i)) + [i]


def check_chunking(chunk_frames, window_chunks, sink_chunks, max_frames: int) -> None:
    """Named errors for a chunk layout the model cannot run."""
    for name, value, low in (("chunk_frames", chunk_frames, 1), ("window_chunks", window_chunks, 0),
                             ("sink_chunks", sink_chunks, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    if sink_chunks and not window_chunks:
        raise ConfigError(f"sink_chunks={sink_chunks} needs a window (window_chunks >= 1): without one every "
                          "earlier chunk is attended and a sink has no meaning")
    span = (sink_chunks + window_chunks + 1) * chunk_frames if window_chunks else chunk_frames
    if span > max_frames:
        raise ConfigError(f"chunk_frames={chunk_frames} with sink_chunks={sink_chunks} and window_chunks="
                          f"{window_chunks} attends {span} token frames, more than the trained context "
                          f"(max_grid t = {max_frames}); use smaller chunks or a smaller window")


class RopeTable:
    """RoPE angles of token frames ``0 .. frames - 1`` on an ``hw`` grid, sliced from one table per (grid, head size,
    theta, device) that grows to the longest span asked for (rows are frame-major, so a prefix is a shorter span)."""

    def __init__(self):
        self.tables: dict[tuple, torch.Tensor] = {}

    def __call__(self, frames: int, hw: tuple[int, int], head_dim: int, theta: float, device) -> torch.Tensor:
        key, rows = (tuple(hw), head_dim, theta, str(device)), frames * hw[0] * hw[1]
        table = self.tables.get(key)
        if table is None or table.shape[0] < rows:
            table = self.tables[key] = rope3d_angles((frames, *hw), head_dim, theta, device)
        return table[:rows]


def stream_chunking(model, window_chunks: Optional[int]) -> tuple[int, int, int]:
    """(chunk_frames, window_chunks, sink_chunks) of a stream: the model's, or a shorter window than the cache the
    model keeps (a named error for a longer one: the model never attended those chunks)."""
    c, window, sink = model.chunking
    if window_chunks is None:
        return c, window, sink
    check_positive_int("window_chunks", window_chunks)
    if window and window_chunks > window:
        raise InvalidInputError(f"window_chunks={window_chunks} is larger than the cache this model keeps (the sink "
                                f"and window_chunks={window} chunks, as it was trained); a stream may attend fewer "
                                f"chunks, not more")
    check_chunking(c, window_chunks, sink, model.backbone_config.max_grid[0])
    return c, window_chunks, sink


def _attend(attn, q, k, v, frames: int, hw: tuple[int, int], rope: RopeTable) -> torch.Tensor:
    """Queries ``q`` (B, nh, Lq, D), the last ``Lq`` tokens of ``frames`` token frames whose pre-RoPE keys / values
    are ``k``, ``v`` (B, nh, L, D): rotated at positions ``0 .. frames - 1``, dense attention."""
    angles = rope(frames, hw, q.shape[-1], attn.config.rope_theta, q.device)
    q = apply_rope(q, angles, start=angles.shape[0] - q.shape[2])
    return F.scaled_dot_product_attention(q, apply_rope(k, angles), v)


def _qkv(attn, y: torch.Tensor):
    """Heads-first q, k, v of ``y`` (B, L, d) after qk-norm, before RoPE."""
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=attn.config.num_heads) for t in attn.qkv(y).chunk(3, dim=-1))
    return attn.q_norm(q), attn.k_norm(k), v


class CausalFlowVideoTransformer(GeneratorMixin, LatentTokensMixin, ModelMixin, ConfigMixin):
    """A flow-matching video transformer whose chunks of latent frames are block-causal (module docstring)."""

    config_name = "config.json"
    training_only_config = GeneratorMixin.training_only_config + ("logit_normal_std",)

    @register_to_config
    def __init__(self, in_channels: int = 16, patch_size=(1, 2, 2), cond_dropout: float = 0.1,
                 logit_normal_std: float = 1.0, chunk_frames: int = 1, window_chunks: int = 4, sink_chunks: int = 1,
                 architecture: Optional[dict] = None, distillation: Optional[dict] = None):
        super().__init__()
        if distillation is not None:  # a few-step student (Self-Forcing, vidgen.generators.self_forcing)
            distillation_spec(**distillation)
        architecture = {**(architecture or {}), "text_conditioning": "cross"}
        self._build_shared(architecture)
        if tuple(patch_size)[0] != 1:
            raise ConfigError(f"patch_size: a block-causal model patches one latent frame at a time (pt = 1), got "
                              f"{tuple(patch_size)}")
        if self.backbone_config.layout != "full":
            raise ConfigError(f"layout={self.backbone_config.layout!r}: a block-causal model attends its chunks densely "
                              "(its window is window_chunks chunks of the past); use layout: full")
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

    def _tokens(self, latents: torch.Tensor, timestep: torch.Tensor, cond, drop):
        """(tokens (B, N, d), per-token adaLN vectors (B, N, d), context, token grid); ``timestep`` (B, chunks)."""
        b, _, t, h, w = latents.shape
        x = self.patch(latents.to(self.dtype))
        grid = self.patch.grid((t, h, w))
        _, context, vec = self.embed_condition(cond, b, drop)
        per_chunk = self.time_embed(timestep.reshape(-1), x.dtype).unflatten(0, timestep.shape)  # (B, n, d)
        per_frame = per_chunk.repeat_interleave(self.config.chunk_frames, dim=1)[:, :grid[0]]
        vec = vec[:, None] + per_frame.repeat_interleave(grid[1] * grid[2], dim=1)
        return x, vec, context, grid

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
                drop: Optional[torch.Tensor] = None, return_dict: bool = True):
        """latents (B, C, t, h, w); timestep (B,) or (B, chunks) on the 0..1000 scale; every chunk attends its
        attended chunks (:func:`attended_chunks`) of this same sequence. The reference of :class:`ChunkStream`."""
        self.check_latents(latents)
        b, _, t, h, w = latents.shape
        x, vec, context, grid = self._tokens(latents, self.chunk_timesteps(timestep, b, t, latents.device), cond,
                                             drop)
        c, window, sink = self.chunking
        hw, n = grid[1] * grid[2], -(-grid[0] // c)

        def attend(i, attn, y):
            q, k, v = _qkv(attn, y)
            outs = []
            for j in range(n):
                frames = [f for ch in attended_chunks(j, sink, window) for f in range(ch * c, min(ch * c + c, grid[0]))]
                idx = torch.tensor(frames, device=y.device)
                tok = (idx[:, None] * hw + torch.arange(hw, device=y.device)).reshape(-1)
                own = tok[-(min(j * c + c, grid[0]) - j * c) * hw:]
                outs.append(_attend(attn, q[:, :, own], k[:, :, tok], v[:, :, tok], len(frames), grid[1:],
                                    self.rope))
            return attn.proj(rearrange(torch.cat(outs, dim=2), "b h n d -> b n (h d)"))

        out = self.backbone(x, grid, vec, context=context, attend=attend)
        sample = self.patch.unpatchify(self.head(out), (t, h, w))
        return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)

    def sample(self, grid, batch: int, cond: Optional[Conditioning] = None, config=None, scheduler=None,
               generator: Optional[torch.Generator] = None, **settings) -> torch.Tensor:
        """The uniform sampling call of every generator: normalized latents (B, C, t, h, w) for a latent ``grid``,
        streamed chunk by chunk (:func:`stream_latents`) with ``config`` (a :class:`CausalSamplingConfig`) and
        ``settings`` (``num_inference_steps``, ``guidance_scale``)."""
        config = CausalSamplingConfig.resolve(config, settings)
        chunks = stream_latents(self, cond, frames=grid[0], hw=tuple(grid[1:]), batch=batch, generator=generator,
                                num_inference_steps=config.num_inference_steps,
                                guidance_scale=config.guidance_scale, scheduler=scheduler,
                                window_chunks=config.window_chunks)
        return torch.cat(list(chunks), dim=2)

    def loss(self, x0: torch.Tensor, cond: Optional[Conditioning] = None, generator: GeneratorLike = None,
             weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
        """Diffusion forcing on normalized latents ``x0`` (B, C, t, h, w): a logit-normal noise level per chunk, the
        flow-matching loss over every frame."""
        self.check_latents(x0, "x0")
        if weight is not None:
            raise UnsupportedError("weight: per-position loss weights are not supported by the block-causal model")
        b, t, dev = x0.shape[0], x0.shape[2], x0.device
        r = rows(generator)
        n = -(-t // self.config.chunk_frames)
        noise = r.randn(*x0.shape).to(dev, x0.dtype)
        s = torch.sigmoid(r.randn(b, n) * self.config.logit_normal_std).to(dev)  # (B, chunks)
        s_frames = s.repeat_interleave(self.config.chunk_frames, dim=1)[:, :t]  # (B, t)
        xt = (1 - s_frames[:, None, :, None, None]) * x0 + s_frames[:, None, :, None, None] * noise
        pred = self(xt, s * 1000, cond, drop=self.sample_drop(b, r, dev)).sample
        loss = F.mse_loss(pred.float(), (noise - x0).float())
        return loss, {"mse": loss.detach()}


class RollingKVCache:
    """Per block, the pre-RoPE keys and values of the chunks later chunks may attend (the sink and the last
    ``window_chunks``); older ones are dropped, so memory is flat at any length."""

    def __init__(self, model: CausalFlowVideoTransformer, chunking: Optional[tuple] = None):
        self.chunking = chunking or model.chunking
        self.layers: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in model.backbone.blocks]

    def keep(self, next_chunk: int) -> None:
        """Drop what chunk ``next_chunk`` and later ones never attend."""
        _, window, sink = self.chunking
        if window:
            keep = set(attended_chunks(next_chunk, sink, window))
            for layer in self.layers:
                for j in [j for j in layer if j not in keep]:
                    del layer[j]

    def __len__(self) -> int:
        return len(self.layers[0])


class ChunkStream:
    """Chunk-at-a-time calls of a :class:`CausalFlowVideoTransformer`: :meth:`predict` the velocity of chunk ``i``
    (noisy) against the cache, :meth:`commit` its clean latents into the cache. ``cond``: the conditioning of every
    row (rows of guidance included); it stays fixed until :meth:`recache`."""

    def __init__(self, model: CausalFlowVideoTransformer, cond: Optional[Conditioning], hw: tuple[int, int],
                 drop: Optional[torch.Tensor] = None, window_chunks: Optional[int] = None):
        self.model, self.cond, self.drop, self.hw = model, cond, drop, hw
        self.chunking = stream_chunking(model, window_chunks)
        self.cache, self.next = RollingKVCache(model, self.chunking), 0
        self.clean: dict[int, torch.Tensor] = {}  # committed latents the cache holds (for recache)

    def _run(self, latents: torch.Tensor, timestep: torch.Tensor, i: int, write: bool,
             cached_only: bool = False) -> torch.Tensor:
        m = self.model
        c, window, sink = self.chunking
        x, vec, context, grid = m._tokens(latents, timestep[:, None], self.cond, self.drop)
        context_chunks = attended_chunks(i, sink, window)[:-1]
        if cached_only:  # a re-cache: the chunks still held stand in for those dropped
            context_chunks = [j for j in context_chunks if j in self.cache.layers[0]]

        def attend(layer, attn, y):
            q, k, v = _qkv(attn, y)
            cached = self.cache.layers[layer]
            ks = [cached[j][0] for j in context_chunks] + [k]
            vs = [cached[j][1] for j in context_chunks] + [v]
            if write:
                cached[i] = (k, v)
            frames = sum(x.shape[2] for x in ks) // (grid[1] * grid[2])
            out = _attend(attn, q, torch.cat(ks, dim=2), torch.cat(vs, dim=2), frames, grid[1:], m.rope)
            return attn.proj(rearrange(out, "b h n d -> b n (h d)"))

        out = m.backbone(x, grid, vec, context=context, attend=attend)
        return m.patch.unpatchify(m.head(out), tuple(latents.shape[2:]))

    def predict(self, latents: torch.Tensor, timestep) -> torch.Tensor:
        """The velocity for chunk ``self.next`` at ``latents`` (B, C, c, h, w), ``timestep`` (B,) or a number."""
        t = torch.as_tensor(timestep, device=latents.device, dtype=torch.float32).reshape(-1).expand(latents.shape[0])
        return self._run(latents, t, self.next, write=False)

    def _cache_clean(self, clean: torch.Tensor, i: int, cached_only: bool = False) -> None:
        """Write chunk ``i``'s keys and values from its clean latents: a pass at timestep 0."""
        self._run(clean, clean.new_zeros(clean.shape[0], dtype=torch.float32), i, write=True, cached_only=cached_only)

    def commit(self, clean: torch.Tensor) -> None:
        """Cache chunk ``self.next`` from its clean latents, then move to the next chunk."""
        self._cache_clean(clean, self.next)
        self.clean[self.next] = clean
        self.next += 1
        self.cache.keep(self.next)
        self.clean = {j: x for j, x in self.clean.items() if j in self.cache.layers[0]}

    def recache(self, cond: Optional[Conditioning], drop: Optional[torch.Tensor] = None) -> None:
        """Switch the prompt: re-encode the cached chunks under ``cond`` (and its null-condition flags ``drop``),
        in order (LongLive's KV re-cache)."""
        self.cond, self.drop, kept, upto = cond, drop, sorted(self.clean.items()), self.next
        self.cache = RollingKVCache(self.model, self.chunking)
        for j, clean in kept:
            self._cache_clean(clean, j, cached_only=True)
        self.next = upto


@torch.no_grad()
def stream_latents(model: CausalFlowVideoTransformer, cond: Optional[Conditioning], *, frames: int, hw: tuple,
                   batch: int = 1, num_inference_steps: int = 4, guidance_scale: float = 1.0,
                   negative: Optional[Conditioning] = None, generator: Optional[torch.Generator] = None,
                   scheduler=None, prompts: Optional[dict] = None, callback: Optional[Callable] = None,
                   guidance: Optional[Guidance] = None, window_chunks: Optional[int] = None):
    """Yield normalized latents (B, C, c, h, w) chunk by chunk for ``frames`` latent frames of ``hw`` latents: each
    chunk is denoised in ``num_inference_steps`` Euler steps of the flow (classifier-free guidance against
    ``negative``, or the learnt null condition, when ``guidance_scale`` > 1), then cached clean. ``prompts``:
    ``{chunk: (cond, negative)}`` switches the conditioning before that chunk, re-caching
    (:meth:`ChunkStream.recache`). ``callback(step, t, {"latents": x})`` after every step (``step`` counted over
    the whole stream) may return ``{"latents": x}`` to replace the chunk's latents, ``{"guidance_scale": s}`` for
    the steps that follow (``guidance``: the :class:`~vidgen.generators.sampling.Guidance` read at every step), or
    ``{"interrupt": True}`` to end the stream after this chunk. A distilled student denoises each chunk at the levels
    it was trained at (its step counts only, guidance 1). ``window_chunks``: attend fewer past chunks than the model
    keeps (:func:`stream_chunking`). Memory is flat in ``frames``."""
    scheduler = scheduler or model.default_scheduler()
    spec, c, dev = model.config.distillation, model.config.chunk_frames, model.device
    if spec is not None:
        check_student_call(spec, num_inference_steps, guidance.scale if guidance is not None else guidance_scale)
    grid = model.patch.grid((c, *hw))
    model.backbone.check_grid(grid)
    guidance = guidance or Guidance(guidance_scale)
    start = guidance.scale  # guidance runs (a doubled batch) when the stream starts with a scale other than 1
    both, drop, doubled = cfg_batch(cond, negative, batch, dev, start)
    stream, step = ChunkStream(model, both, tuple(hw), drop, window_chunks), 0
    for i in range(-(-frames // c)):
        if prompts and i in prompts:
            both, drop, doubled = cfg_batch(*prompts[i], batch, dev, start)
            stream.recache(both, drop)
        n = min(c, frames - i * c)
        x = torch.randn(batch, model.config.in_channels, n, *hw, generator=generator).to(dev)
        if spec is not None:
            scheduler.set_timesteps(sigmas=student_sigmas(num_inference_steps, spec.get("shift")), device=dev)
        else:
            scheduler.set_timesteps(num_inference_steps, device=dev)
        stop = False
        for t in scheduler.timesteps:
            v = stream.predict(torch.cat([x, x]) if doubled else x, t).float()
            x = scheduler.step(apply_cfg(v, guidance.scale) if doubled else v, t, x, generator=generator,
                               return_dict=False)[0]
            x, stopped = step_callback(callback, step, t, "latents", x, guidance)
            stop, step = stop or stopped, step + 1
        stream.commit(torch.cat([x, x]) if doubled else x)
        yield x
        if stop:
            return

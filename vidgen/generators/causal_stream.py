"""Streaming a :class:`~vidgen.generators.causal.CausalFlowVideoTransformer` chunk by chunk: which chunks a chunk
attends (:func:`attended_chunks`, the one rule), its attention over them with positions bounded by that set, the
rolling KV cache (:class:`RollingKVCache`), one chunk at a time against it (:class:`ChunkStream`: predict, commit,
re-cache on a prompt switch; a :class:`~vidgen.generators.stream_loop.ChunkModel`) and the few-step Euler stream of
latents (:func:`stream_latents`, through the one chunk loop :func:`~vidgen.generators.stream_loop.stream_chunks`).
Memory is flat in the video's length."""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from einops import rearrange

from vidgen.attention.rope import apply_rope, rope3d_angles

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators.base import check_positive_int
from vidgen.generators.embeddings import Conditioning
from vidgen.generators.flow_sampler import flow_timesteps, scheduler_step
from vidgen.generators.sampling import Guidance, cfg_batch
from vidgen.generators.stream_loop import check_first_frames, stream_chunks



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


def attend_rotated(attn, q, k, v, frames: int, hw: tuple[int, int], rope: RopeTable,
                   context: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """Queries ``q`` (B, nh, Lq, D), the last ``Lq`` tokens of ``frames`` token frames whose pre-RoPE keys / values
    are ``k``, ``v`` (B, nh, L, D): rotated at positions ``0 .. frames - 1``, dense attention. ``context``: keys
    (already rotated) and values of the tokens before ``k``, e.g. :func:`rotated_context`'s."""
    angles = rope(frames, hw, q.shape[-1], attn.config.rope_theta, q.device)
    q = apply_rope(q, angles, start=angles.shape[0] - q.shape[2])
    if context is None:
        return F.scaled_dot_product_attention(q, apply_rope(k, angles), v)
    k = apply_rope(k, angles, start=context[0].shape[2])  # rotation is per position: the same as rotating the whole
    return F.scaled_dot_product_attention(q, torch.cat([context[0], k], 2), torch.cat([context[1], v], 2))


def rotated_context(attn, ks: list, vs: list, hw: tuple[int, int], rope: RopeTable):
    """The keys ``ks`` (pre-RoPE, in order) rotated at positions ``0 ..`` and the values ``vs``, each joined: the
    context part of :func:`attend_rotated`, the same for every call of one chunk."""
    if not ks:
        return None
    k = torch.cat(ks, dim=2)
    angles = rope(k.shape[2] // (hw[0] * hw[1]), hw, k.shape[-1], attn.config.rope_theta, k.device)
    return apply_rope(k, angles), torch.cat(vs, dim=2)


def qkv_heads(attn, y: torch.Tensor):
    """Heads-first q, k, v of ``y`` (B, L, d) after qk-norm, before RoPE."""
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=attn.config.num_heads) for t in attn.qkv(y).chunk(3, dim=-1))
    return attn.q_norm(q), attn.k_norm(k), v


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



class RollingKVCache:
    """Per block, the pre-RoPE keys and values of the chunks later chunks may attend (the sink and the last
    ``window_chunks``); older ones are dropped, so memory is flat at any length."""

    def __init__(self, num_layers: int, chunking: tuple[int, int, int]):
        self.chunking = chunking  # (chunk_frames, window_chunks, sink_chunks)
        self.layers: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in range(num_layers)]

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
    """Chunk-at-a-time calls of a :class:`~vidgen.generators.causal.CausalFlowVideoTransformer` (``model``): :meth:`predict` the velocity of chunk ``i``
    (noisy) against the cache, :meth:`commit` its clean latents into the cache. ``cond``: the conditioning of every
    row (rows of guidance included); it stays fixed until :meth:`recache`. :meth:`commit_later` defers a chunk's
    cache pass into the next chunk's first call (the same keys and values; one call of both chunks' tokens in place of
    two), the last chunk of a stream then needing none."""

    def __init__(self, model: torch.nn.Module, cond: Optional[Conditioning], hw: tuple[int, int],
                 drop: Optional[torch.Tensor] = None, window_chunks: Optional[int] = None):
        self.model, self.cond, self.drop, self.hw = model, cond, drop, hw
        self.chunking = stream_chunking(model, window_chunks)
        self.cache, self.next = RollingKVCache(len(model.backbone.blocks), self.chunking), 0
        self.clean: dict[int, torch.Tensor] = {}  # committed latents the cache holds (for recache)
        self.pending: Optional[torch.Tensor] = None  # chunk ``next``'s clean latents, its cache pass deferred
        self._contexts: dict[tuple, dict] = {}  # (chunk, attended, cache) -> per layer, its rotated keys and values
        self._embedded = None  # the conditioning embedded once (adaLN vector, each block's text keys and values)

    def _embedding(self, batch: int):
        """``embed_condition`` of the stream's conditioning with each block's text keys and values, made once per
        prompt when no gradient is recorded (a training step's gradient reaches the text layers through each call)."""
        if self._embedded is not None and not torch.is_grad_enabled():
            return self._embedded
        m = self.model
        prefix, context, vec = m.embed_condition(self.cond, batch, self.drop)
        if context is not None:
            context = [blk.cross.context_kv(context) for blk in m.backbone.blocks]
        if torch.is_grad_enabled():
            return prefix, context, vec
        self._embedded = prefix, context, vec
        return self._embedded

    def _run(self, latents: torch.Tensor, timestep: torch.Tensor, i: int, write: bool, cached_only: bool = False,
             before: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One call for chunk ``i``: its velocity, its keys and values written to the cache when ``write``.
        ``before``: chunk ``i - 1``'s clean latents, cached in the same call as its own pass would cache them."""
        m = self.model
        _, window, sink = self.chunking
        parts = [(i, latents, write)] if before is None else [(i - 1, before, True), (i, latents, False)]
        if before is not None:
            timestep = torch.stack([torch.zeros_like(timestep), timestep], dim=1)
        x, vec, context, grid = m._tokens(torch.cat([p[1] for p in parts], dim=2),
                                          timestep if timestep.dim() == 2 else timestep[:, None], self.cond, self.drop,
                                          self._embedding(latents.shape[0]))
        hw = grid[1] * grid[2]
        runs = []  # (chunk, its first token, its tokens, write, its rotated context per layer)
        first = 0
        for j, chunk, writes in parts:
            attended = attended_chunks(j, sink, window)[:-1]
            if cached_only:  # a re-cache: the chunks still held stand in for those dropped
                attended = [a for a in attended if a in self.cache.layers[0]]
            key = (j, tuple(attended), self.cache)  # the same at each of a chunk's steps: rotated once
            runs.append((j, first, chunk.shape[2] * hw, writes, self._contexts.setdefault(key, {}), attended))
            first += chunk.shape[2] * hw

        def attend(layer, attn, y):
            q, k, v = qkv_heads(attn, y)
            cached, outs = self.cache.layers[layer], []
            for j, lo, n, writes, contexts, attended in runs:  # in order: chunk i attends i - 1 as just written
                if layer not in contexts:
                    contexts[layer] = rotated_context(attn, [cached[a][0] for a in attended],
                                                      [cached[a][1] for a in attended], grid[1:], m.rope)
                qj, kj, vj = q[:, :, lo:lo + n], k[:, :, lo:lo + n], v[:, :, lo:lo + n]
                if writes:  # copies: a slice would keep the whole call's projections alive in the cache
                    cached[j] = (kj.clone(), vj.clone())
                ctx = contexts[layer]
                frames = (n + (ctx[0].shape[2] if ctx else 0)) // hw
                outs.append(attend_rotated(attn, qj, kj, vj, frames, grid[1:], m.rope, ctx))
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
            return attn.proj(rearrange(out, "b h n d -> b n (h d)"))

        out = m.patch.unpatchify(m.head(m.backbone(x, grid, vec, context=context, attend=attend)),
                                 (sum(p[1].shape[2] for p in parts), *latents.shape[3:]))
        return out[:, :, -latents.shape[2]:]

    def predict(self, latents: torch.Tensor, timestep) -> torch.Tensor:
        """The velocity for the next chunk at ``latents`` (B, C, c, h, w), ``timestep`` (B,) or a number; a deferred
        commit (:meth:`commit_later`) rides on this call."""
        t = torch.as_tensor(timestep, device=latents.device, dtype=torch.float32).reshape(-1).expand(latents.shape[0])
        if self.pending is not None and self.pending.shape[2] != self.model.config.chunk_frames:
            self.flush()  # a shorter chunk (a video's last) is cached on its own: its frames' levels are per chunk
        if self.pending is None:
            return self._run(latents, t, self.next, write=False)
        velocity = self._run(latents, t, self.next + 1, write=False, before=self.pending)
        self._advance(self.pending)
        return velocity

    def _cache_clean(self, clean: torch.Tensor, i: int, cached_only: bool = False) -> None:
        """Write chunk ``i``'s keys and values from its clean latents: a pass at timestep 0."""
        self._run(clean, clean.new_zeros(clean.shape[0], dtype=torch.float32), i, write=True, cached_only=cached_only)

    def _advance(self, clean: torch.Tensor) -> None:
        """Chunk ``next`` is cached: keep its latents (for a re-cache), drop what later chunks never attend."""
        self.pending = None
        self.clean[self.next] = clean
        self.next += 1
        self.cache.keep(self.next)
        self.clean = {j: x for j, x in self.clean.items() if j in self.cache.layers[0]}
        self._contexts = {key: ctx for key, ctx in self._contexts.items() if key[0] >= self.next}

    def commit(self, clean: torch.Tensor) -> None:
        """Cache chunk ``self.next`` from its clean latents (a pass at timestep 0), then move to the next chunk."""
        self.flush()
        self._cache_clean(clean, self.next)
        self._advance(clean)

    def commit_later(self, clean: torch.Tensor) -> None:
        """:meth:`commit`, its pass run by the next :meth:`predict` (or :meth:`flush`, :meth:`recache`)."""
        self.flush()
        self.pending = clean

    def flush(self) -> None:
        """Run a deferred commit now."""
        if self.pending is not None:
            self._cache_clean(self.pending, self.next)
            self._advance(self.pending)

    def reset(self, cond: Optional[Conditioning], drop: Optional[torch.Tensor] = None) -> None:
        """Switch the prompt with an empty cache (a deferred commit dropped): the next chunk is chunk 0, the sink of
        a new video."""
        self.cond, self.drop, self.next, self.clean, self.pending = cond, drop, 0, {}, None
        self.cache, self._contexts = RollingKVCache(len(self.model.backbone.blocks), self.chunking), {}
        self._embedded = None

    def recache(self, cond: Optional[Conditioning], drop: Optional[torch.Tensor] = None) -> None:
        """Switch the prompt: re-encode the cached chunks under ``cond`` (and its null-condition flags ``drop``),
        in order (LongLive's KV re-cache)."""
        self.flush()
        self.cond, self.drop, kept, upto = cond, drop, sorted(self.clean.items()), self.next
        self._embedded = None
        self.cache = RollingKVCache(len(self.model.backbone.blocks), self.chunking)
        for j, clean in kept:
            self._cache_clean(clean, j, cached_only=True)
        self.next, self._contexts = upto, {}  # the old cache's memos and the re-cache's own


@torch.no_grad()
def stream_latents(model: torch.nn.Module, cond: Optional[Conditioning], *, frames: int, hw: tuple,
                   batch: int = 1, num_inference_steps: int = 4, guidance_scale: float = 1.0,
                   negative: Optional[Conditioning] = None, generator: Optional[torch.Generator] = None,
                   scheduler=None, prompts: Optional[dict] = None, callback: Optional[Callable] = None,
                   guidance: Optional[Guidance] = None, window_chunks: Optional[int] = None,
                   prompt_switch: str = "recache", first_frames: Optional[torch.Tensor] = None,
                   progress: Optional[Callable] = None):
    """Yield normalized latents (B, C, c, h, w) chunk by chunk for ``frames`` latent frames of ``hw`` latents: each
    chunk is denoised in ``num_inference_steps`` Euler steps of the flow (classifier-free guidance against
    ``negative``, or the learnt null condition, when ``guidance_scale`` > 1), then cached clean; the chunk loop is
    the one :func:`~vidgen.generators.stream_loop.stream_chunks` over a :class:`ChunkStream`. ``prompts``:
    ``{chunk: (cond, negative)}`` switches the conditioning before that chunk, re-caching
    (:meth:`ChunkStream.recache`). ``callback(step, t, {"latents": x})`` after every step (``step`` counted over
    the whole stream) may return ``{"latents": x}`` to replace the chunk's latents, ``{"guidance_scale": s}`` for
    the steps that follow (``guidance``: the :class:`~vidgen.generators.sampling.Guidance` read at every step), or
    ``{"interrupt": True}`` to end the stream after this chunk. A distilled student denoises each chunk at the levels
    it was trained at (its step counts only, guidance 1). ``window_chunks``: attend fewer past chunks than the model
    keeps (:func:`stream_chunking`). ``prompt_switch="reset"`` starts a fresh cache at a switch instead of
    re-caching (the next chunk becomes the sink, as at a new video: the plain reset a re-cache is measured against).
    ``first_frames``: the video's first latent frames (B, C, k, h, w), whole chunks, committed clean and yielded as
    given before the stream continues. ``progress`` wraps the chunks (a progress bar). Memory is flat in
    ``frames``."""
    scheduler = scheduler or model.default_scheduler()
    spec, c, dev = model.config.distillation, model.config.chunk_frames, model.device
    grid = model.patch.grid((c, *hw))
    model.backbone.check_grid(grid)
    check_first_frames(first_frames, frames, c)
    guidance = guidance or Guidance(guidance_scale)
    start = guidance.scale  # guidance runs (a doubled batch) when the stream starts with a scale other than 1
    both, drop, doubled = cfg_batch(cond, negative, batch, dev, start)
    switches = {}
    for i, pair in (prompts or {}).items():
        both_i, drop_i, doubled_i = cfg_batch(*pair, batch, dev, start)
        switches[i] = ((both_i, drop_i), doubled_i)

    def noise(n):
        return torch.randn(batch, model.config.in_channels, n, *hw, generator=generator).to(dev)

    def timesteps(first):
        return flow_timesteps(scheduler, num_inference_steps, spec, dev, start if first else None)

    given = None if first_frames is None else first_frames.to(dev)
    yield from stream_chunks(ChunkStream(model, both, tuple(hw), drop, window_chunks), frames=frames,
                             chunk_frames=c, noise=noise, timesteps=timesteps,
                             step=scheduler_step(scheduler, generator), guidance=guidance, doubled=doubled,
                             prompts=switches, prompt_switch=prompt_switch, callback=callback, first_frames=given,
                             progress=progress)

"""A diffusers video transformer made block-causal, chunk by chunk through a rolling KV cache (CausVid /
Self-Forcing's layout on Wan), without touching its weights::

    causal = block_causal(pipe.transformer, chunk_frames=3, window_chunks=6, sink_chunks=1)
    v = causal.predict(noisy_chunk, timestep, text)   # (B, C, chunk_frames, h, w) velocity for chunk causal.next
    causal.commit(clean_chunk, text)                  # cache its keys / values (a pass at timestep 0), move on
    causal.remove()                                   # the model's own processors again

    for chunk in causal.stream(text, frames=21, hw=(60, 104)):   # the one chunk loop (vidgen.generators.stream_loop)
        ...                                           # clean latents, chunk by chunk

The self-attention of every block runs through the family's window processor (:class:`~vidgen.families.
WindowProcessor`: q, k, v exactly as the model's own attention makes them, RoPE included) with a state that attends
the cached keys and values of the sink and the last ``window_chunks`` chunks, then the chunk's own. RoPE positions
are absolute: a chunk's frames are rotated at their frame indices in the video (the model's rotary table is read for
the whole prefix and the chunk's rows kept). :meth:`BlockCausal.reference` is the uncached check: the whole sequence
at once under the block-causal mask (per-token timesteps: clean context, noisy chunk), which a streamed chunk equals
(``tests/unit/test_diffusers_causal.py``). The handle is a :class:`~vidgen.generators.stream_loop.ChunkModel`: with
its text bound (:meth:`BlockCausal.bind`) it predicts, commits (now or deferred), re-caches and resets as vidgen's
own :class:`~vidgen.generators.causal_stream.ChunkStream` does, so :meth:`BlockCausal.stream` runs the same chunk
loop (guidance, prompt switches, given first frames, step callback, interrupt, progress).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from vidgen.adapters.transformer import DiffusersVideoTransformer
from vidgen.adapters.window import _blocks
from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.families import PIPELINE_FAMILIES, transformer_family
from vidgen.families.base import patch_size_of
from vidgen.generators.causal_stream import RollingKVCache, attended_chunks, check_chunking
from vidgen.generators.flow_sampler import flow_timesteps, scheduler_step
from vidgen.generators.sampling import Guidance
from vidgen.generators.stream_loop import check_first_frames, stream_chunks


class _CausalState:
    """What the swapped processors read: the mode, the layer being run, the cache, the token grid."""

    def __init__(self, owner: "BlockCausal"):
        self.owner, self.layer, self.mask, self.write = owner, 0, None, None

    def attend(self, q, k, v, prefix: int = 0) -> torch.Tensor:
        """(B, heads, N, D) -> (B, heads, N, D): the block-causal mask over a whole sequence, or the chunk against
        the cache (and the chunk's keys / values written to it when committing)."""
        if prefix:
            raise UnsupportedError("block_causal: a family whose self-attention holds text tokens is not supported")
        layer, self.layer = self.layer, self.layer + 1
        if self.mask is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        cached = self.owner.cache.layers[layer]
        ks = [cached[j][0] for j in self.owner.context] + [k]
        vs = [cached[j][1] for j in self.owner.context] + [v]
        if self.write is not None:
            cached[self.write] = (k, v)
        return F.scaled_dot_product_attention(q, torch.cat(ks, dim=2), torch.cat(vs, dim=2))


class BlockCausal:
    """The handle :func:`block_causal` returns (module docstring)."""

    def __init__(self, model, family, chunk_frames: int, window_chunks: int, sink_chunks: int):
        self.model, self.family = model, family
        self.chunk_frames, self.window, self.sink = chunk_frames, window_chunks, sink_chunks
        self.state, self.next, self.context, self.offset, self.text = _CausalState(self), 0, [], 0, None
        blocks = _blocks(model)
        self._originals = [b.attn1.processor for b in blocks]
        for b in blocks:
            b.attn1.set_processor(family.window_processor(self.state))
        self.reset()
        self._hooks = [model.register_forward_pre_hook(self._start, with_kwargs=True),
                       model.rope.register_forward_hook(self._shift_rope)]

    def reset(self, text: Optional[torch.Tensor] = None) -> None:
        """Start a new video: an empty cache at chunk 0 (a deferred commit dropped); ``text``: bind it too."""
        self.cache = RollingKVCache(len(_blocks(self.model)), (self.chunk_frames, self.window, self.sink))
        self.next, self.clean, self.pending = 0, {}, None
        if text is not None:
            self.bind(text)

    def bind(self, text: torch.Tensor) -> "BlockCausal":
        """The text embeddings (B, L, text_dim) the calls that are given none use: the rows of every call (for
        classifier-free guidance, ``[negative; positive]`` rows)."""
        self.text = text
        return self

    def _text(self, text):
        if text is None and self.text is None:
            raise InvalidInputError("text: pass the text embeddings or bind() them first")
        return self.text if text is None else text

    def _start(self, module, args, kwargs):
        self.state.layer = 0

    def _shift_rope(self, rope, args, output):
        """The chunk's rows of the rotary table read for frames ``0 .. offset + n - 1``: absolute positions."""
        if not self.offset:
            return output
        x = args[0]  # the rotary module reads only the shape of its input
        whole = rope.forward(torch.empty(x.shape[0], x.shape[1], x.shape[2] + self.offset, *x.shape[3:], device="meta"))
        rows = output[0].shape[1]
        return tuple(t[:, -rows:] for t in whole)

    def _call(self, latents, timestep, text, **kwargs):
        b = latents.shape[0]
        timestep = torch.as_tensor(timestep, device=latents.device).reshape(-1).expand(b) if not \
            (torch.is_tensor(timestep) and timestep.dim() == 2) else timestep
        return self.model(hidden_states=latents, timestep=timestep, encoder_hidden_states=text, return_dict=False,
                          **kwargs)[0]

    @property
    def latent_chunk_frames(self) -> int:
        """The latent frames of a chunk (``chunk_frames`` token frames of the model's temporal patch)."""
        return self.chunk_frames * patch_size_of(self.model)[0]

    def _chunk_call(self, latents, timestep, text, write: bool, cached_only: bool = False) -> torch.Tensor:
        i, c = self.next, self.latent_chunk_frames
        if latents.shape[2] > c or latents.shape[2] % patch_size_of(self.model)[0] or not latents.shape[2]:
            raise InvalidInputError(f"latents: a chunk holds {c} latent frames, got {latents.shape[2]}")
        self.context = attended_chunks(i, self.sink, self.window)[:-1]
        if cached_only:  # a re-cache: the chunks still held stand in for those dropped
            self.context = [j for j in self.context if j in self.cache.layers[0]]
        self.offset, self.state.write = i * c, (i if write else None)
        try:
            return self._call(latents.to(self.model.dtype), timestep, self._text(text))
        finally:
            self.offset, self.state.write = 0, None

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, timestep, text: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The model's output for chunk :attr:`next` at ``latents`` (B, C, chunk_frames, h, w; fewer frames for a
        video's last chunk) and ``timestep``, attending the cached chunks (a deferred commit is run first).
        ``text``: the bound text when None."""
        self.flush()
        return self._chunk_call(latents, timestep, text, write=False)

    @torch.no_grad()
    def commit(self, clean: torch.Tensor, text: Optional[torch.Tensor] = None) -> None:
        """Cache chunk :attr:`next` from its clean latents (a pass at timestep 0), drop what later chunks never
        attend, and move to the next chunk."""
        self.flush()
        self._chunk_call(clean, 0, text, write=True)
        self.clean[self.next] = clean
        self.next += 1
        self.cache.keep(self.next)
        self.clean = {j: x for j, x in self.clean.items() if j in self.cache.layers[0]}

    def commit_later(self, clean: torch.Tensor) -> None:
        """:meth:`commit` under the bound text, run by the next :meth:`predict` (or :meth:`flush`,
        :meth:`recache`); the last chunk of a stream then needs none."""
        self.flush()
        self.pending = clean

    def flush(self) -> None:
        """Run a deferred commit now."""
        if self.pending is not None:
            clean, self.pending = self.pending, None
            self.commit(clean)

    @torch.no_grad()
    def recache(self, text: torch.Tensor) -> None:
        """Switch the prompt: bind ``text`` and re-encode the held chunks under it, in order (LongLive's KV
        re-cache)."""
        self.flush()
        kept, upto = sorted(self.clean.items()), self.next
        self.reset(text)
        for j, clean in kept:
            self.next = j
            self._chunk_call(clean, 0, None, write=True, cached_only=True)
        self.clean, self.next = dict(kept), upto

    def stream(self, text: torch.Tensor, *, frames: int, hw: tuple, negative: Optional[torch.Tensor] = None,
               num_inference_steps: int = 4, guidance_scale: float = 1.0, guidance: Optional[Guidance] = None,
               scheduler=None, student: Optional[dict] = None, generator: Optional[torch.Generator] = None,
               prompts: Optional[dict] = None, prompt_switch: str = "recache", callback: Optional[Callable] = None,
               first_frames: Optional[torch.Tensor] = None, progress: Optional[Callable] = None):
        """Yield clean latents (B, C, n, h, w) chunk by chunk for ``frames`` latent frames of ``hw`` latents from a
        fresh cache, through the one chunk loop (:func:`~vidgen.generators.stream_loop.stream_chunks`): each chunk
        denoised in ``num_inference_steps`` steps of ``scheduler`` (default: diffusers' flow-matching Euler; at a
        few-step student's trained levels with ``student``, its ``distillation`` entry), then committed clean.
        ``text`` (B, L, text_dim): the prompt's embeddings; with ``guidance_scale`` > 1 ``negative`` (the negative
        prompt's) is guided against in one batched pass of ``[negative; text]`` rows. ``prompts``: ``{chunk: (text,
        negative)}`` switches before that chunk (:meth:`recache`, or :meth:`reset` with ``prompt_switch="reset"``).
        ``first_frames``: given clean latents of the first whole chunks, kept as they are (an image's first chunk:
        ``vidgen.pipelines.first_chunk_latents``, the stream then starting from that frame). ``callback``,
        ``progress``: as :func:`~vidgen.generators.causal_stream.stream_latents` reads them."""
        from diffusers import FlowMatchEulerDiscreteScheduler
        scheduler = scheduler or FlowMatchEulerDiscreteScheduler()
        guidance = guidance or Guidance(guidance_scale)
        start, dev, batch = guidance.scale, text.device, text.shape[0]

        def rows(pos, neg):
            if start != 1 and neg is None:
                raise InvalidInputError(f"negative: guidance_scale={start} guides against the negative prompt's "
                                        "text embeddings; pass negative (or guidance_scale=1)")
            return ((torch.cat([neg, pos]) if start != 1 else pos,), start != 1)

        check_first_frames(first_frames, frames, self.latent_chunk_frames)
        (text_rows,), doubled = rows(text, negative)
        switches = {i: rows(*pair) for i, pair in (prompts or {}).items()}
        self.reset(text_rows)

        def noise(n):
            gen_dev = generator.device if generator is not None else dev
            return torch.randn(batch, self.model.config.in_channels, n, *hw, generator=generator,
                               device=gen_dev).to(dev)

        def timesteps(first):
            return flow_timesteps(scheduler, num_inference_steps, student, dev, start if first else None)

        return _without_grad(stream_chunks(
            self, frames=frames, chunk_frames=self.latent_chunk_frames, noise=noise, timesteps=timesteps,
            step=scheduler_step(scheduler, generator), guidance=guidance, doubled=doubled, prompts=switches,
            prompt_switch=prompt_switch, callback=callback,
            first_frames=None if first_frames is None else first_frames.to(dev), progress=progress))

    @torch.no_grad()
    def reference(self, latents: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The uncached block-causal forward: ``latents`` (B, C, t, h, w), ``timestep`` (B, chunks) one per chunk
        (given to every token of it), each chunk attending its attended chunks of this same sequence."""
        t, h, w = (int(n) // p for n, p in zip(latents.shape[2:], patch_size_of(self.model)))
        chunk = torch.arange(t, device=latents.device) // self.chunk_frames
        n = int(chunk.max()) + 1
        allowed = torch.zeros(n, n, dtype=torch.bool, device=latents.device)
        for i in range(n):
            allowed[i, attended_chunks(i, self.sink, self.window)] = True
        token_chunk = chunk.repeat_interleave(h * w)
        self.state.mask = allowed[token_chunk][:, token_chunk]
        try:
            return self._call(latents, timestep[:, token_chunk].float(), text)
        finally:
            self.state.mask = None

    def remove(self) -> None:
        for block, processor in zip(_blocks(self.model), self._originals):
            block.attn1.set_processor(processor)
        for hook in self._hooks:
            hook.remove()
        self.reset()


@torch.no_grad()
def _without_grad(chunks):
    yield from chunks


def block_causal(transformer, chunk_frames: int, window_chunks: int = 0, sink_chunks: int = 0) -> BlockCausal:
    """Make a diffusers video transformer (or a :class:`DiffusersVideoTransformer`) block-causal over chunks of
    ``chunk_frames`` token frames, attending the first ``sink_chunks`` chunks and the last ``window_chunks``
    (``0``: every earlier chunk); see the module docstring. Returns the :class:`BlockCausal` handle."""
    model = transformer.model if isinstance(transformer, DiffusersVideoTransformer) else transformer
    family = transformer_family(model)
    if family is None or family.window_processor is None or not hasattr(model, "rope"):
        supported = [f.transformer for f in PIPELINE_FAMILIES if f.window_processor is not None]
        raise UnsupportedError(f"block_causal: {type(model).__name__} has no self-attention processor and rotary "
                               f"module vidgen can run block-causally (supported: {', '.join(supported)} with a "
                               "rope module)")
    latent, given = family.latent_channels(model), int(model.config.in_channels)
    if given != latent:
        raise UnsupportedError(f"block_causal: {type(model).__name__} reads {given} input channels, its {latent} "
                               f"latent channels and {given - latent} of condition (an image-to-video transformer: "
                               "the image's latents and frame mask), and a block-causal stream feeds it latents only; "
                               "stream the family's text-to-video transformer from the image instead (first_frames= "
                               "of vidgen.pipelines.first_chunk_latents)")
    check_chunking(chunk_frames, window_chunks, sink_chunks, max_frames=10**9)
    if any(type(b.attn1.processor).__module__.startswith("vidgen") for b in _blocks(model)):
        raise InvalidInputError("transformer: its self-attention is already swapped by vidgen (window attention or "
                                "block_causal); remove() that first")
    return BlockCausal(model, family, chunk_frames, window_chunks, sink_chunks)


__all__ = ["BlockCausal", "block_causal"]

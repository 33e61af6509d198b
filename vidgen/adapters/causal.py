"""A diffusers video transformer made block-causal, chunk by chunk through a rolling KV cache (CausVid /
Self-Forcing's layout on Wan), without touching its weights::

    causal = block_causal(pipe.transformer, chunk_frames=3, window_chunks=6, sink_chunks=1)
    v = causal.predict(noisy_chunk, timestep, text)   # (B, C, chunk_frames, h, w) velocity for chunk causal.next
    causal.commit(clean_chunk, text)                  # cache its keys / values (a pass at timestep 0), move on
    causal.remove()                                   # the model's own processors again

The self-attention of every block runs through the family's window processor (:class:`~vidgen.families.
WindowProcessor`: q, k, v exactly as the model's own attention makes them, RoPE included) with a state that attends
the cached keys and values of the sink and the last ``window_chunks`` chunks, then the chunk's own. RoPE positions
are absolute: a chunk's frames are rotated at their frame indices in the video (the model's rotary table is read for
the whole prefix and the chunk's rows kept). :meth:`BlockCausal.reference` is the uncached check: the whole sequence
at once under the block-causal mask (per-token timesteps: clean context, noisy chunk), which a streamed chunk equals
(``tests/unit/test_diffusers_causal.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vidgen.adapters.transformer import DiffusersVideoTransformer
from vidgen.adapters.window import _blocks
from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.families import PIPELINE_FAMILIES, transformer_family
from vidgen.families.base import patch_size_of
from vidgen.generators.causal_stream import RollingKVCache, attended_chunks, check_chunking


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
        self.state, self.next, self.context, self.offset = _CausalState(self), 0, [], 0
        blocks = _blocks(model)
        self._originals = [b.attn1.processor for b in blocks]
        for b in blocks:
            b.attn1.set_processor(family.window_processor(self.state))
        self.reset()
        self._hooks = [model.register_forward_pre_hook(self._start, with_kwargs=True),
                       model.rope.register_forward_hook(self._shift_rope)]

    def reset(self) -> None:
        """Start a new video: an empty cache at chunk 0."""
        self.cache = RollingKVCache(len(_blocks(self.model)), (self.chunk_frames, self.window, self.sink))
        self.next = 0

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

    def _chunk_call(self, latents, timestep, text, write: bool) -> torch.Tensor:
        i, pt = self.next, patch_size_of(self.model)[0]
        if latents.shape[2] != self.chunk_frames * pt:
            raise InvalidInputError(f"latents: a chunk holds {self.chunk_frames * pt} latent frames, got "
                                    f"{latents.shape[2]}")
        self.context = attended_chunks(i, self.sink, self.window)[:-1]
        self.offset, self.state.write = i * self.chunk_frames * pt, (i if write else None)
        try:
            return self._call(latents, timestep, text)
        finally:
            self.offset, self.state.write = 0, None

    @torch.no_grad()
    def predict(self, latents: torch.Tensor, timestep, text: torch.Tensor) -> torch.Tensor:
        """The model's output for chunk :attr:`next` at ``latents`` (B, C, chunk_frames, h, w) and ``timestep``,
        attending the cached chunks."""
        return self._chunk_call(latents, timestep, text, write=False)

    @torch.no_grad()
    def commit(self, clean: torch.Tensor, text: torch.Tensor) -> None:
        """Cache chunk :attr:`next` from its clean latents (a pass at timestep 0), drop what later chunks never
        attend, and move to the next chunk."""
        self._chunk_call(clean, 0, text, write=True)
        self.next += 1
        self.cache.keep(self.next)

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
    check_chunking(chunk_frames, window_chunks, sink_chunks, max_frames=10**9)
    if any(type(b.attn1.processor).__module__.startswith("vidgen") for b in _blocks(model)):
        raise InvalidInputError("transformer: its self-attention is already swapped by vidgen (window attention or "
                                "block_causal); remove() that first")
    return BlockCausal(model, family, chunk_frames, window_chunks, sink_chunks)


__all__ = ["BlockCausal", "block_causal"]

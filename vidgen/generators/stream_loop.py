"""The one block-causal chunk loop: :func:`stream_chunks` drives any :class:`ChunkModel` (vidgen's
:class:`~vidgen.generators.causal_stream.ChunkStream`, a diffusers transformer made block-causal by
:mod:`vidgen.adapters.causal`) chunk after chunk: a prompt switch (re-cache or reset) before the chunk, the given
first frames committed as clean chunks, every other chunk denoised from noise by the one flow sampler
(:func:`~vidgen.generators.flow_sampler.denoise`, classifier-free guidance as one batched pass) and committed clean,
its cache pass deferred into the next chunk's first call. A step callback may replace latents, change the guidance
scale or end the stream after the current chunk; ``progress`` wraps the chunks in a bar."""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Protocol

import torch

from vidgen.errors import InvalidInputError
from vidgen.generators.flow_sampler import Guider, denoise
from vidgen.generators.sampling import Guidance


class ChunkModel(Protocol):
    """A block-causal model one chunk at a time against its cache (chunk :attr:`next` is the one predicted)."""

    next: int

    def predict(self, x: torch.Tensor, t) -> torch.Tensor:
        """The velocity of chunk :attr:`next` at ``x`` (rows of guidance included), timestep ``t``."""

    def commit(self, clean: torch.Tensor) -> None:
        """Cache chunk :attr:`next` from its clean latents, move to the next chunk."""

    def commit_later(self, clean: torch.Tensor) -> None:
        """:meth:`commit`, its pass run by the next call that needs it (the last chunk of a stream needs none)."""

    def recache(self, *cond) -> None:
        """Switch the conditioning: the held chunks re-cached under ``cond`` (the model's own arguments)."""

    def reset(self, *cond) -> None:
        """Switch the conditioning with an empty cache: the next chunk is chunk 0 (a new video's sink)."""


def check_first_frames(first_frames: Optional[torch.Tensor], frames: int, chunk_frames: int) -> int:
    """The number of whole chunks ``first_frames`` (B, C, k, h, w) holds; a named error unless ``k`` is a multiple
    of ``chunk_frames`` and no more than ``frames``."""
    if first_frames is None:
        return 0
    k = first_frames.shape[2] if torch.is_tensor(first_frames) and first_frames.dim() == 5 else None
    if k is None or k % chunk_frames or not 0 < k <= frames:
        got = tuple(first_frames.shape) if torch.is_tensor(first_frames) else type(first_frames).__name__
        raise InvalidInputError(f"first_frames: latents (B, C, k, h, w) with k a multiple of the chunk's "
                                f"{chunk_frames} latent frames and at most frames={frames}, got {got}; a given frame "
                                "inside a chunk is not supported yet")
    return k // chunk_frames


def stream_chunks(model: ChunkModel, *, frames: int, chunk_frames: int, noise: Callable[[int], torch.Tensor],
                  timesteps: Callable[[bool], torch.Tensor], step: Callable, guidance: Guidance, doubled: bool,
                  prompts: Optional[dict] = None, prompt_switch: str = "recache", callback: Optional[Callable] = None,
                  first_frames: Optional[torch.Tensor] = None, progress: Optional[Callable] = None) -> Iterator:
    """Yield clean latents (B, C, n, h, w) chunk by chunk for ``frames`` latent frames, chunks of ``chunk_frames``
    (a shorter last one). ``noise(n)``: a chunk's starting noise; ``timesteps(first)``: a chunk's timesteps
    (``first``: the stream's first denoised chunk); ``step``: the scheduler's step (:func:`~vidgen.generators.
    flow_sampler.scheduler_step`). ``doubled``: the model's rows are ``[uncond; cond]`` (one batched guided pass,
    the clean latents committed to both rows). ``prompts``: ``{chunk: (cond, doubled)}`` switches before that chunk,
    ``cond`` a tuple of the model's :meth:`~ChunkModel.recache` arguments (:meth:`~ChunkModel.reset` with
    ``prompt_switch="reset"``, past chunk 0). ``first_frames``: given clean latents of the first whole chunks,
    committed (and yielded) as they are; the stream continues after them. ``callback(step, t, {"latents": x})``
    after every step, ``step`` counted over the whole stream, as :func:`~vidgen.generators.flow_sampler.denoise`
    reads it; an interrupt ends the stream once the chunk is finished."""
    given, steps = check_first_frames(first_frames, frames, chunk_frames), 0
    chunks = range(-(-frames // chunk_frames))
    for i in progress(chunks) if progress else chunks:
        if prompts and i in prompts:
            cond, doubled = prompts[i]
            (model.reset if prompt_switch == "reset" and i else model.recache)(*cond)
        if i < given:
            x = first_frames[:, :, i * chunk_frames:(i + 1) * chunk_frames]
            stop = False
        else:
            x = noise(min(chunk_frames, frames - i * chunk_frames))
            ts = timesteps(i == given)
            x, stop = denoise(lambda x, t, which, k: model.predict(x, t), x, ts, step,
                              Guider("batched", guidance, doubled=doubled), callback=callback, first_step=steps,
                              finish_on_interrupt=True)
            steps += len(ts)
        model.commit_later(torch.cat([x, x]) if doubled else x.clone())  # rides on the next chunk's first call
        yield x
        if stop:
            return


__all__ = ["ChunkModel", "check_first_frames", "stream_chunks"]

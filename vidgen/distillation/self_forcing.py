"""Self-Forcing (Huang et al. 2025): a block-causal student is rolled out on its own outputs during training, chunk
by chunk through its KV cache, and the whole rolled-out video is moved toward a bidirectional flow teacher's
distribution by DMD2's loss (:func:`vidgen.distillation.losses.dmd2_losses`, ``sample=self_forcing_rollout``).

Each chunk is made as a few-step student makes a sample (:func:`~vidgen.distillation.losses.
student_sample_with_grad`: a step count from the student's ``steps`` and a random step at which the gradient is kept,
the earlier steps without it), against the cache of the chunks before it; the chunk's clean estimate is then cached
without gradient (a pass at timestep 0). So the student trains on the context it will see when it streams, which
closes teacher forcing's train / test gap, and the gradient of each chunk stops at its own last step.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from vidgen.distillation.losses import student_sample_with_grad
from vidgen.generators.causal import CausalFlowVideoTransformer, other_rows
from vidgen.generators.causal_stream import ChunkStream
from vidgen.rng import RowGenerator


class _StreamedChunk:
    """The student as :func:`student_sample_with_grad` calls it (``model(x, timestep, cond).sample``), for the chunk
    the stream is at: the conditioning is the stream's."""

    def __init__(self, stream: ChunkStream):
        self.stream = stream

    def __call__(self, x, timestep, cond=None):
        return SimpleNamespace(sample=self.stream.predict(x, timestep))


def self_forcing_rollout(student: CausalFlowVideoTransformer, noise: torch.Tensor, cond, spec: dict,
                         r: RowGenerator, *, chunks: int = 0, switch: float = 0.0) -> torch.Tensor:
    """The student's video (B, C, t, h, w) from ``noise`` of that shape, chunk by chunk on its own outputs; the
    gradient reaches each chunk's last kept step.

    ``chunks`` > the clip's chunk count n (Self-Forcing++, Cui et al. 2025): the stream runs ``chunks`` chunks, and a
    window of n consecutive ones, starting at a chunk drawn once per batch, is returned; the chunks before it are made
    without gradient from fresh noise, so the teacher scores a clip-length stretch of a stream longer than any clip,
    with a sink from long ago and a window of the student's own drift. ``switch``: the share of rows whose chunks
    before the window follow another row's prompt; at the window the stream re-caches under the row's own prompt (a
    prompt switch as the pipeline makes it), so the window shows what follows a switch."""
    c = student.config.chunk_frames
    n = -(-noise.shape[2] // c)
    stream = ChunkStream(student, cond, tuple(noise.shape[-2:]))
    if chunks > n:
        _roll_before_window(stream, int(r.shared(1).item() * (chunks - n + 1)), noise, cond, spec, r, switch)
    out = []
    for i in range(n):
        x0 = student_sample_with_grad(_StreamedChunk(stream), noise[:, :, i * c:(i + 1) * c], cond, spec, r)
        with torch.no_grad():
            stream.commit(x0.detach())
        out.append(x0)
    return torch.cat(out, dim=2)


@torch.no_grad()
def _roll_before_window(stream: ChunkStream, start: int, noise: torch.Tensor, cond, spec: dict, r: RowGenerator,
                        switch: float) -> None:
    """Commit ``start`` chunks of the student's own from fresh noise, the ``switch`` share of rows under another
    row's prompt, then re-cache under ``cond``."""
    if start == 0:
        return
    b, c = noise.shape[0], stream.model.config.chunk_frames
    swap = r.rand(b) < switch
    donor = other_rows(r.rand(b))
    if cond is not None and b > 1 and bool(swap.any()):
        stream.reset(cond.index(torch.where(swap, donor, torch.arange(b)).to(noise.device)))
    before = r.randn(b, noise.shape[1], start * c, *noise.shape[-2:]).to(noise)
    for i in range(start):
        stream.commit(student_sample_with_grad(_StreamedChunk(stream), before[:, :, i * c:(i + 1) * c], stream.cond,
                                               spec, r))
    stream.recache(cond)

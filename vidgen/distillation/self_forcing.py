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
from vidgen.generators.causal import CausalFlowVideoTransformer
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
                         r: RowGenerator) -> torch.Tensor:
    """The student's video (B, C, t, h, w) from ``noise`` of that shape, chunk by chunk on its own outputs; the
    gradient reaches each chunk's last kept step."""
    c = student.config.chunk_frames
    stream = ChunkStream(student, cond, tuple(noise.shape[-2:]))
    chunks = []
    for i in range(-(-noise.shape[2] // c)):
        x0 = student_sample_with_grad(_StreamedChunk(stream), noise[:, :, i * c:(i + 1) * c], cond, spec, r)
        with torch.no_grad():
            stream.commit(x0.detach())
        chunks.append(x0)
    return torch.cat(chunks, dim=2)

"""Self-Forcing: the block-causal student's rollout on its own chunks is causal (a later chunk's noise leaves the
earlier chunks as they were) and its DMD2 loss against a bidirectional teacher splits over processes as one batch,
with gradients reaching the student and the critic, never the teacher."""
from __future__ import annotations

import pytest
import torch

from vidgen.generators import Conditioning, FlowVideoTransformer
from vidgen.generators.causal import CausalFlowVideoTransformer
from vidgen.generators.distillation import distillation_spec, dmd2_losses
from vidgen.generators.self_forcing import self_forcing_rollout
from vidgen.rng import RowGenerator
from vidgen.testing import perturb_weights

from loss_split import gradients_reach, halves_make_the_whole

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = distillation_spec("dmd2", [1, 2], 3.0)
SHAPE = (4, 5, 4, 4)  # C, t, h, w


def _causal() -> CausalFlowVideoTransformer:
    torch.manual_seed(0)
    model = CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, num_classes=5, chunk_frames=1,
                                                  window_chunks=2, sink_chunks=1, max_grid=(8, 4, 4))
    return perturb_weights(model, seed=2, scale=0.05).eval()


def _flow(seed: int) -> FlowVideoTransformer:
    torch.manual_seed(0)
    model = FlowVideoTransformer.from_preset("tiny", in_channels=4, num_classes=5, max_grid=(8, 4, 4))
    return perturb_weights(model, seed=seed, scale=0.05).eval()


def _cond(b: int) -> Conditioning:
    return Conditioning(class_labels=torch.arange(b) % 5)


def test_the_rollout_is_causal_in_its_chunks():
    student = _causal()
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    later = noise.clone()
    later[:, :, -1] = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = (self_forcing_rollout(student, n, _cond(2), SPEC, RowGenerator(torch.Generator().manual_seed(3)))
                for n in (noise, later))
    assert a.shape == noise.shape and torch.equal(a[:, :, :-1], b[:, :, :-1])
    assert (a[:, :, -1] - b[:, :, -1]).abs().max() > 1e-3


def test_the_self_forcing_loss_over_two_processes_equals_one_batch():
    student, teacher = _causal(), _flow(3).requires_grad_(False)
    critic = _flow(4).requires_grad_(True)

    def loss(rows: slice, rank: int, world: int):
        r = RowGenerator(torch.Generator().manual_seed(5), rank, world)
        noise = r.randn(len(range(4)[rows]), *SHAPE)
        return dmd2_losses(student, critic, teacher, noise, _cond(4).index(rows), SPEC, r,
                           sample=self_forcing_rollout)

    halves_make_the_whole(loss).backward()
    gradients_reach(trained=[student, critic], frozen=[teacher])

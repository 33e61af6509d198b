"""Sequence parallelism (Ulysses) changes nothing but memory: 2 gloo processes splitting each clip's tokens give the
single-process loss, gradients, updated weights and samples (vidgen.parallel; helpers in tests/helpers/sequence_parallel.py).

The fast test runs one training case and one sampling case in one pair of processes; the opt-in slow set covers the
three generators and the full, window, spatial-temporal, frame-causal and token-causal patterns."""
from __future__ import annotations

import pytest
import torch

from helpers import differences
from helpers.sequence_parallel import ATOL, pipeline_case, run_group, sample_case, tiny_generator, train_step_case
from vidgen.errors import ConfigError, UnsupportedError
from vidgen.parallel import SequenceParallel, check_sequence_parallel, new_sequence_parallel

# 5 text prefix tokens + 3x4x5 video tokens = 65: not a multiple of 2, so the padding is exercised
GRID = (3, 4, 5)
WINDOW = {"layout": "window", "window": (3, 3, 3)}
LAYOUTS = [{}, WINDOW, {"layout": "frame_causal"}, {"layout": "spatiotemporal", "text_conditioning": "cross"}]


def _fast_case(rank, world):
    train = {kind: train_step_case(rank, world, kind, GRID, arch) for kind, arch in
             (("flow", WINDOW), ("masked", {}), ("autoregressive", {"layout": "frame_causal"}))}
    sample = sample_case(rank, world, "masked", GRID, {"layout": "frame_causal"})
    pipe = pipeline_case(rank, world, "flow")  # pipe(..., sp_size=2): decoded frames, the same on every rank
    try:  # an sp_size that does not divide the world is refused by name, on every rank alike
        new_sequence_parallel(3)
    except ConfigError as err:
        refused = str(err)
    return train, sample, pipe, refused


def test_two_processes_sp2_train_and_sample_like_one_process():
    trains, sample, pipe, refused = run_group(_fast_case)
    for kind, train in trains.items():  # a training step of each generator
        _record(kind, train)
        assert train["loss"] <= ATOL and train["grads"] <= ATOL and train["weights"] <= ATOL, (kind, train)
        assert train["grad_scale"] > 100 * max(train["grads"], 1e-7), kind  # not vacuous: the gradients are not ~0
    differences.record("masked sampling vs one process", sample["vs_one_process"], 0)
    assert sample["vs_one_process"] == 0 and sample["between_ranks"] == 0, sample
    assert pipe["vs_one_process"] == 0 and pipe["between_ranks"] == 0 and pipe["split_after"] is None, pipe
    assert "sp_size=3 does not divide the world size 2" in refused


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flow", "masked", "autoregressive"])
def test_training_step_equal_every_generator_and_pattern(kind):
    for arch, report in zip(LAYOUTS, run_group(_Cases(kind, "train"))):
        _record(f"{kind} {arch.get('layout', 'full')}", report)
        assert max(report["loss"], report["grads"], report["weights"]) <= ATOL, (arch, report)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["flow", "masked"])
def test_sampling_equal_every_pattern(kind):
    for arch, report in zip(LAYOUTS, run_group(_Cases(kind, "sample"))):
        tol = 1e-5 if kind == "flow" else 0
        differences.record(f"{kind} {arch.get('layout', 'full')} sampling vs one process", report["vs_one_process"], tol)
        assert report["vs_one_process"] <= tol and report["between_ranks"] == 0, (arch, report)


@pytest.mark.slow
def test_training_step_equal_with_gradient_checkpointing():
    report = run_group(train_step_case, "masked", GRID, WINDOW, 2, True)
    _record("masked window checkpointing", report)
    assert max(report["loss"], report["grads"], report["weights"]) <= ATOL, report


@pytest.mark.slow
def test_training_step_equal_under_torch_compile():
    report = run_group(train_step_case, "flow", GRID, WINDOW, 2, False, True)
    _record("flow window compiled", report)
    assert max(report["loss"], report["grads"], report["weights"]) <= ATOL, report


@pytest.mark.slow
def test_masked_pipeline_sp2_equals_one_process():
    report = run_group(pipeline_case, "masked")
    assert report["vs_one_process"] == 0 and report["between_ranks"] == 0, report


def _record(what: str, report: dict) -> None:
    for key in ("loss", "grads", "weights"):
        differences.record(f"{what} {key}", report[key], ATOL)


class _Cases:
    """Picklable worker running every layout of one generator kind (one pair of processes for all)."""

    def __init__(self, kind: str, what: str):
        self.kind, self.what = kind, what

    def __call__(self, rank, world):
        case = train_step_case if self.what == "train" else sample_case
        return [case(rank, world, self.kind, GRID, arch) for arch in LAYOUTS]


def test_sp_size_without_a_distributed_launch_is_refused():
    with pytest.raises(ConfigError, match="sp_size=2 needs a distributed launch"):
        new_sequence_parallel(2)
    assert new_sequence_parallel(1) is None
    with pytest.raises(ConfigError, match="sp_size must be an int >= 1"):
        new_sequence_parallel(0)


def test_heads_not_divisible_and_models_without_a_backbone_are_refused():
    model = tiny_generator("flow")  # 2 heads
    three = SequenceParallel(None, 0, 3, 0, 1, owns_group=False)
    with pytest.raises(ConfigError, match="sp_size=3 does not divide num_heads=2"):
        check_sequence_parallel(model, three)
    x = torch.randn(1, 3, *GRID)
    with pytest.raises(ConfigError, match="sp_size=3 does not divide num_heads=2"):  # the forward that gets it too
        model(x, torch.tensor([500.0]), sp=three)
    with pytest.raises(UnsupportedError, match="Linear has no vidgen video transformer backbone"):
        check_sequence_parallel(torch.nn.Linear(2, 2), None)


def test_the_group_is_an_argument_not_module_state():
    """No module keeps a group: the same model gives the same output before and after a split call is refused, and
    the generators refuse a split where the whole sequence is needed (a KV cache, the block-causal chunked
    attention) by name."""
    from vidgen.generators import CausalFlowVideoTransformer
    model = tiny_generator("flow").eval()
    x = torch.randn(1, 3, *GRID, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500.0])
    before = model(x, t).sample
    with pytest.raises(ConfigError):
        model(x, t, sp=SequenceParallel(None, 0, 3, 0, 1, owns_group=False))
    assert torch.equal(model(x, t).sample, before)
    assert not any(isinstance(v, SequenceParallel) for m in model.modules() for v in vars(m).values())
    one = SequenceParallel(None, 0, 1, 0, 1, owns_group=False)  # size 1 divides any head count
    causal = CausalFlowVideoTransformer.from_preset("tiny", in_channels=3, max_grid=(8, 8, 8))
    with pytest.raises(UnsupportedError, match=r"block-causal model.s chunked attention\) is not split"):
        causal(x, t, sp=one)

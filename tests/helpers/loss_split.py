"""Helpers of the tests that a loss split over processes is the one-process loss (the condition for 2 processes to
train what 1 trains): each process draws its rows of the global batch through a RowGenerator."""
from __future__ import annotations

import torch


def halves_make_the_whole(loss, rtol: float = 1e-5, atol: float = 1e-6) -> torch.Tensor:
    """``loss(rows, rank, world) -> (loss, logs)``: the mean of the two interleaved halves' logs equals the whole
    batch's, each key; returns the whole batch's loss (for a backward)."""
    whole, logs = loss(slice(None), 0, 1)
    halves = [loss(slice(rank, None, 2), rank, 2) for rank in (0, 1)]
    for key in logs:
        torch.testing.assert_close((halves[0][1][key] + halves[1][1][key]) / 2, logs[key], rtol=rtol, atol=atol)
    return whole


def gradients_reach(trained, frozen) -> None:
    """After a backward: some weight of each module in ``trained`` has a nonzero gradient, none of ``frozen`` any."""
    for module in frozen:
        assert all(p.grad is None for p in module.parameters())
    for module in trained:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

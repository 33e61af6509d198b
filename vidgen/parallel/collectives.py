"""Differentiable collectives over a sequence-parallel group, each with its true adjoint as backward.

* :func:`all_to_all`: rank ``r`` sends chunk ``p`` of its leading dim to rank ``p`` and receives rank ``p``'s chunk
  ``r`` as its chunk ``p``. With equal chunks this exchange is its own adjoint, so the backward is the same exchange.
* :func:`all_gather`: every rank receives every rank's tensor (stacked on a new leading dim); the backward sums
  each rank's gradient for this rank's piece (a reduce-scatter, done here as an exchange and a sum: gloo has no
  reduce-scatter).

With true adjoints, rank ``r`` of ``P`` that backpropagates its copy of a loss computed identically on every rank
gets the gradient of ``sum over ranks of the loss`` with respect to its own copy of the weights: summed over the
group (DDP's all-reduce does it, divided by the world) that is ``P`` times the single-process gradient, which DDP's
division by the world size turns back into the data-parallel mean. Nothing needs rescaling.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        return _exchange(x, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _exchange(grad, ctx.group), None


def _exchange(x: torch.Tensor, group) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """x: (P, ...) on every rank of ``group`` (P its size) -> (P, ...): chunk ``p`` is rank ``p``'s chunk for this
    rank. Differentiable (the backward is the same exchange)."""
    return _Exchange.apply(x, group)


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        size = dist.get_world_size(group)
        out = torch.empty((size, *x.shape), dtype=x.dtype, device=x.device)
        dist.all_gather(list(out.unbind(0)), x.contiguous(), group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # rank p holds the gradient of its loss for every rank's piece: send piece r to rank r, sum what comes back
        return _exchange(grad, ctx.group).sum(0), None


def all_gather(x: torch.Tensor, group) -> torch.Tensor:
    """x (...) on every rank -> (P, ...) with rank ``p``'s tensor at ``p``. Differentiable (reduce-scatter back)."""
    return _Gather.apply(x, group)

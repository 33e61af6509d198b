"""Sequence-parallel process groups inside a data-parallel world: ``world = dp x sp``.

Ranks ``[g * sp, (g + 1) * sp)`` form sequence-parallel group ``g`` (consecutive ranks: on a multi-GPU node an SP
group stays inside one node, where the all-to-all is fastest); group ``g`` is also the data-parallel rank ``g`` of
``dp = world / sp``. Every rank of one SP group must see the same clip: the data loader and the per-sample random
draws take the data-parallel rank and size (:attr:`SequenceParallel.data_rank`, :attr:`SequenceParallel.data_world`).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Optional

import torch.distributed as dist

from vidgen.errors import ConfigError


@dataclass(eq=False)
class SequenceParallel:
    """One rank's place in a sequence-parallel group: ``size`` ranks share each clip's tokens."""

    group: object  # the torch.distributed process group of this rank's SP group
    rank: int  # this rank's index inside its SP group (its sequence chunk)
    size: int  # sp_size
    data_rank: int  # the SP group's index: its data-parallel rank
    data_world: int  # number of SP groups: the data-parallel size
    owns_group: bool = True  # created by :func:`new_sequence_parallel` (destroyed by :meth:`close`)

    def close(self) -> None:
        """Destroy the process groups this object created (the default group stays)."""
        if self.owns_group and self.group is not None and dist.is_initialized():
            dist.destroy_process_group(self.group)
        self.group = None

    def __repr__(self) -> str:
        return (f"SequenceParallel(rank={self.rank}, size={self.size}, data_rank={self.data_rank}, "
                f"data_world={self.data_world})")


def check_sp_size(sp_size, name: str = "sp_size") -> None:
    if isinstance(sp_size, bool) or not isinstance(sp_size, int) or sp_size < 1:
        raise ConfigError(f"{name} must be an int >= 1 (processes that share one clip's tokens), got {sp_size!r}")


def new_sequence_parallel(sp_size: int, name: str = "sp_size") -> Optional[SequenceParallel]:
    """The SP groups of the current ``torch.distributed`` world (every rank must call this, in the same order);
    None for ``sp_size == 1``. Raises :class:`~vidgen.errors.ConfigError` naming ``name`` when ``sp_size`` > 1 and
    no distributed launch initialised the default group, or when ``sp_size`` does not divide the world size."""
    check_sp_size(sp_size, name)
    if sp_size == 1:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError(f"{name}={sp_size} needs a distributed launch (accelerate launch or torchrun with "
                          f"--nproc_per_node a multiple of {sp_size}); this process runs alone")
    world, me = dist.get_world_size(), dist.get_rank()
    if world % sp_size:
        raise ConfigError(f"{name}={sp_size} does not divide the world size {world}: world = data-parallel size x "
                          f"{name}; launch a multiple of {sp_size} processes or choose a divisor of {world}")
    mine = None
    for g in range(world // sp_size):  # every rank creates every group (torch.distributed requires it)
        group = dist.new_group(list(range(g * sp_size, (g + 1) * sp_size)))
        if me // sp_size == g:
            mine = group
    return SequenceParallel(mine, me % sp_size, sp_size, me // sp_size, world // sp_size)


@contextlib.contextmanager
def launched_default_group():
    """The default process group of a distributed launch: as found if one is initialised; else initialised from the
    environment ``torchrun`` / ``accelerate launch`` set (``WORLD_SIZE`` > 1; NCCL with CUDA, else gloo) and destroyed
    when the block ends; else nothing (a process that runs alone)."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    import torch
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()

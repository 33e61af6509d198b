"""Sequence parallelism in the training loop: ``sp_size`` ranks share each clip's tokens (Ulysses,
:mod:`vidgen.parallel.ulysses`) inside the data-parallel world accelerate launched: ``world = dp x sp``.

The groups are consecutive ranks; every rank of one group draws the same clips and the same per-sample random
numbers, so the data position and the step's generator take the *data-parallel* rank and size
(:func:`data_rank_world`). DDP's gradient all-reduce over the whole world then gives the data-parallel mean of the
single-process gradients (the collectives' backwards are their true adjoints, so nothing is rescaled).

The group is passed, never stored on the model: the task's loss call gives it to the generator's ``loss(..., sp=sp)``
and the backbone splits that forward only, so the periodic samples and the saved weights use the model as it is,
whole on one process."""
from __future__ import annotations

import contextlib

from vidgen.parallel import new_sequence_parallel


@contextlib.contextmanager
def sequence_parallel_run(sp_size: int):
    """The run's :class:`~vidgen.parallel.SequenceParallel` (None for ``sp_size`` 1), which the trainer passes to
    the task and its data loader; its process groups are destroyed when the run ends."""
    sp = new_sequence_parallel(sp_size, "sp_size")
    try:
        yield sp
    finally:
        if sp is not None:
            sp.close()


def data_rank_world(acc, sp) -> tuple[int, int]:
    """(rank, world) of this process among the data-parallel replicas: the SP group's index and the number of
    groups under sequence parallelism (``sp`` not None), else accelerate's process index and count."""
    return (sp.data_rank, sp.data_world) if sp is not None else (acc.process_index, acc.num_processes)

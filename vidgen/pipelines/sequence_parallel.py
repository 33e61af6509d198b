"""``pipe(..., sp_size=P)``: sampling with each clip's tokens split over ``P`` processes (Ulysses,
:mod:`vidgen.parallel.ulysses`), for the pipelines whose generator samples whole sequences (flow, masked).

Run the same call on every process of a distributed launch (``torchrun --nproc_per_node P script.py`` or
``accelerate launch``): the default process group is the launch's (initialised from its environment when the script
did not), the SP groups are made for the call and destroyed after it. The pipeline passes the call's group to its
sampler (``generate_latents(..., sp=sp)`` / ``generate_ids(..., sp=sp)``), which passes it to each model call; the
transformer itself is not changed. Every rank computes the same frames (the outputs are gathered before the head, and
the random draws use the caller's seeded generators on every rank alike); write files on rank 0 only
(``torch.distributed.get_rank() == 0``)."""
from __future__ import annotations

import contextlib

from vidgen.parallel import check_sequence_parallel, check_sp_size, new_sequence_parallel
from vidgen.parallel.groups import launched_default_group


@contextlib.contextmanager
def call_group(pipe, sp_size: int):
    """The :class:`~vidgen.parallel.SequenceParallel` of one call of ``pipe`` over ``sp_size`` processes of the
    launch, for the block (None for 1); ``pipe.transformer`` is checked to split (heads, backbone) first."""
    check_sp_size(sp_size)
    if sp_size == 1:
        yield None
        return
    with launched_default_group():
        sp = new_sequence_parallel(sp_size)
        try:
            check_sequence_parallel(pipe.transformer, sp)
            yield sp
        finally:
            sp.close()

"""Parallelism inside one clip: sequence-parallel process groups, differentiable collectives and Ulysses attention
for vidgen's backbone (:mod:`vidgen.parallel.ulysses`). Data parallelism (DDP / FSDP) stays accelerate's."""
from vidgen.parallel.groups import SequenceParallel, check_sp_size, new_sequence_parallel
from vidgen.parallel.ulysses import check_sequence_parallel, ulysses_attention

__all__ = ["SequenceParallel", "check_sequence_parallel", "check_sp_size", "new_sequence_parallel",
           "ulysses_attention"]

"""Random draws that do not depend on how a batch is split over processes.

Data-parallel training gives process ``rank`` of ``world`` the rows ``rank::world`` of each global batch (see
``vidgen.training.data.EpochSampler``). If every process drew its noise, timesteps, masks and crops from its own
generator, 2 processes with batch b would train on other random numbers than 1 process with batch 2b, and the two
runs could not be compared. :class:`RowGenerator` draws every tensor for the whole global batch from one generator
that all processes share and keeps this process's rows, so sample ``k`` of the global batch sees the same numbers
under any split. With ``world == 1`` it draws exactly what ``torch.rand*(..., generator=g)`` would.

Every training loss takes ``generator`` as a ``torch.Generator``, ``None`` or a ``RowGenerator``; :func:`rows`
turns the first two into the third.
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch

from vidgen.errors import InvalidInputError


class RowGenerator:
    """Draws ``(b, *shape)`` tensors as rows ``rank::world`` of a ``(b * world, *shape)`` draw from ``generator``."""

    def __init__(self, generator: Optional[torch.Generator] = None, rank: int = 0, world: int = 1):
        if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
            raise InvalidInputError(f"RowGenerator needs 0 <= rank < world, got rank={rank!r}, world={world!r}")
        self.generator, self.rank, self.world = generator, rank, world
        self.device = generator.device if generator is not None else None  # draw where the generator lives

    def _keep(self, full: torch.Tensor) -> torch.Tensor:
        return full[self.rank::self.world] if self.world > 1 else full

    def rand(self, b: int, *shape: int) -> torch.Tensor:
        """Uniform [0, 1), ``(b, *shape)``."""
        return self._keep(torch.rand(b * self.world, *shape, generator=self.generator, device=self.device))

    def randn(self, b: int, *shape: int) -> torch.Tensor:
        """Standard normal, ``(b, *shape)``."""
        return self._keep(torch.randn(b * self.world, *shape, generator=self.generator, device=self.device))

    def randint(self, high: int, b: int, *shape: int) -> torch.Tensor:
        """Integers in ``[0, high)``, ``(b, *shape)``."""
        return self._keep(torch.randint(0, high, (b * self.world, *shape), generator=self.generator, device=self.device))

    def shared(self, *shape: int) -> torch.Tensor:
        """Uniform [0, 1) of ``shape``, the same on every process (one draw for the whole global batch)."""
        return torch.rand(*shape, generator=self.generator, device=self.device)

    def __repr__(self) -> str:
        return f"RowGenerator(rank={self.rank}, world={self.world})"


GeneratorLike = Union[None, torch.Generator, RowGenerator]


def check_generator(generator, name: str = "generator") -> None:
    """Refuse, by name, a ``generator`` argument that is not None, a torch.Generator, a :class:`RowGenerator` or a
    list of generators (one per video, as diffusers takes them): a seed passed as an int is the usual mistake."""
    items = generator if isinstance(generator, (list, tuple)) else [generator]
    bad = next((g for g in items if not (g is None or isinstance(g, (torch.Generator, RowGenerator)))), None)
    if bad is not None or (isinstance(generator, (list, tuple)) and not generator):
        got = "an empty list" if bad is None else type(bad).__name__
        raise InvalidInputError(f"{name}: expected a torch.Generator, a list of them (one per video) or None, got "
                                f"{got}; for a seed, pass {name}=torch.Generator().manual_seed(seed)")


def rows(generator: GeneratorLike) -> RowGenerator:
    """``generator`` as a :class:`RowGenerator` (a plain generator or ``None`` is the single-process case)."""
    if isinstance(generator, RowGenerator):
        return generator
    if generator is None or isinstance(generator, torch.Generator):
        return RowGenerator(generator)
    raise InvalidInputError(f"generator must be a torch.Generator, a RowGenerator or None, got "
                            f"{type(generator).__name__}")


def enable_deterministic(warn_only: bool = False) -> None:
    """Make GPU runs repeat bit for bit, at some speed cost (CPU runs of vidgen already do; the tests check it).

    On GPUs, cuDNN picks convolution algorithms by timing (``benchmark``) and several kernels accumulate with
    atomics in a thread-timing-dependent order: scatter/index_add backward, embedding backward, the efficient and
    flash SDPA backward, cuBLAS split-K GEMMs. This selects deterministic cuDNN algorithms, a fixed cuBLAS
    workspace, and torch's deterministic algorithms; an op without one raises (or warns, ``warn_only``).
    Call it before the first CUDA op."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=warn_only)

"""Clip shape buckets: which (frames, height, width) a clip is encoded at, and batches of one shape for training.

A clip goes to the bucket that keeps its aspect ratio best, then needs the least resizing, then keeps the most
frames it has; it is resized to cover the bucket and center-cropped (the least crop that keeps the aspect ratio),
never padded. A clip shorter than every bucket of its aspect ratio's choice is skipped with a reason.

:class:`BucketBatchSampler` draws, at every step, one bucket (the same on every process: the draw is seeded by the
step alone) and a batch of that bucket's clips, walking a seeded permutation of each bucket; its whole state is a few
counters, so a resumed run draws exactly the batches an uninterrupted one would have drawn, and its memory holds one
permutation per bucket, not the dataset.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from vidgen.errors import ConfigError


@dataclass(frozen=True, order=True)
class Bucket:
    frames: int
    height: int
    width: int

    @property
    def name(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"

    def __str__(self) -> str:
        return self.name


#: the default set: the shape the shipped models train at (17x64x64), a shorter and a longer clip, and two aspects
DEFAULT_BUCKETS = ("17x64x64", "9x64x64", "33x64x64", "17x64x96", "17x96x64")

_SHAPE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*$")


def parse_bucket(spec, where: str = "bucket") -> Bucket:
    """``"17x64x64"``, ``(17, 64, 64)`` or a :class:`Bucket` -> :class:`Bucket` (frames, height, width >= 1)."""
    if isinstance(spec, Bucket):
        return spec
    if isinstance(spec, str):
        m = _SHAPE.match(spec)
        values = tuple(int(v) for v in m.groups()) if m else None
    elif isinstance(spec, (tuple, list)) and len(spec) == 3 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                      for v in spec):
        values = tuple(spec)
    else:
        values = None
    if values is None or min(values) < 1:
        raise ConfigError(f"{where}: expected FRAMESxHEIGHTxWIDTH such as '17x64x64' (positive ints), got {spec!r}")
    return Bucket(*values)


def parse_buckets(specs: Iterable | str, where: str = "buckets") -> list[Bucket]:
    """A list of bucket specs (or one comma-separated string) -> sorted distinct :class:`Bucket` list."""
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    buckets = sorted({parse_bucket(s, where) for s in specs})
    if not buckets:
        raise ConfigError(f"{where}: no buckets given")
    return buckets


def assign_bucket(num_frames: int, height: int, width: int, buckets: list[Bucket]) -> tuple[Optional[Bucket], str]:
    """The bucket a ``num_frames x height x width`` clip goes to, or ``(None, reason)``.

    Among the buckets whose frame count the clip has, the one with the nearest aspect ratio (log scale), then the
    least resize (log of the cover scale), then the most frames."""
    fits = [b for b in buckets if b.frames <= num_frames]
    if not fits:
        shortest = min(b.frames for b in buckets)
        return None, f"too short: {num_frames} frames, the shortest bucket needs {shortest}"
    aspect = math.log(width / height)

    def cost(b: Bucket):
        scale = max(b.height / height, b.width / width)
        return round(abs(aspect - math.log(b.width / b.height)), 6), round(abs(math.log(scale)), 6), -b.frames

    return min(fits, key=cost), ""


def crop_fraction(height: int, width: int, bucket: Bucket) -> float:
    """The fraction of the resized frame's area the center crop to ``bucket`` removes (0 = none)."""
    scale = max(bucket.height / height, bucket.width / width)
    return 1.0 - (bucket.height * bucket.width) / (height * scale * width * scale)


def equal_token_batches(tokens: dict[str, int], batch: int) -> dict[str, int]:
    """A batch size per bucket with about ``batch`` x the fewest tokens per batch: ``batch`` for the bucket with the
    fewest tokens a clip, fewer (at least 1) for larger ones."""
    smallest = min(tokens.values())
    return {name: max(1, round(batch * smallest / t)) for name, t in tokens.items()}


class BucketBatchSampler:
    """Batches of one bucket each; every process draws the same bucket at a step and its ``rank::world`` share of
    the bucket's global batch.

    Args:
        counts: clips per bucket name.
        batch: per-process batch size per bucket name.
        seed: the seed of the bucket draws and of each bucket's permutations.
        weights: bucket probabilities (normalized; default proportional to the clip counts).
        rank, world: this process and the process count.

    :meth:`take` returns ``(bucket name, indices)``; :meth:`state_dict` / :meth:`load_state_dict` hold the step
    and each bucket's epoch and position (in global clips, so a run may resume with another process count).
    """

    def __init__(self, counts: dict[str, int], batch: dict[str, int], seed: int,
                 weights: Optional[dict[str, float]] = None, rank: int = 0, world: int = 1):
        self.names = sorted(n for n, c in counts.items() if c > 0)
        if not self.names:
            raise ConfigError("the dataset has no clips in any selected bucket")
        self.counts, self.seed, self.rank, self.world = dict(counts), seed, rank, world
        self.batch = {n: int(batch[n]) for n in self.names}
        w = weights or {n: float(counts[n]) for n in self.names}
        unknown = sorted(set(w) - set(counts))
        if unknown:
            raise ConfigError(f"bucket weights name bucket(s) {unknown} that the dataset does not have; it has "
                              f"{sorted(counts)}")
        probs = torch.tensor([float(w.get(n, 0.0)) for n in self.names], dtype=torch.float64)
        if (probs < 0).any() or probs.sum() <= 0:
            raise ConfigError(f"bucket weights must be >= 0 with a positive sum, got {w}")
        self.cumulative = (probs / probs.sum()).cumsum(0)
        self.step = 0
        self.positions = {n: [0, 0] for n in self.names}  # bucket -> [epoch, position in global clips]
        self._perms: dict[str, tuple[int, torch.Tensor]] = {}

    def __len__(self) -> int:
        return sum(self.counts[n] for n in self.names)

    def bucket_at(self, step: int) -> str:
        u = torch.rand((), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + step), dtype=torch.float64)
        return self.names[min(int(torch.searchsorted(self.cumulative, u, right=True)), len(self.names) - 1)]

    def _perm(self, name: str, epoch: int) -> torch.Tensor:
        cached = self._perms.get(name)
        if cached is None or cached[0] != epoch:
            g = torch.Generator().manual_seed((self.seed * 100_003 + epoch) * 1_009 + self.names.index(name))
            cached = self._perms[name] = (epoch, torch.randperm(self.counts[name], generator=g))
        return cached[1]

    def take(self, k: Optional[int] = None) -> tuple[str, list[int]]:
        """This step's bucket and this process's indices in it (``k`` overrides the bucket's batch size)."""
        name = self.bucket_at(self.step)
        per = self.batch[name] if k is None else k
        need, out = per * self.world, []
        epoch, pos = self.positions[name]
        while len(out) < need:
            perm = self._perm(name, epoch)
            if pos >= len(perm):
                epoch, pos = epoch + 1, 0
                continue
            part = perm[pos:pos + need - len(out)].tolist()
            out += part
            pos += len(part)
        self.positions[name] = [epoch, pos]
        self.step += 1
        return name, out[self.rank::self.world]

    def state_dict(self) -> dict:
        return {"step": self.step, "positions": {n: list(p) for n, p in self.positions.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        for name, (epoch, pos) in state["positions"].items():
            if name not in self.positions:
                raise ConfigError(f"the checkpoint's data position names bucket {name!r}, which this dataset does "
                                  f"not have (it has {self.names})")
            self.positions[name] = [int(epoch), int(pos)]

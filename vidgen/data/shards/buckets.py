"""Clip shape buckets: which (frames, height, width) a clip is encoded at.

A clip goes to the bucket that keeps its aspect ratio best, then needs the least resizing, then keeps the most
frames it has; it is resized to cover the bucket and center-cropped (the least crop that keeps the aspect ratio),
never padded. A clip shorter than every bucket of its aspect ratio's choice is skipped with a reason. Training draws
batches of one bucket at a time: :mod:`vidgen.data.shards.sampler`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Optional

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

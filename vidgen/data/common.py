"""Helpers shared by the built-in datasets."""
from __future__ import annotations

import hashlib

import torch

from vidgen.errors import InvalidInputError


def make_generator(seed: int, stream: str, index: int) -> torch.Generator:
    """A generator seeded from ``(seed, stream, index)``: items never depend on access order or worker."""
    digest = hashlib.sha256(f"{seed}/{stream}/{index}".encode()).digest()
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return generator


def normalize_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise InvalidInputError(f"size must be a positive int or (H, W) of positive ints, got {size!r}")
    return tuple(size)


def check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise InvalidInputError(f"split must be one of {allowed}, got {split!r}")


def check_clip_format(num_frames: int, fps: float) -> None:
    """Frames per clip and frame rate of the rendered datasets (a bool is no frame count)."""
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise InvalidInputError(f"num_frames must be a positive int, got {num_frames!r}")
    if not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and fps > 0):
        raise InvalidInputError(f"fps must be positive, got {fps!r}")

"""Training data plumbing: a uint8 clip cache, a resumable sharded sampler, and joint image+video batches.

All randomness comes from generators seeded by ``(seed, rank, step)``, so a resumed run draws exactly the
batches an uninterrupted run would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from vidgen.errors import ConfigError


class CachedClips:
    """Memoizes ``dataset[i]["video"]`` as uint8 (renders each clip once; 4x smaller than float)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index not in self.cache:
            video = self.dataset[index]["video"]
            self.cache[index] = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.cache[index].float() / 127.5 - 1.0


@dataclass
class EpochSampler:
    """Walks seeded permutations of ``range(n)``; each process takes its ``rank::world`` share."""

    n: int
    seed: int
    rank: int = 0
    world: int = 1
    epoch: int = 0
    pos: int = 0

    def _perm(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()[self.rank::self.world]

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        perm = self._perm()
        while len(out) < k:
            if self.pos >= len(perm):
                self.epoch, self.pos = self.epoch + 1, 0
                perm = self._perm()
            out.append(perm[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The generator every random draw of step ``step`` takes. Also reseeds torch's global RNG from the same
    numbers: libraries that draw from it (e.g. vector-quantize-pytorch's codebook updates) stay resumable."""
    value = (seed * 1_000_003 + rank * 7_919 + step) % (2 ** 63)
    torch.manual_seed(value + 1)
    return torch.Generator().manual_seed(value)


def _augment(video: torch.Tensor, crop: int, g: torch.Generator) -> torch.Tensor:
    """Random square crop (same for all frames) and horizontal flip of a ``(3, T, H, W)`` clip."""
    h, w = video.shape[-2:]
    if crop:
        if crop > min(h, w):
            raise ConfigError(f"data.crop={crop} is larger than the clips ({h}x{w})")
        y0 = int(torch.randint(0, h - crop + 1, (1,), generator=g))
        x0 = int(torch.randint(0, w - crop + 1, (1,), generator=g))
        video = video[..., y0:y0 + crop, x0:x0 + crop]
    if torch.rand((), generator=g) < 0.5:
        video = video.flip(-1)
    return video


def joint_batch(clips: CachedClips, sampler: EpochSampler, video_batch: int, image_batch: int, crop: int,
                g: torch.Generator) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Video batch ``(Bv, 3, T, H, W)`` and image batch ``(Bi, 3, 1, H, W)`` (random frames of other clips)."""
    videos = [_augment(clips[i], crop, g) for i in sampler.take(video_batch)]
    images = []
    for i in sampler.take(image_batch):
        clip = clips[i]
        t = int(torch.randint(0, clip.shape[1], (1,), generator=g))
        images.append(_augment(clip[:, t:t + 1], crop, g))
    return (torch.stack(videos) if videos else None), (torch.stack(images) if images else None)

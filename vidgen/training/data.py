"""Training data plumbing: a uint8 clip cache, a resumable sharded sampler, and joint image+video batches.

All randomness of a step comes from one generator seeded by ``(seed, step)`` and is drawn per sample of the global
batch (:class:`vidgen.rng.RowGenerator`): a resumed run draws exactly the batches an uninterrupted run would have
drawn, and N processes with batch b draw the same numbers per sample as one process with batch N*b.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vidgen.errors import ConfigError
from vidgen.rng import RowGenerator


def check_folder_root(data_cfg) -> None:
    """``data.dataset: folder`` reads ``data.root``: refused when it is not set (it would scan the current folder)."""
    if not data_cfg.root:
        raise ConfigError("data.dataset=folder reads the videos under data.root, which is not set: give "
                          "data.root=FOLDER")


def _as_uint8(video: torch.Tensor) -> torch.Tensor:
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _render(dataset: Dataset, indices: list[int]) -> list:
    """One worker's share of :meth:`CachedClips.prefill` (module level, so a spawned process can unpickle it), as
    numpy arrays: tensors would come back through torch's shared-memory pickling and hold the cache in /dev/shm."""
    torch.set_num_threads(1)
    return [_as_uint8(dataset[i]["video"]).numpy() for i in indices]


class CachedClips:
    """Memoizes ``dataset[i]["video"]`` as uint8 (renders each clip once; 4x smaller than float)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index not in self.cache:
            self.cache[index] = _as_uint8(self.dataset[index]["video"])
        return self.cache[index].float() / 127.5 - 1.0

    def prefill(self, workers: int, log=print, group: int = 16) -> None:
        """Render every clip not yet cached in ``workers`` processes, ``group`` clips a task: the clips equal the
        lazy path's, since each is a pure function of its index. Workers are forked, or spawned once CUDA is
        initialised (a forked child cannot use it, and should not inherit it)."""
        import concurrent.futures as futures
        import multiprocessing
        import time

        todo = [i for i in range(len(self)) if i not in self.cache]
        if not todo:
            return
        start = time.perf_counter()
        method = "spawn" if torch.cuda.is_initialized() else "fork"
        groups = [todo[k:k + group] for k in range(0, len(todo), group)]
        with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            for indices, videos in zip(groups, pool.map(_render, [self.dataset] * len(groups), groups)):
                self.cache.update((i, torch.from_numpy(video)) for i, video in zip(indices, videos))
        log(f"rendered {len(todo)} clips in {workers} processes in {time.perf_counter() - start:.1f} s")


@dataclass
class EpochSampler:
    """Walks seeded permutations of ``range(n)``; each process takes its ``rank::world`` share."""

    n: int
    seed: int
    rank: int = 0
    world: int = 1
    epoch: int = 0
    pos: int = 0

    def __post_init__(self):
        if self.n < self.world:  # a process with no clip would look for one forever
            raise ConfigError(f"{self.n} clips for {self.world} data-parallel processes: each process needs at least "
                              "one clip; add clips or run fewer processes")

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


def step_generator(seed: int, step: int, rank: int = 0, world: int = 1) -> RowGenerator:
    """The generator every random draw of step ``step`` takes, for process ``rank`` of ``world``. Every process
    seeds it alike and keeps its own rows of each draw. Also reseeds torch's global RNG (per process, as DDP
    expects of dropout-like draws): libraries that draw from it (e.g. vector-quantize-pytorch's codebook updates)
    stay resumable."""
    value = (seed * 1_000_003 + step) % (2 ** 63)
    torch.manual_seed((value + 1 + rank * 7_919) % (2 ** 63))
    return RowGenerator(torch.Generator().manual_seed(value), rank, world)


# RGB <-> YIQ: hue is the angle of (I, Q), saturation its length
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_RGB = torch.linalg.inv(_YIQ)


def color_jitter(videos: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per clip of ``(B, 3, T, H, W)`` in [-1, 1], from uniforms ``u`` ``(B, 5)``: hue rotation (any angle),
    saturation x[0.5, 1.5] and RGB gains x[0.85, 1.15]. The gains also tint grayscale clips, which hue and
    saturation cannot (several NaturalClips training photographs are grayscale, and a VAE trained without colour
    variety reconstructs chroma worst)."""
    angle = (u[:, 0] * 2 - 1) * torch.pi
    sat = 0.5 + u[:, 1]
    cos, sin = torch.cos(angle) * sat, torch.sin(angle) * sat
    rot = torch.zeros(len(u), 3, 3)
    rot[:, 0, 0], rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = 1.0, cos, -sin, sin, cos
    mix = _RGB @ rot @ _YIQ  # (B, 3, 3) acting on RGB
    gains = 0.85 + 0.3 * u[:, 2:5]  # (B, 3)
    rgb = (videos + 1) / 2
    out = torch.einsum("bij,bjthw->bithw", mix * gains[:, :, None], rgb)
    return (out.clamp(0, 1) * 2 - 1).to(videos.dtype)


def _augment(videos: torch.Tensor, crop: int, g: RowGenerator, color: float = 0.0, zoom: float = 0.0) -> torch.Tensor:
    """Random square crop (same for all frames of a clip), horizontal flip, (with probability ``color``) a colour
    jitter and (with probability ``zoom``, before the crop) a 2x area downscale, per clip of ``(B, 3, T, H, W)``."""
    b, (h, w) = videos.shape[0], videos.shape[-2:]
    corners = g.rand(b, 2)
    flips = g.rand(b) < 0.5
    u = g.rand(b, 6) if color > 0 else None  # drawn only when enabled: runs without it keep their random stream
    zooms = (g.rand(b) < zoom).tolist() if zoom > 0 else [False] * b
    if crop and crop > min(h, w):
        raise ConfigError(f"data.crop={crop} is larger than the clips ({h}x{w})")
    if zoom > 0 and not (crop and crop <= min(h, w) // 2):
        raise ConfigError(f"data.zoom_aug needs data.crop (got {crop}) of at most half the clips' size ({h}x{w}), "
                          f"so that zoomed and unzoomed clips are cropped to one size: raise data.size or lower "
                          f"data.crop")
    out = []
    for video, (cy, cx), flip, zoomed in zip(videos, corners.tolist(), flips.tolist(), zooms):
        if zoomed:
            video = F.avg_pool3d(video, (1, 2, 2))
        if crop:
            vh, vw = video.shape[-2:]
            y0, x0 = int(cy * (vh - crop + 1)), int(cx * (vw - crop + 1))
            video = video[..., y0:y0 + crop, x0:x0 + crop]
        out.append(video.flip(-1) if flip else video)
    out = torch.stack(out)
    if u is not None:  # per-pixel, so jittering after the crop gives the same pixels for less work
        pick = u[:, 0] < color
        out[pick] = color_jitter(out[pick], u[pick, 1:])
    return out


def joint_batch(clips: CachedClips, sampler: EpochSampler, video_batch: int, image_batch: int, crop: int,
                g: RowGenerator, color: float = 0.0,
                zoom: float = 0.0) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Video batch ``(Bv, 3, T, H, W)`` and image batch ``(Bi, 3, 1, H, W)`` (random frames of other clips)."""
    videos = _augment(torch.stack([clips[i] for i in sampler.take(video_batch)]), crop, g, color, zoom) \
        if video_batch else None
    if not image_batch:
        return videos, None
    clips_i = torch.stack([clips[i] for i in sampler.take(image_batch)])
    frames = (g.rand(image_batch) * clips_i.shape[2]).long().clamp(max=clips_i.shape[2] - 1)
    images = torch.stack([clip[:, t:t + 1] for clip, t in zip(clips_i, frames.tolist())])
    return videos, _augment(images, crop, g, color, zoom)

"""Training batches from a shard dataset: one bucket a step, the same on every process, read ahead by a thread.

:class:`BucketBatchSampler` draws, at every step, one bucket (the same on every process: the draw is seeded by the
step alone) and a batch of that bucket's clips, walking a seeded permutation of each bucket; its whole state is a few
counters, so a resumed run draws exactly the batches an uninterrupted one would have drawn, also with another process
count, and its memory holds one permutation per bucket, not the dataset. :class:`ShardBatches` reads those batches
from a :class:`~vidgen.data.shards.dataset.ShardDataset` in a background thread, ahead of the step.

Why not ``litdata.StreamingDataLoader`` and its ``state_dict()``: it splits the chunks between ranks and has one batch
size, while a step here takes one bucket on every process, a batch size per bucket, and resumes on any process count.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Optional

import torch

from vidgen.errors import ConfigError

PREFETCH = 3  # batches read ahead of the step


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


def _caption_tuple(hidden, mask, pooled):
    return hidden, mask, pooled


class ShardBatches:
    """The sampler of a run on shards: :meth:`take_batch` -> ``(bucket, x, conditioning or None)``.

    Args:
        dataset: the :class:`~vidgen.data.shards.dataset.ShardDataset` to read.
        batches, seed, weights, rank, world: as :class:`BucketBatchSampler`'s (``batches``: batch size per bucket).
        conditioning: ``"text"`` (read each clip's caption embeddings) or anything else (none).
        ids: the clips are token ids (returned as int64) rather than latents (float32).
        condition: ``(hidden (B, M, D), mask (B, M), pooled (B, D)) -> conditioning``, the caller's conditioning
            type (default: the tuple itself).
        first_frames: also read each clip's frame 0 (an encode with ``first_frames``): :meth:`take_batch` then
            returns ``(bucket, x, conditioning, frames (B, H, W, 3) uint8)``.
    """

    def __init__(self, dataset, batches: dict[str, int], seed: int, weights: Optional[dict] = None,
                 rank: int = 0, world: int = 1, conditioning: str = "text", ids: bool = False,
                 condition: Callable = _caption_tuple, first_frames: bool = False):
        self.dataset, self.conditioning, self.ids, self.condition = dataset, conditioning, ids, condition
        self.first_frames = first_frames
        counts = {n: dataset.counts[n] for n in batches}
        self._args = (counts, batches, seed, weights, rank, world)
        self.sampler = BucketBatchSampler(*self._args)
        self._thread: Optional[threading.Thread] = None
        self._queue: Optional[queue.Queue] = None
        self._stop = threading.Event()

    def __len__(self) -> int:
        return len(self.sampler)

    def fetch(self, name: str, indices: list[int]):
        """The batch of clips ``indices`` of bucket ``name``: ``(x, conditioning or None)``, read from the shards."""
        x, text_keys, _ = self.dataset.clips(name, indices)
        x = x.long() if self.ids else x.float()
        cond = self.condition(*self.dataset.text(text_keys)) if self.conditioning == "text" else None
        return (x, cond, self.dataset.first_frames(name, indices)) if self.first_frames else (x, cond)

    def _run(self, state: dict, out: queue.Queue, stop: threading.Event) -> None:
        sampler = BucketBatchSampler(*self._args)
        sampler.load_state_dict(state)
        try:
            while not stop.is_set():
                name, indices = sampler.take()
                item = (sampler.state_dict(), name, *self.fetch(name, indices))
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as err:  # noqa: BLE001  (handed to the step, which raises it)
            out.put(err)

    def _start(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(PREFETCH)
        self._thread = threading.Thread(target=self._run, args=(self.sampler.state_dict(), self._queue, self._stop),
                                        daemon=True, name="vidgen-shard-prefetch")
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def take_batch(self):
        """The next step's ``(bucket name, x, conditioning)`` (and the first frames, with ``first_frames``), read
        ahead by the prefetch thread."""
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        state, name, *batch = item
        self.sampler.load_state_dict(state)
        return (name, *batch)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.close()  # batches read ahead from the old position are dropped
        self.sampler.load_state_dict(state)

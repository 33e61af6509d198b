"""Generator training data read from an encoded shard dataset (``data.dataset: shards``), as it goes.

:class:`ShardBatches` is the run's sampler: a :class:`~vidgen.data.BucketBatchSampler` over the dataset's buckets
(the same bucket on every process at each step) whose batches a background thread reads ahead of the step from the
shards (clips and their caption embeddings, by index). The checkpointed state is the sampler's after the last batch
the step consumed, so a resumed run reads the same batches; the process holds a few batches and one permutation per
bucket, not the dataset.

``data.buckets`` selects buckets and sets their batch sizes and probabilities: entries ``"17x64x64"`` or
``{shape: 17x64x96, batch: 4, weight: 0.5}``. Without it every bucket of the dataset is used, with ``data.batch``
clips for the bucket of fewest tokens a clip and about as many tokens per batch for the others, drawn in proportion
to their clip counts. Once any entry has a ``weight``, the buckets are drawn by weight (an entry without one: never).
"""
from __future__ import annotations

import queue
import threading
from typing import Optional

import torch

from vidgen.data.buckets import BucketBatchSampler, equal_token_batches, parse_bucket
from vidgen.data.shards import ShardDataset
from vidgen.errors import ConfigError, ShardError

PREFETCH = 3  # batches read ahead of the step


def bucket_settings(entries, counts: dict[str, int], shapes: dict[str, tuple], batch: int, root: str):
    """``(names, batch per bucket, weights or None)`` from ``data.buckets`` (see the module's description)."""
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"data.buckets must be a list of FRAMESxHEIGHTxWIDTH strings or {{shape, batch, weight}} "
                          f"mappings, got {entries!r}")
    names, batches, weights = [], {}, {}
    for i, entry in enumerate(entries):
        where = f"data.buckets[{i}]"
        spec = entry.get("shape") if isinstance(entry, dict) else entry
        name = parse_bucket(spec, where).name
        if name not in counts:
            raise ConfigError(f"{where}: bucket {name} is not in the dataset at {root} (it has "
                              f"{sorted(n for n, c in counts.items() if c)})")
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"shape", "batch", "weight"})
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: shape, batch, weight")
            if "batch" in entry:
                if isinstance(entry["batch"], bool) or not isinstance(entry["batch"], int) or entry["batch"] < 1:
                    raise ConfigError(f"{where}.batch must be an int >= 1, got {entry['batch']!r}")
                batches[name] = entry["batch"]
            if "weight" in entry:
                weights[name] = float(entry["weight"])
        names.append(name)
    names = names or sorted(n for n, c in counts.items() if c)
    tokens = {n: int(torch.tensor(shapes[n][-3:]).prod()) for n in names}
    auto = equal_token_batches(tokens, batch)
    batches = {n: batches.get(n, auto[n]) for n in names}
    if weights:
        weights = {n: weights.get(n, 0.0) for n in names}
    return names, batches, weights or None


class ShardBatches:
    """The sampler of a run on shards: :meth:`take_batch` -> ``(bucket, x, conditioning or None)``."""

    def __init__(self, dataset: ShardDataset, batches: dict[str, int], seed: int, weights: Optional[dict] = None,
                 rank: int = 0, world: int = 1, conditioning: str = "text", ids: bool = False):
        self.dataset, self.conditioning, self.ids = dataset, conditioning, ids
        counts = {n: dataset.counts[n] for n in batches}
        self._args = (counts, batches, seed, weights, rank, world)
        self.sampler = BucketBatchSampler(*self._args)
        self._thread: Optional[threading.Thread] = None
        self._queue: Optional[queue.Queue] = None
        self._stop = threading.Event()

    def __len__(self) -> int:
        return len(self.sampler)

    def fetch(self, name: str, indices: list[int]):
        """The batch of clips ``indices`` of bucket ``name``: ``(x, Conditioning or None)``, read from the shards."""
        from vidgen.generators import Conditioning
        x, text_keys, _ = self.dataset.clips(name, indices)
        x = x.long() if self.ids else x.float()
        if self.conditioning == "text":
            return x, Conditioning(*self.dataset.text(text_keys))
        return x, None

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
        """The next step's ``(bucket name, x, conditioning)``, read ahead by the prefetch thread."""
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        state, name, x, cond = item
        self.sampler.load_state_dict(state)
        return name, x, cond

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.close()  # batches read ahead from the old position are dropped
        self.sampler.load_state_dict(state)


def shard_batches(data_cfg, fingerprint: str, discrete: bool, seed: int, rank: int, world: int, log=print):
    """The :class:`ShardBatches` of a generator run's ``data`` section (``dataset: shards``), checked against the
    run: the tokenizer's fingerprint, ids or latents, the text encoder and its token count."""
    from vidgen.text import DEFAULT_TEXT_ENCODER
    if not data_cfg.root:
        raise ConfigError("data.dataset=shards needs data.root: the folder written by `vidgen data encode`")
    ds = ShardDataset(data_cfg.root, fingerprint=fingerprint)
    info = ds.info
    kind = "ids" if discrete else "latents"
    if info["tokenizer"]["kind"] != kind:
        raise ShardError(f"{data_cfg.root}: holds {info['tokenizer']['kind']}, but this generator trains on {kind}")
    if data_cfg.conditioning == "class":
        raise ConfigError("data.conditioning=class needs class labels, which shard datasets do not hold: use text "
                          "or none")
    if data_cfg.conditioning == "text":
        wanted = data_cfg.text_encoder or DEFAULT_TEXT_ENCODER
        if info.get("text_encoder") != wanted:
            raise ShardError(f"{data_cfg.root}: captions embedded with {info.get('text_encoder')!r}, but "
                             f"data.text_encoder is {wanted!r}: encode again or set data.text_encoder")
        if info["text"]["max_text_tokens"] != data_cfg.max_text_tokens:
            raise ConfigError(f"data.max_text_tokens={data_cfg.max_text_tokens}, but the captions at {data_cfg.root} "
                              f"were embedded with {info['text']['max_text_tokens']} tokens")
    names, batches, weights = bucket_settings(list(data_cfg.buckets), {n: b["clips"] for n, b in
                                              info["buckets"].items()}, ds.shapes | {
                                              n: tuple(b["shape"] or ()) for n, b in info["buckets"].items()
                                              if n not in ds.shapes}, data_cfg.batch, data_cfg.root)
    ds = ShardDataset(data_cfg.root, fingerprint=fingerprint, buckets=names, check=False) \
        if names != ds.names else ds
    log(f"shards {data_cfg.root}: {len(ds)} clips in buckets " +
        ", ".join(f"{n} ({ds.counts[n]} clips, batch {batches[n]})" for n in names))
    return ShardBatches(ds, batches, seed, weights, rank, world, data_cfg.conditioning, ids=discrete)

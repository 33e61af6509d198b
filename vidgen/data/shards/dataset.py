"""Reading an encoded shard dataset by index, without loading it; and what ``vidgen data info`` prints about one.

:class:`ShardDataset` opens each bucket as a ``litdata.StreamingDataset`` (a local folder or an object-store URL such
as ``s3://bucket/data``) on first use and reads clips by index; the caption keys are memory-mapped. It checks the
tokenizer fingerprint and, for a local folder, every shard file against its index before it is used.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vidgen.data.shards.fingerprint import check_fingerprint
from vidgen.data.shards.format import INFO_FILE, TEXT_DIR, from_bytes, local_path, read_info, verify
from vidgen.errors import ShardError


class ShardDataset:
    """Random access to an encoded dataset's clips by bucket, and to the caption embeddings.

    Args:
        root: the dataset folder (or an object-store URL LitData reads; then ``cache_dir`` holds the shards).
        fingerprint: when given, the tokenizer fingerprint the clips must have been encoded with.
        buckets: bucket names to use (default: all with clips).
        check: run :func:`~vidgen.data.shards.format.verify` first (local folders).
    """

    def __init__(self, root: str | Path, fingerprint: Optional[str] = None, buckets=None, check: bool = True,
                 cache_dir: Optional[str] = None):
        self.root, self.cache_dir = str(root), cache_dir
        self.info = info = read_info(root) if local_path(root) is not None else self._remote_info(root)
        check_fingerprint(root, info, fingerprint)
        available = {n: b for n, b in info["buckets"].items() if b["clips"] > 0}
        names = sorted(available) if not buckets else list(buckets)
        missing = [n for n in names if n not in available]
        if missing:
            raise ShardError(f"{root}: no clips in bucket(s) {missing}; it has {sorted(available)}")
        if check:
            verify(root, names)
        self.names = names
        self.counts = {n: available[n]["clips"] for n in names}
        self.shapes = {n: tuple(available[n]["shape"]) for n in names}  # a clip's tokens: (C, t, h, w) or (t, h, w)
        self.dtype = info["tokenizer"]["dtype"]
        self._open: dict = {}
        self._text_keys = self._text_rows = None

    @staticmethod
    def _remote_info(root) -> dict:  # pragma: no cover  (object stores are not reachable in tests)
        import fsspec
        with fsspec.open(f"{str(root).rstrip('/')}/{INFO_FILE}", "r") as f:
            return json.load(f)

    def _array(self, name: str) -> np.ndarray:
        local = local_path(self.root)
        if local is not None:
            return np.load(local / name, mmap_mode="r")
        import io  # pragma: no cover
        import fsspec  # pragma: no cover
        with fsspec.open(f"{self.root.rstrip('/')}/{name}", "rb") as f:  # pragma: no cover
            return np.load(io.BytesIO(f.read()))

    def _dataset(self, folder: str):
        if folder not in self._open:
            import litdata
            url = f"{self.root.rstrip('/')}/{folder}"
            kw = {"cache_dir": f"{self.cache_dir}/{folder}"} if self.cache_dir else {}
            self._open[folder] = litdata.StreamingDataset(url, **kw)
        return self._open[folder]

    def __len__(self) -> int:
        return sum(self.counts.values())

    def clips(self, bucket: str, indices) -> tuple[torch.Tensor, list[int], list[str]]:
        """``(x, caption keys, clip keys)`` of clips ``indices`` of ``bucket``: x ``(B, *shape)``."""
        ds = self._dataset(bucket)
        items = [ds[int(i)] for i in indices]
        x = torch.stack([from_bytes(it["x"], self.dtype, self.shapes[bucket]) for it in items])
        return x, [int(it["text_key"]) for it in items], [it["key"] for it in items]

    def first_frames(self, bucket: str, indices) -> torch.Tensor:
        """The frame 0 of clips ``indices`` of ``bucket``, as stored by an encode with ``first_frames``: (B, H, W, 3)
        uint8 RGB."""
        if not self.info.get("first_frames"):
            raise ShardError(f"{self.root}: encoded without first frames; encode again with --first-frames "
                             f"(vidgen data encode) to keep each clip's frame 0")
        _, h, w = (int(v) for v in bucket.split("x"))
        ds = self._dataset(bucket)
        frames = [np.frombuffer(bytes(ds[int(i)]["first"]), dtype=np.uint8).reshape(h, w, 3) for i in indices]
        return torch.from_numpy(np.stack(frames))

    def text(self, keys: list[int]):
        """``(hidden (B, M, D), mask (B, M), pooled (B, D))`` float32 / bool for caption keys."""
        if not self.info.get("text_encoder"):
            raise ShardError(f"{self.root}: encoded without a text encoder (--text-encoder none): no captions to "
                             f"condition on; train with data.conditioning=none")
        if self._text_keys is None:
            self._text_keys, self._text_rows = self._array("text_keys.npy"), self._array("text_rows.npy")
        where = np.searchsorted(self._text_keys, np.asarray(keys, dtype=np.int64))
        ds, t = self._dataset(TEXT_DIR), self.info["text"]
        out = []
        for key, w in zip(keys, where.tolist()):
            if w >= len(self._text_keys) or int(self._text_keys[w]) != key:
                raise ShardError(f"{self.root}: a clip's caption (key {key}) is not in the caption table")
            item = ds[int(self._text_rows[w])]
            out.append((from_bytes(item["hidden"], "float32", t["hidden"]), from_bytes(item["mask"], "int32",
                        t["mask"]).bool(), from_bytes(item["pooled"], "float32", t["pooled"])))
        return tuple(torch.stack(parts) for parts in zip(*out))


def dataset_info(root: str | Path) -> dict:
    """What ``vidgen data info`` prints: clip counts (total and per bucket), the token shape per bucket, the
    tokenizer fingerprint, the text encoder and the skipped source files with their reasons."""
    info = read_info(root)
    return {"root": str(root), "clips": info["clips"],
            "buckets": {n: b["clips"] for n, b in info["buckets"].items()},
            "token_shapes": {n: b["shape"] for n, b in info["buckets"].items() if b["shape"]},
            "tokenizer_fingerprint": info["tokenizer"]["fingerprint"], "tokenizer": info["tokenizer"],
            "text_encoder": info["text_encoder"], "captions": info.get("text", {}).get("captions", 0),
            "skipped": info["skipped"], "source": info["source"], "library": info["library"]}


def dataset_summary(info: dict) -> str:
    """The one-line summary of an encode (its ``info.json``): clips per bucket and skipped files by reason."""
    per = ", ".join(f"{n}: {b['clips']}" for n, b in info["buckets"].items())
    reasons: dict[str, int] = {}
    for s in info["skipped"]:
        kind = s["reason"].split(":")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    why = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    return f"{info['clips']} clips encoded ({per}); {len(info['skipped'])} skipped" + (f" ({why})" if why else "")

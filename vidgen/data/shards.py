"""An encoded shard dataset on disk: one LitData dataset per bucket, a caption table, and ``info.json``.

Layout of a dataset folder (written by :func:`vidgen.training.encode_dataset`)::

    info.json            what it holds (clips per bucket, token shapes, tokenizer fingerprint, text encoder, skipped
                         files with reasons); written last, so a folder without it is not a finished dataset
    17x64x64/            one LitData dataset per bucket: items {x: bytes, text_key: int, key: str, caption: str}
    text/                LitData dataset of the distinct captions' embeddings: {key, hidden, mask, pooled}
    text_keys.npy        the caption keys in sorted order and, in text_rows.npy, the row of each (memory-mapped)
    parts/               the finished work units of the encode (a rerun continues from them)

:class:`ShardDataset` reads it by index without loading it: each bucket is a ``litdata.StreamingDataset`` (a local
folder or an object-store URL such as ``s3://bucket/data``), the caption keys are memory-mapped. :func:`verify`
checks every shard file against the index before training starts.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vidgen.errors import ShardError

INFO_FILE = "info.json"
FORMAT = "vidgen-shards"
VERSION = 1
TEXT_DIR = "text"
DTYPES = {"bfloat16": (torch.bfloat16, torch.int16), "float16": (torch.float16, torch.int16),
          "float32": (torch.float32, torch.int32), "int16": (torch.int16, torch.int16),
          "int32": (torch.int32, torch.int32)}


def caption_key(caption: str) -> int:
    """A caption's 63-bit key (the first bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(caption.encode("utf-8")).digest()[:8], "little") >> 1


def to_bytes(t: torch.Tensor, dtype: str) -> bytes:
    """A tensor stored as ``dtype`` (a key of :data:`DTYPES`), as raw bytes."""
    stored, view = DTYPES[dtype]
    return t.detach().to("cpu", stored).contiguous().view(view).numpy().tobytes()


def from_bytes(data: bytes, dtype: str, shape) -> torch.Tensor:
    stored, view = DTYPES[dtype]
    array = np.frombuffer(data, dtype=torch.empty((), dtype=view).numpy().dtype)
    return torch.from_numpy(array.copy()).view(stored).reshape(shape)


def read_info(root: str | Path) -> dict:
    """``root/info.json`` of a finished dataset; a named :class:`ShardError` if it is missing or not one."""
    path = Path(root) / INFO_FILE
    if not path.is_file():
        raise ShardError(f"{root}: no {INFO_FILE}: not an encoded shard dataset, or its encode has not finished "
                         f"(rerun `vidgen data encode` with the same arguments to finish it)")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ShardError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ShardError(f"{path}: not a {FORMAT} file")
    if info.get("version") != VERSION:
        raise ShardError(f"{path}: format version {info.get('version')!r}, this vidgen reads version {VERSION}")
    return info


def _local(root) -> Optional[Path]:
    text = str(root)
    return None if "://" in text else Path(text)


def verify(root: str | Path, buckets=None) -> None:
    """Every shard file of the (local) dataset is present with the size its index records; raises
    :class:`ShardError` naming the first that is not (truncated, missing). Remote datasets are checked by LitData
    as it downloads."""
    local = _local(root)
    if local is None:
        return
    info = read_info(local)
    names = list(info["buckets"]) if buckets is None else list(buckets)
    for folder in [*names, *([TEXT_DIR] if info.get("text_encoder") else [])]:
        index = local / folder / "index.json"
        if not index.is_file():
            raise ShardError(f"{index}: missing: the dataset at {local} is incomplete")
        for chunk in json.loads(index.read_text())["chunks"]:
            path = local / folder / chunk["filename"]
            size = path.stat().st_size if path.is_file() else None
            if size is None:
                raise ShardError(f"{path}: shard missing (listed in {index})")
            if size != chunk["chunk_bytes"]:
                raise ShardError(f"{path}: shard truncated or damaged: {size} bytes, its index records "
                                 f"{chunk['chunk_bytes']}")


class ShardDataset:
    """Random access to an encoded dataset's clips by bucket, and to the caption embeddings.

    Args:
        root: the dataset folder (or an object-store URL LitData reads; then ``cache_dir`` holds the shards).
        fingerprint: when given, the tokenizer fingerprint the clips must have been encoded with.
        buckets: bucket names to use (default: all with clips).
        check: run :func:`verify` first (local folders).
    """

    def __init__(self, root: str | Path, fingerprint: Optional[str] = None, buckets=None, check: bool = True,
                 cache_dir: Optional[str] = None):
        self.root, self.cache_dir = str(root), cache_dir
        self.info = info = read_info(root) if _local(root) is not None else self._remote_info(root)
        got = info["tokenizer"]["fingerprint"]
        if fingerprint is not None and got != fingerprint:
            raise ShardError(f"{root}: encoded with another tokenizer (fingerprint {got}, from "
                             f"{info['tokenizer'].get('path')!r}); the configured tokenizer's is {fingerprint}: "
                             f"encode the clips again with it")
        available = {n: b for n, b in info["buckets"].items() if b["clips"] > 0}
        names = sorted(available) if not buckets else list(buckets)
        missing = [n for n in names if n not in available]
        if missing:
            raise ShardError(f"{root}: no clips in bucket(s) {missing}; it has {sorted(available)}")
        if check:
            verify(root, names)
        self.names = names
        self.counts = {n: available[n]["clips"] for n in names}
        self.shapes = {n: tuple(available[n]["shape"]) for n in names}
        self.dtype = info["tokenizer"]["dtype"]
        self._open: dict = {}
        self._text_keys = self._text_rows = None

    @staticmethod
    def _remote_info(root) -> dict:  # pragma: no cover  (object stores are not reachable in tests)
        import fsspec
        with fsspec.open(f"{str(root).rstrip('/')}/{INFO_FILE}", "r") as f:
            return json.load(f)

    def _array(self, name: str) -> np.ndarray:
        local = _local(self.root)
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

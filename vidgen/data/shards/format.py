"""A shard dataset on disk, and the one module that writes and reads LitData's files directly.

Layout of a dataset folder (written by :func:`vidgen.data.shards.encode.encode_shards`)::

    encode.json          the encode's arguments: a rerun with the same ones continues it, other ones are refused
    info.json            what it holds (clips per bucket, token shapes, tokenizer fingerprint, text encoder, skipped
                         files with reasons); written last, so a folder without it is not a finished dataset
    17x64x64/            one LitData dataset per bucket; an item is {x: bytes, text_key: int, key: str, caption: str},
                         x one clip's tokens: latents (C, t, h, w) or ids (t, h, w), stored as info's tokenizer.dtype;
                         with info's first_frames, also first: the clip's frame 0 as (H, W, 3) uint8 RGB bytes
    text/                LitData dataset of the distinct captions' embeddings: {key: int, hidden: (M, D) float32,
                         mask: (M,) int32, pooled: (D,) float32}, each as bytes
    text_keys.npy        the caption keys in sorted order and, in text_rows.npy, the row of each in text/
    parts/               the encode's finished work units (cNNNNNN/, one dataset per bucket and text/ each), until
                         the merge has moved them into the folders above

Why a private writer: ``litdata.optimize`` runs its function in processes it spawns and reseeds torch's global RNG,
so it cannot write tokens this process encodes on its device into a unit folder that appears whole or not at all.
:class:`ShardWriter` is LitData's ``BinaryWriter`` closed by the public ``litdata.complete_dataset``; it and the
``index.json`` fields :func:`verify` reads are checked against :data:`LITDATA_VERSION` (tests/unit/test_shard_format.py).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from vidgen.errors import ShardError, UnsupportedError

#: the LitData release this module's use of its private writer and index format was checked against (constraints.txt)
LITDATA_VERSION = "0.2.76"
INFO_FILE = "info.json"
ARGS_FILE = "encode.json"
PARTS_DIR = "parts"
TEXT_DIR = "text"
FORMAT = "vidgen-shards"
VERSION = 1
SHARD_BYTES = 64_000_000  # LitData chunk size: a shard file holds about this many bytes
#: stored dtype name -> (torch dtype of the values, same-width integer dtype the bytes are viewed as)
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
    """The inverse of :func:`to_bytes`: ``data`` -> a ``shape`` tensor of ``dtype``."""
    stored, view = DTYPES[dtype]
    array = np.frombuffer(data, dtype=torch.empty((), dtype=view).numpy().dtype)
    return torch.from_numpy(array.copy()).view(stored).reshape(shape)


def plain(item: dict) -> dict:
    """An item read back from LitData with its bytes fields as ``bytes`` (without pyarrow LitData returns them as
    memoryviews, which its writer cannot store again)."""
    return {k: bytes(v) if isinstance(v, (memoryview, bytearray)) else v for k, v in item.items()}


def write_json(path: Path, data) -> None:
    """``data`` as JSON at ``path``, atomically: a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class ShardWriter:
    """Items into a new LitData dataset at ``folder``: :meth:`add` each, then :meth:`close`, which writes its
    ``index.json`` (from then on ``litdata.StreamingDataset`` reads it). Under ``accelerate launch`` LitData names the
    shard files after the process's rank."""

    def __init__(self, folder: Path, shard_bytes: int = SHARD_BYTES):
        import litdata
        if not hasattr(litdata, "complete_dataset"):
            raise UnsupportedError(f"litdata {litdata.__version__} cannot finish a dataset it did not optimize "
                                   f"(no litdata.complete_dataset): pip install litdata=={LITDATA_VERSION}")
        from litdata.streaming.writer import BinaryWriter
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.count = folder, 0
        self._writer = BinaryWriter(str(folder), chunk_bytes=shard_bytes)

    def add(self, item: dict) -> None:
        self._writer[self.count] = item
        self.count += 1

    def close(self) -> None:
        import litdata
        self._writer.done()  # the last shard and this writer's own {rank}.index.json
        litdata.complete_dataset(str(self.folder))  # -> index.json


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


def local_path(root) -> Optional[Path]:
    """``root`` as a local path, or None for an object-store URL (``s3://...``)."""
    text = str(root)
    return None if "://" in text else Path(text)


def verify(root: str | Path, buckets=None) -> None:
    """Every shard file of the (local) dataset is present with the size its index records; raises
    :class:`ShardError` naming the first that is not (truncated, missing). Remote datasets are checked by LitData
    as it downloads."""
    local = local_path(root)
    if local is None:
        return
    info = read_info(local)
    names = list(info["buckets"]) if buckets is None else list(buckets)
    for folder in [*names, *([TEXT_DIR] if info.get("text", {}).get("captions") else [])]:
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

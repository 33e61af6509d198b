"""The joint step of an encode: the finished work units under ``parts/`` become one LitData dataset per bucket, one
caption table and ``info.json`` (:func:`merge`). Shard files are hard-linked into the bucket folders (copied where
the file system has no hard links); rerunning the merge rebuilds the same dataset."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from vidgen.data.shards import FORMAT, INFO_FILE, TEXT_DIR, VERSION
from vidgen.errors import ShardError
from vidgen.text import DEFAULT_TEXT_ENCODER


def _worker_indexes(folder: Path) -> tuple[list[dict], Optional[dict]]:
    """The chunks and config the LitData writer of ``folder`` recorded (its per-writer ``N.index.json`` files)."""
    chunks, config = [], None
    for index in sorted(p for p in folder.glob("*.index.json")):
        data = json.loads(index.read_text())
        chunks += data["chunks"]
        config = config or data["config"]
    return chunks, config


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_index(folder: Path, chunks: list[dict], config: dict) -> None:
    tmp = folder / ".index.json.tmp"
    tmp.write_text(json.dumps({"chunks": chunks, "config": config, "updated_at": "0"}))
    os.replace(tmp, folder / "index.json")


def _merge_bucket(out: Path, name: str, units: list[Path]) -> None:
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    chunks_all, config_all = [], None
    for unit in units:
        if not (unit / name).is_dir():
            continue
        chunks, config = _worker_indexes(unit / name)
        if config_all is not None and config != config_all:
            raise ShardError(f"{unit / name}: its shards were written with another layout than the other units'")
        config_all = config_all or config
        for chunk in chunks:
            linked = f"{unit.name}-{chunk['filename']}"
            _link(unit / name / chunk["filename"], folder / linked)
            chunks_all.append({**chunk, "filename": linked})
    _write_index(folder, chunks_all, config_all)


def _merge_text(out: Path, units: list[Path]) -> dict:
    """One row per distinct caption key (the first unit's), written as a new LitData dataset; the sorted keys and
    their rows as ``text_keys.npy`` / ``text_rows.npy``."""
    import litdata
    from litdata.streaming.writer import BinaryWriter
    folder = out / TEXT_DIR
    shutil.rmtree(folder, ignore_errors=True)
    writer = BinaryWriter(str(folder), chunk_bytes=64_000_000)
    rows: dict[int, int] = {}
    shapes = None
    for unit in units:
        if not (unit / TEXT_DIR).is_dir():
            continue
        chunks, config = _worker_indexes(unit / TEXT_DIR)
        _write_index(unit / TEXT_DIR, chunks, config)  # a unit's own index, so LitData reads it
        ds = litdata.StreamingDataset(str(unit / TEXT_DIR))
        for i in range(len(ds)):
            # bytes fields may read back as memoryviews (litdata without pyarrow), which its writer cannot store
            item = {k: bytes(v) if isinstance(v, (memoryview, bytearray)) else v for k, v in ds[i].items()}
            if item["key"] not in rows:
                rows[item["key"]] = len(rows)
                writer[len(rows) - 1] = item
                shapes = shapes or {k: len(item[k]) for k in ("hidden", "mask", "pooled")}
    writer.done()
    chunks, config = _worker_indexes(folder)
    _write_index(folder, chunks, config)
    keys = np.array(sorted(rows), dtype=np.int64)
    np.save(out / "text_keys.npy", keys)
    np.save(out / "text_rows.npy", np.array([rows[k] for k in keys.tolist()], dtype=np.int64))
    return {"captions": len(rows), "bytes": shapes}


def merge(out: Path, args: dict, tokenizer: dict, text_encoder: Optional[str], show: bool = True) -> dict:
    """Merge the finished units of the encode at ``out`` (all must be there) and write ``info.json``."""
    (out / INFO_FILE).unlink(missing_ok=True)
    n_units = -(-args["clips"] // args["chunk_size"])
    units = [out / "parts" / f"c{u:06d}" for u in range(n_units)]
    missing = [u.name for u in units if not (u / "done.json").is_file()]
    if missing:
        raise ShardError(f"{out}: work unit(s) {missing[:5]} not finished; rerun the encode to finish them")
    done = [json.loads((u / "done.json").read_text()) for u in units]
    names = sorted({n for d in done for n in d["counts"]})
    for name in tqdm(names, desc="merging buckets", disable=not show, dynamic_ncols=True):
        _merge_bucket(out, name, units)
    buckets = {}
    for name in args["buckets"]:
        shape = next((d["shapes"][name] for d in done if name in d["shapes"]), None)
        buckets[name] = {"clips": sum(d["counts"].get(name, 0) for d in done), "shape": shape}
    info = {"format": FORMAT, "version": VERSION, "library": "litdata", "source": args["source"],
            "clips": sum(b["clips"] for b in buckets.values()), "buckets": buckets, "tokenizer": tokenizer,
            "text_encoder": text_encoder if text_encoder is None else (text_encoder or DEFAULT_TEXT_ENCODER),
            "skipped": [s for d in done for s in d["skipped"]], "units": n_units}
    if text_encoder is not None:
        text = _merge_text(out, units)
        info["text"] = {"captions": text["captions"], "max_text_tokens": args["max_text_tokens"]}
        if text["bytes"]:
            m = args["max_text_tokens"]
            d = text["bytes"]["pooled"] // 4
            info["text"].update(hidden=[m, d], mask=[m], pooled=[d])
    tmp = out / f".{INFO_FILE}.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, out / INFO_FILE)  # last: the dataset is complete once info.json exists
    return info

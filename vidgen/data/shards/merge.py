"""The joint step of an encode: the finished work units under ``parts/`` become one LitData dataset per bucket, one
caption table and ``info.json`` (:func:`merge`).

A bucket's unit datasets are joined by ``litdata.merge_datasets`` (it copies their shard files) into a temporary folder
renamed into place; a bucket that one unit holds alone is that unit's dataset, moved. The units' copies are deleted
after each bucket, so the disk holds the dataset about once. The caption table keeps one row per distinct caption
(the first unit's), read and written again through :class:`~vidgen.data.shards.format.ShardWriter`: ``merge_datasets``
joins whole datasets and cannot drop a duplicate row. Every folder appears whole or not at all, so a merge killed
part-way is finished by a rerun; ``info.json`` comes last, then ``parts/`` is removed.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from vidgen.data.shards.format import (FORMAT, INFO_FILE, PARTS_DIR, TEXT_DIR, VERSION, ShardWriter, plain,
                                       write_json)
from vidgen.errors import ShardError
from vidgen.text import DEFAULT_TEXT_ENCODER


@contextlib.contextmanager
def _no_litdata_progress():
    """``litdata.merge_datasets`` draws a tqdm bar of its own; the merge shows one bar over the buckets instead."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def _merge_bucket(out: Path, name: str, units: list[Path]) -> None:
    """``out/name`` from the units' ``name`` datasets (skipped if a killed merge already put it in place)."""
    final = out / name
    if not final.is_dir():
        inputs = [u / name for u in units if (u / name).is_dir()]
        if not inputs:
            raise ShardError(f"{out / PARTS_DIR}: the work units record clips in bucket {name} but hold none of its "
                             f"shards; delete {out} and encode again")
        if len(inputs) == 1:
            os.replace(inputs[0], final)  # a whole LitData dataset already
        else:
            import litdata
            tmp = out / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                with _no_litdata_progress():
                    litdata.merge_datasets([str(p) for p in inputs], str(tmp), max_workers=4)
            except ValueError as err:  # LitData's own refusal, e.g. units written with different layouts
                raise ShardError(f"{out / PARTS_DIR}: the work units' {name} datasets cannot be joined ({err}); "
                                 f"delete {out} and encode again") from None
            os.replace(tmp, final)
    for unit in units:
        shutil.rmtree(unit / name, ignore_errors=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _merge_text(out: Path, units: list[Path], done: list[dict]) -> dict:
    """``out/text`` with one row per distinct caption key (the first unit's), and ``text_keys.npy`` /
    ``text_rows.npy``: the sorted keys and the row of each. Returns ``{captions, bytes of each field or None}``."""
    import litdata
    rows, first = {}, []  # caption key -> row of text/; (unit, row in the unit's text/) of each row
    for unit, d in zip(units, done):
        for i, key in enumerate(d["captions"]):
            if key not in rows:
                rows[key] = len(first)
                first.append((unit, i))
    final = out / TEXT_DIR
    if first and not final.is_dir():
        tmp = out / f".{TEXT_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        writer, source = ShardWriter(tmp), (None, None)
        for unit, i in first:
            if source[0] != unit:
                source = (unit, litdata.StreamingDataset(str(unit / TEXT_DIR)))
            writer.add(plain(source[1][i]))  # by global index: len() of a StreamingDataset is a rank's share
        writer.close()
        keys = np.array(sorted(rows), dtype=np.int64)
        _save_npy(out / "text_keys.npy", keys)
        _save_npy(out / "text_rows.npy", np.array([rows[k] for k in keys.tolist()], dtype=np.int64))
        os.replace(tmp, final)
    for unit in units:
        shutil.rmtree(unit / TEXT_DIR, ignore_errors=True)
    if not first:
        return {"captions": 0, "bytes": None}
    item = litdata.StreamingDataset(str(final))[0]
    return {"captions": len(rows), "bytes": {k: len(item[k]) for k in ("hidden", "mask", "pooled")}}


def merge(out: Path, args: dict, tokenizer: dict, text_encoder: Optional[str], show: bool = True) -> dict:
    """Merge the finished units of the encode at ``out`` (all must be there), write ``info.json`` and remove
    ``parts/``; returns the info. ``args``: the encode's (``clips``, ``chunk_size``, ``buckets``, ``source``,
    ``max_text_tokens``); ``tokenizer``: its record in the info."""
    out = Path(out)
    (out / INFO_FILE).unlink(missing_ok=True)
    n_units = -(-args["clips"] // args["chunk_size"])
    units = [out / PARTS_DIR / f"c{u:06d}" for u in range(n_units)]
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
    if args.get("first_frames"):
        info["first_frames"] = True  # each clip's frame 0 as an (H, W, 3) uint8 image (the items' ``first``)
    if text_encoder is not None:
        text = _merge_text(out, units, done)
        info["text"] = {"captions": text["captions"], "max_text_tokens": args["max_text_tokens"]}
        if text["bytes"]:
            m, d = args["max_text_tokens"], text["bytes"]["pooled"] // 4  # float32
            info["text"].update(hidden=[m, d], mask=[m], pooled=[d])
    write_json(out / INFO_FILE, info)  # last: the dataset is complete once info.json exists
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
    return info

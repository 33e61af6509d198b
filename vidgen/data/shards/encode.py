"""Encode a video folder or manifest into a bucketed shard dataset, in work units that a killed encode resumes.

    info = encode_shards(source, to_tokens, out, tokenizer={"fingerprint": ..., "kind": "latents", "dtype": ...})
    # to_tokens: video (B, 3, T, H, W) in [-1, 1] -> tokens (B, C, t, h, w) latents or (B, t, h, w) ids

The caller owns the tokenizer: ``to_tokens`` runs it (``functools.partial(vidgen.tokenizers.video_to_tokens, tok)``
from ``vidgen.training.encode_dataset``) and ``tokenizer`` is its record for ``info.json``. The clips
(:func:`~vidgen.data.shards.sources.list_source`) are split into work units of ``chunk_size`` source clips, in source
order; under ``accelerate launch`` process ``rank`` takes units ``rank, rank + world, ...``. In a unit, DataLoader
workers probe and decode each clip at its bucket's shape (:func:`~vidgen.data.shards.buckets.assign_bucket`: resize to
cover, center crop, never pad); the process turns them into tokens in batches per bucket and writes one LitData
dataset per bucket, plus the embeddings of the unit's distinct captions, into ``parts/.cNNNNNN.tmp``, renamed to
``parts/cNNNNNN`` when the unit is complete. A rerun with the same arguments skips finished units, so a killed encode
continues and every readable clip is encoded exactly once, also with another process count; a rerun of a finished
encode returns its info. Unreadable, empty, missing and too-short clips are recorded with their reason, never dropped
silently. Last, the main process merges the units (:mod:`~vidgen.data.shards.merge`) and writes ``info.json``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm import tqdm

from vidgen.data.shards.buckets import DEFAULT_BUCKETS, assign_bucket, parse_buckets
from vidgen.data.shards.format import (ARGS_FILE, DTYPES, INFO_FILE, PARTS_DIR, TEXT_DIR, ShardWriter, caption_key,
                                       read_info, to_bytes, write_json)
from vidgen.data.shards.sources import SourceClip, list_source
from vidgen.errors import ConfigError, VidgenError
from vidgen.io import probe_video, read_video

TOKENIZER_FIELDS = ("fingerprint", "path", "kind", "dtype", "class")  # the tokenizer's record in info.json


def process_state():
    """This process's place in an ``accelerate launch`` (gloo across CPU processes when there is no GPU)."""
    from accelerate import PartialState
    return PartialState(cpu=not torch.cuda.is_available())


class DecodeClips(torch.utils.data.Dataset):
    """Worker side of the encode: probe a clip, choose its bucket, decode it there; ``{"skip": reason}`` when the
    clip cannot be used. An item: ``{"index", "bucket", "video": (3, T, H, W) in [-1, 1]}``."""

    def __init__(self, clips: list[SourceClip], buckets):
        self.clips, self.buckets = clips, buckets

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        clip = self.clips[i]
        try:
            if not Path(clip.path).exists():
                return {"index": i, "skip": "missing: no such file or folder"}
            if Path(clip.path).is_file() and Path(clip.path).stat().st_size == 0:
                return {"index": i, "skip": "empty file"}
            info = probe_video(clip.path)
            start = 0 if clip.start is None else int(round(clip.start * info.fps))
            end = info.num_frames if clip.end is None else min(info.num_frames, int(round(clip.end * info.fps)))
            bucket, reason = assign_bucket(end - start, info.height, info.width, self.buckets)
            if bucket is None:
                return {"index": i, "skip": reason}
            video, _ = read_video(clip.path, num_frames=bucket.frames, start=start, size=(bucket.height, bucket.width))
            return {"index": i, "bucket": bucket.name, "video": video}
        except VidgenError as err:
            return {"index": i, "skip": f"unreadable: {err}"}
        except Exception as err:  # noqa: BLE001  (a decoder's own error on a damaged file: recorded, not raised)
            return {"index": i, "skip": f"unreadable: {type(err).__name__}: {err}"}


class _Unit:
    """One work unit being written: a writer and a pending batch per bucket, the distinct captions."""

    def __init__(self, folder: Path, to_tokens: Callable, dtype: str, batch: int, first_frames: bool = False):
        self.folder, self.to_tokens, self.dtype, self.batch = folder, to_tokens, dtype, batch
        self.first_frames = first_frames
        self.writers: dict[str, ShardWriter] = {}
        self.pending, self.shapes, self.captions = {}, {}, {}

    def add(self, name: str, video: torch.Tensor, clip: SourceClip) -> None:
        self.pending.setdefault(name, []).append((video, clip))
        if len(self.pending[name]) >= self.batch:
            self.flush(name)

    def flush(self, name: str) -> None:
        items = self.pending.pop(name, [])
        if not items:
            return
        with torch.no_grad():
            x = self.to_tokens(torch.stack([v for v, _ in items])).cpu()  # (B, *token shape)
        if name not in self.writers:
            self.writers[name] = ShardWriter(self.folder / name)
        self.shapes[name] = list(x.shape[1:])
        for row, (video, clip) in zip(x, items):
            key = caption_key(clip.caption)
            item = {"x": to_bytes(row, self.dtype), "text_key": key, "key": clip.key, "caption": clip.caption}
            if self.first_frames:
                item["first"] = first_frame_bytes(video)
            self.writers[name].add(item)
            self.captions.setdefault(key, clip.caption)

    def finish(self, text) -> list[int]:
        """Flush and close every bucket; write the captions' embeddings. Returns the caption keys in row order."""
        for name in list(self.pending):
            self.flush(name)
        for writer in self.writers.values():
            writer.close()
        if text is None or not self.captions:
            return []
        tok, enc, max_tokens = text
        from vidgen.text import encode_prompts
        keys = sorted(self.captions)
        emb = encode_prompts(tok, enc, [self.captions[k] for k in keys], max_tokens)
        writer = ShardWriter(self.folder / TEXT_DIR)
        for i, key in enumerate(keys):
            writer.add({"key": key, "hidden": to_bytes(emb.hidden[i].float(), "float32"),  # (M, D)
                        "mask": to_bytes(emb.mask[i].int(), "int32"),  # (M,)
                        "pooled": to_bytes(emb.pooled[i].float(), "float32")})  # (D,)
        writer.close()
        return keys


def first_frame_bytes(video: torch.Tensor) -> bytes:
    """A clip's frame 0 (``video`` (3, T, H, W) in [-1, 1]) as the RGB image a user passes as ``image=``: (H, W, 3)
    uint8 bytes."""
    frame = ((video[:, 0].float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return frame.permute(1, 2, 0).contiguous().numpy().tobytes()


def _check_args(out: Path, args: dict) -> None:
    path = out / ARGS_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        differ = sorted(k for k in set(before) | set(args) if before.get(k) != args.get(k))
        if differ:
            changes = ", ".join(f"{k}: {before.get(k)!r} -> {args.get(k)!r}" for k in differ)
            raise ConfigError(f"{out}: holds an encode with other settings ({changes}); rerun with the same "
                              f"arguments to continue it, or give another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, args)  # every process alike: each writes the same file atomically


def _check_tokenizer(tokenizer: dict) -> None:
    missing = [k for k in TOKENIZER_FIELDS if k not in tokenizer]
    if missing:
        raise ConfigError(f"tokenizer: the record of the tokenizer lacks {missing}; it needs {list(TOKENIZER_FIELDS)}")
    if tokenizer["dtype"] not in DTYPES:
        raise ConfigError(f"tokenizer dtype {tokenizer['dtype']!r}: tokens are stored as one of {sorted(DTYPES)}")


def encode_shards(source: str | Path, to_tokens: Callable[[torch.Tensor], torch.Tensor], out: str | Path,
                   tokenizer: dict, buckets=DEFAULT_BUCKETS, text_encoder: Optional[str] = "",
                   max_text_tokens: int = 16, batch_size: int = 8, num_workers: int = 2, chunk_size: int = 256,
                   show_progress: bool = True, first_frames: bool = False) -> dict:
    """Encode ``source`` (a video folder or a CSV / JSONL / Parquet manifest) with ``to_tokens`` into a shard dataset
    at ``out``; returns its ``info.json`` contents (see :mod:`vidgen.data.shards.format`).

    ``tokenizer``: ``{fingerprint, path, kind ("ids" or "latents"), dtype (how tokens are stored: a key of
    DTYPES), class}``. ``text_encoder``: ``""`` the default (all-MiniLM-L6-v2), a folder, or ``None`` / ``"none"``
    for unconditional data. ``first_frames``: also store each clip's frame 0 as an RGB image (``first``: (H, W, 3)
    uint8), the image an image-to-video model is fine-tuned on. Runs on every process of an ``accelerate launch``
    (each encodes its share)."""
    if not isinstance(chunk_size, int) or chunk_size < 1 or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"chunk_size and batch_size must be ints >= 1, got {chunk_size!r}, {batch_size!r}")
    _check_tokenizer(tokenizer)
    state = process_state()
    out, bucket_list = Path(out), parse_buckets(buckets, "buckets")
    text_name = None if text_encoder in (None, "none") else text_encoder
    clips = list_source(source)
    args = {"source": str(Path(source).resolve()), "clips": len(clips), "tokenizer": tokenizer["fingerprint"],
            "buckets": [b.name for b in bucket_list], "chunk_size": chunk_size, "dtype": tokenizer["dtype"],
            "text_encoder": text_name, "max_text_tokens": max_text_tokens}
    if first_frames:  # only when set: encodes of earlier versions continue with the same arguments
        args["first_frames"] = True
    _check_args(out, args)
    if (out / INFO_FILE).is_file():  # finished before: nothing to do
        state.wait_for_everyone()
        return read_info(out)
    parts = out / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    units = [u for u in range(state.process_index, -(-len(clips) // chunk_size), state.num_processes)
             if not (parts / f"c{u:06d}").is_dir()]
    text = None
    if text_name is not None and units:
        from vidgen.text import load_text_encoder
        text = (*load_text_encoder(text_name or None), max_text_tokens)
    bar = tqdm(total=sum(len(clips[u * chunk_size:(u + 1) * chunk_size]) for u in units), desc="encoding clips",
               disable=not (show_progress and state.is_main_process), dynamic_ncols=True)
    for u in units:
        _encode_unit(u, clips[u * chunk_size:(u + 1) * chunk_size], parts, to_tokens, bucket_list,
                     tokenizer["dtype"], batch_size, num_workers, text, bar, first_frames)
    bar.close()
    state.wait_for_everyone()
    info = None
    if state.is_main_process:
        from vidgen.data.shards.merge import merge
        info = merge(out, args, {k: tokenizer[k] for k in TOKENIZER_FIELDS}, text_name, show_progress)
    state.wait_for_everyone()
    return info if info is not None else read_info(out)


def _as_is(item):
    return item


def _encode_unit(u: int, clips: list[SourceClip], parts: Path, to_tokens: Callable, buckets, dtype: str, batch: int,
                 num_workers: int, text, bar, first_frames: bool = False) -> None:
    tmp, final = parts / f".c{u:06d}.tmp", parts / f"c{u:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    unit, skipped = _Unit(tmp, to_tokens, dtype, batch, first_frames), []
    loader = torch.utils.data.DataLoader(DecodeClips(clips, buckets), batch_size=None, num_workers=num_workers,
                                         collate_fn=_as_is)
    for item in loader:
        clip = clips[item["index"]]
        if "skip" in item:
            skipped.append({"key": clip.key, "path": clip.path, "reason": item["skip"]})
        else:
            unit.add(item["bucket"], item["video"], clip)
        bar.update(1)
    captions = unit.finish(text)
    counts = {name: writer.count for name, writer in unit.writers.items()}
    write_json(tmp / "done.json", {"unit": u, "clips": len(clips), "counts": counts, "shapes": unit.shapes,
                                   "captions": captions, "skipped": skipped})
    os.replace(tmp, final)  # the unit counts as encoded only once complete

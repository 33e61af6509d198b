"""Encode a video folder or manifest into a bucketed shard dataset (``vidgen data encode``).

The clips are split into work units of ``chunk_size`` source clips, in source order; under ``accelerate launch``
process ``rank`` takes units ``rank, rank + world, ...``. In a unit, DataLoader workers probe and decode each clip at
its bucket's shape (:func:`vidgen.data.assign_bucket`: resize to cover, center crop, never pad); the process encodes
them in batches per bucket and writes one LitData dataset per bucket, plus the embeddings of the unit's distinct
captions, into ``parts/.cNNNNNN.tmp``, renamed to ``parts/cNNNNNN`` when the unit is complete. A rerun with the same
arguments skips finished units, so a killed encode continues and every readable clip is encoded exactly once, also
with another process count. Unreadable, empty, missing and too-short clips are recorded with their reason, never
dropped silently. Last, the main process merges the units' indexes into one dataset per bucket (shard files are
hard-linked, not copied), deduplicates the captions and writes ``info.json``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from vidgen.data.buckets import DEFAULT_BUCKETS, assign_bucket, parse_buckets
from vidgen.data.shards import DTYPES, FORMAT, INFO_FILE, TEXT_DIR, VERSION, caption_key, to_bytes
from vidgen.data.sources import SourceClip, list_source
from vidgen.errors import ConfigError, VidgenError
from vidgen.io import probe_video, read_video

ARGS_FILE = "encode.json"
SHARD_BYTES = 64_000_000


class DecodeClips(torch.utils.data.Dataset):
    """Worker side of the encode: probe a clip, choose its bucket, decode it there; ``{"skip": reason}`` when the
    clip cannot be used."""

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


@torch.no_grad()
def encode_clips(tokenizer, video: torch.Tensor) -> torch.Tensor:
    """What a generator trains on: ids for a discrete tokenizer, normalized posterior-mode latents otherwise."""
    from vidgen.tokenizers import is_discrete
    video = video.to(tokenizer.device, tokenizer.dtype)
    if is_discrete(tokenizer):
        return tokenizer.tokenize(video)
    return tokenizer.normalize_latents(tokenizer.encode(video).latent_dist.mode())


def _writer(folder: Path):
    from litdata.streaming.writer import BinaryWriter
    folder.mkdir(parents=True, exist_ok=True)
    return BinaryWriter(str(folder), chunk_bytes=SHARD_BYTES)


class _Unit:
    """One work unit being written: a writer and a pending batch per bucket, the distinct captions."""

    def __init__(self, folder: Path, tokenizer, dtype: str, batch: int):
        self.folder, self.tokenizer, self.dtype, self.batch = folder, tokenizer, dtype, batch
        self.writers, self.pending, self.counts, self.shapes, self.captions = {}, {}, {}, {}, {}

    def add(self, name: str, video: torch.Tensor, clip: SourceClip) -> None:
        self.pending.setdefault(name, []).append((video, clip))
        if len(self.pending[name]) >= self.batch:
            self.flush(name)

    def flush(self, name: str) -> None:
        items = self.pending.pop(name, [])
        if not items:
            return
        x = encode_clips(self.tokenizer, torch.stack([v for v, _ in items])).cpu()
        if name not in self.writers:
            self.writers[name], self.counts[name] = _writer(self.folder / name), 0
        self.shapes[name] = list(x.shape[1:])
        for row, (_, clip) in zip(x, items):
            self.writers[name][self.counts[name]] = {"x": to_bytes(row, self.dtype), "text_key": caption_key(clip.caption),
                                                     "key": clip.key, "caption": clip.caption}
            self.counts[name] += 1
            self.captions.setdefault(caption_key(clip.caption), clip.caption)

    def finish(self, text) -> None:
        for name in list(self.pending):
            self.flush(name)
        for writer in self.writers.values():
            writer.done()
        if text is not None and self.captions:
            tok, enc, max_tokens = text
            from vidgen.text import encode_prompts
            keys = sorted(self.captions)
            emb = encode_prompts(tok, enc, [self.captions[k] for k in keys], max_tokens)
            writer = _writer(self.folder / TEXT_DIR)
            for i, key in enumerate(keys):
                writer[i] = {"key": key, "hidden": to_bytes(emb.hidden[i].float(), "float32"),
                             "mask": to_bytes(emb.mask[i].int(), "int32"), "pooled": to_bytes(emb.pooled[i].float(), "float32")}
            writer.done()


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
        tmp = path.with_name(f".{ARGS_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(args, indent=2))
        os.replace(tmp, path)


def encode_dataset(source: str | Path, tokenizer: str | Path, out: str | Path, buckets=DEFAULT_BUCKETS,
                   text_encoder: Optional[str] = "", max_text_tokens: int = 16, batch_size: int = 8,
                   num_workers: int = 2, chunk_size: int = 256, dtype: Optional[str] = None,
                   show_progress: bool = True) -> dict:
    """Encode ``source`` (a video folder or a CSV / JSONL / Parquet manifest) with the tokenizer saved at
    ``tokenizer`` into a shard dataset at ``out``; returns its ``info.json`` contents (see :mod:`vidgen.data.shards`).

    ``text_encoder``: ``""`` the default (all-MiniLM-L6-v2), a folder, or ``None`` / ``"none"`` for unconditional
    data. ``dtype``: how latents are stored (default ``bfloat16``; ids are stored as ``int16`` or ``int32``).
    Runs on every process of an ``accelerate launch`` (each encodes its share), on the GPU when there is one."""
    from accelerate import PartialState

    from vidgen.tokenizers import is_discrete, load_tokenizer
    from vidgen.training.encode_cache import tokenizer_fingerprint
    state = PartialState(cpu=not torch.cuda.is_available())  # gloo across CPU processes
    out, bucket_list = Path(out), parse_buckets(buckets, "buckets")
    if not isinstance(chunk_size, int) or chunk_size < 1 or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"chunk_size and batch_size must be ints >= 1, got {chunk_size!r}, {batch_size!r}")
    tok = load_tokenizer(tokenizer).to(state.device)
    discrete = is_discrete(tok)
    if discrete:
        if dtype is not None:
            raise ConfigError(f"dtype={dtype!r}: {tokenizer} is a discrete tokenizer, whose ids are stored as int16 "
                              f"or int32; dtype applies to a VAE's latents")
        dtype = "int16" if tok.vocab_size <= 32767 else "int32"
    elif (dtype or "bfloat16") not in ("bfloat16", "float16", "float32"):
        raise ConfigError(f"dtype must be bfloat16, float16 or float32 for latents, got {dtype!r}")
    dtype = dtype or "bfloat16"
    text_name = None if text_encoder in (None, "none") else text_encoder
    clips = list_source(source)
    fingerprint = tokenizer_fingerprint(tok)
    args = {"source": str(Path(source).resolve()), "clips": len(clips), "tokenizer": fingerprint,
            "buckets": [b.name for b in bucket_list], "chunk_size": chunk_size, "dtype": dtype,
            "text_encoder": text_name, "max_text_tokens": max_text_tokens}
    _check_args(out, args)  # every process alike: the first writes encode.json (atomically, all write the same)
    parts = out / "parts"
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
        _encode_unit(u, clips[u * chunk_size:(u + 1) * chunk_size], parts, tok, bucket_list, dtype, batch_size,
                     num_workers, text, bar)
    bar.close()
    state.wait_for_everyone()
    info = None
    if state.is_main_process:
        from vidgen.training.shard_merge import merge
        info = merge(out, args, {"fingerprint": fingerprint, "path": str(tokenizer), "kind": "ids" if discrete
                                 else "latents", "dtype": dtype, "class": type(tok).__name__},
                     text_name, show_progress)
    state.wait_for_everyone()
    return info if info is not None else json.loads((out / INFO_FILE).read_text())


def _as_is(item):
    return item


def _encode_unit(u: int, clips: list[SourceClip], parts: Path, tok, buckets, dtype: str, batch: int,
                 num_workers: int, text, bar) -> None:
    tmp, final = parts / f".c{u:06d}.tmp", parts / f"c{u:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    unit, skipped = _Unit(tmp, tok, dtype, batch), []
    loader = torch.utils.data.DataLoader(DecodeClips(clips, buckets), batch_size=None, num_workers=num_workers,
                                         collate_fn=_as_is)
    for item in loader:
        clip = clips[item["index"]]
        if "skip" in item:
            skipped.append({"key": clip.key, "path": clip.path, "reason": item["skip"]})
        else:
            unit.add(item["bucket"], item["video"], clip)
        bar.update(1)
    unit.finish(text)
    done = {"unit": u, "clips": len(clips), "counts": unit.counts, "shapes": unit.shapes, "skipped": skipped}
    (tmp / "done.json").write_text(json.dumps(done))
    os.replace(tmp, final)  # the unit counts as encoded only once complete


def dataset_summary(info: dict) -> str:
    """The one-line summary of an encode: clips per bucket and skipped files by reason."""
    per = ", ".join(f"{n}: {b['clips']}" for n, b in info["buckets"].items())
    reasons: dict[str, int] = {}
    for s in info["skipped"]:
        kind = s["reason"].split(":")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    why = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
    return f"{info['clips']} clips encoded ({per}); {len(info['skipped'])} skipped" + (f" ({why})" if why else "")


__all__ = ["DTYPES", "FORMAT", "VERSION", "dataset_summary", "encode_clips", "encode_dataset"]

"""The training side of shard datasets (:mod:`vidgen.data.shards`): encode with a saved tokenizer, and a run's batches.

:func:`encode_dataset` (``vidgen data encode``) loads the tokenizer, decides how its tokens are stored and hands
``functools.partial(video_to_tokens, tokenizer)`` to :func:`vidgen.data.shards.encode_shards`. :func:`shard_batches`
checks a dataset against a run (tokenizer fingerprint, ids or latents, text encoder and its token count) and builds
the run's :class:`~vidgen.data.shards.ShardBatches` from the ``data`` config.

``data.buckets`` selects buckets and sets their batch sizes and probabilities: entries ``"17x64x64"`` or
``{shape: 17x64x96, batch: 4, weight: 0.5}``. Without it every bucket of the dataset is used, with ``data.batch``
clips for the bucket of fewest tokens a clip and about as many tokens per batch for the others, drawn in proportion
to their clip counts. Once any entry has a ``weight``, the buckets are drawn by weight (an entry without one: never).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import torch

from vidgen.data.shards import (DEFAULT_BUCKETS, ShardBatches, ShardDataset, encode_shards, equal_token_batches,
                                parse_bucket, tokenizer_fingerprint)
from vidgen.data.shards.encode import process_state
from vidgen.errors import ConfigError, ShardError


def _token_dtype(tok, dtype: Optional[str], path) -> str:
    """How the tokens are stored: ids as int16 / int32 (by vocabulary), latents as ``dtype`` (default bfloat16)."""
    from vidgen.tokenizers import is_discrete
    if is_discrete(tok):
        if dtype is not None:
            raise ConfigError(f"dtype={dtype!r}: {path} is a discrete tokenizer, whose ids are stored as int16 "
                              f"or int32; dtype applies to a VAE's latents")
        return "int16" if tok.vocab_size <= 32767 else "int32"
    if (dtype or "bfloat16") not in ("bfloat16", "float16", "float32"):
        raise ConfigError(f"dtype must be bfloat16, float16 or float32 for latents, got {dtype!r}")
    return dtype or "bfloat16"


def encode_dataset(source: str | Path, tokenizer: str | Path, out: str | Path, buckets=DEFAULT_BUCKETS,
                   text_encoder: Optional[str] = "", max_text_tokens: int = 16, batch_size: int = 8,
                   num_workers: int = 2, chunk_size: int = 256, dtype: Optional[str] = None,
                   show_progress: bool = True, first_frames: bool = False) -> dict:
    """Encode ``source`` (a video folder or a CSV / JSONL / Parquet manifest) with the tokenizer saved at
    ``tokenizer`` into a shard dataset at ``out``; returns its ``info.json`` contents (see
    :mod:`vidgen.data.shards.format`).

    ``text_encoder``: ``""`` the default (all-MiniLM-L6-v2), a folder, or ``None`` / ``"none"`` for unconditional
    data. ``dtype``: how latents are stored (default ``bfloat16``; ids are stored as ``int16`` or ``int32``).
    ``first_frames``: also keep each clip's frame 0 (image-to-video fine-tuning builds its condition from it).
    Runs on every process of an ``accelerate launch`` (each encodes its share), on the GPU when there is one."""
    from vidgen.tokenizers import is_discrete, load_tokenizer, video_to_tokens
    tok = load_tokenizer(tokenizer).to(process_state().device)
    record = {"fingerprint": tokenizer_fingerprint(tok), "path": str(tokenizer),
              "kind": "ids" if is_discrete(tok) else "latents", "dtype": _token_dtype(tok, dtype, tokenizer),
              "class": type(tok).__name__}
    return encode_shards(source, functools.partial(video_to_tokens, tok), out, record, buckets=buckets,
                         text_encoder=text_encoder, max_text_tokens=max_text_tokens, batch_size=batch_size,
                         num_workers=num_workers, chunk_size=chunk_size, show_progress=show_progress,
                         first_frames=first_frames)


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


def shard_batches(data_cfg, fingerprint: str, discrete: bool, seed: int, rank: int, world: int, log=print,
                  first_frames: bool = False):
    """The :class:`~vidgen.data.shards.ShardBatches` of a generator run's ``data`` section (``dataset: shards``),
    checked against the run: the tokenizer's fingerprint, ids or latents, the text encoder and its token count.
    ``first_frames``: the batches carry each clip's frame 0 (an image-to-video run; ``data.root`` must hold them)."""
    from vidgen.generators import Conditioning
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
    shapes = {n: tuple(b["shape"] or ()) for n, b in info["buckets"].items()}
    names, batches, weights = bucket_settings(list(data_cfg.buckets), {n: b["clips"] for n, b in
                                              info["buckets"].items()}, shapes, data_cfg.batch, data_cfg.root)
    ds = ShardDataset(data_cfg.root, fingerprint=fingerprint, buckets=names, check=False) \
        if names != ds.names else ds
    log(f"shards {data_cfg.root}: {len(ds)} clips in buckets " +
        ", ".join(f"{n} ({ds.counts[n]} clips, batch {batches[n]})" for n in names))
    return ShardBatches(ds, batches, seed, weights, rank, world, data_cfg.conditioning, ids=discrete,
                        condition=Conditioning, first_frames=first_frames)

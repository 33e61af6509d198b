#!/usr/bin/env python
"""Data memory at scale (``docs/scale.md``, "Data memory at scale"): what the shard index, the samplers and a
training run hold as the clip count grows.

* **Structures, per clip count** (1,000, 100,000 and 10,000,000 clips; one fresh process each). The datasets are
  synthetic but in the real format: one bucket of 17x64x64 clips stored as in ``eval/bench_data.py`` (16x5x8x8 bf16
  latents, LitData shards of 64 MB, 6,234 clips a shard), every full shard a link to one real shard file and the last
  shard written with the remaining clips, plus a caption table with one distinct caption per clip
  (``text_keys.npy`` / ``text_rows.npy``, 16 bytes a caption on disk). Nothing but the index and the caption table
  grows with the count, so 10 M clips need no 100 GB of shards. Measured:

  - ``index``: opening a :class:`~vidgen.data.shards.ShardDataset` (its shard check, LitData's index, the caption
    table) and reading 200 batches of 16 clips with their captions at random;
  - ``sampler``: a :class:`~vidgen.data.shards.BucketBatchSampler` (batch 16) drawing 5,000 batches, then an epoch
    boundary (a new permutation while the old one is held), and its ``state_dict()`` (what a checkpoint keeps);
  - ``loader``: :class:`~vidgen.data.shards.ShardBatches` (the sampler in its prefetch thread, reading the shards)
    delivering 200 batches;
  - ``epoch_sampler``: :class:`vidgen.training.data.EpochSampler`, the trainers' sampler for in-memory datasets and
    caches (not for shards), drawing batches of 16.

  Each phase records the Python heap it holds and its peak (``tracemalloc``), the bytes of the tensors it holds
  (torch allocates outside ``tracemalloc``'s view) and the process's RSS (anonymous and file-backed) before, after
  and at its peak (``VmHWM``, reset at the start of the phase through ``/proc/self/clear_refs``). The read rates, the
  epoch sampler's time and its RSS are measured again with ``tracemalloc`` off (it slows allocations several times
  over and its own records add to the RSS).
* **A training run that reads more than 10,000 clips.** The ``tiny`` flow generator on a tiny CausalVAE's latents
  (9x32x32 clips, token grid 3x4x4) from a 5,000-clip shard dataset: 500 steps of batch 32 = 16,000 clips read, so
  the run crosses three epoch boundaries. The process's RSS, its peak since the reading before (``VmHWM``, reset at
  each reading), Python heap (``tracemalloc``) and live Python objects every 5 % of the run; checkpoints every 125
  steps, as a real run writes them.

    python eval/bench_data_memory.py          # -> docs/results/bench_data_memory.json (about 10 minutes, one core)
    python eval/bench_data_memory.py --quick  # small counts and a short run, for the test (nothing in docs/)
    python eval/bench_data_memory.py --table  # print the docs/scale.md table from the results file
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.results import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "bench_data_memory.json"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
BUCKET, SHAPE = "17x64x64", (16, 5, 8, 8)  # eval/bench_data.py's clips: 17x64x64 through the natural VAE
TEXT = (16, 384)  # a caption's embeddings: (tokens, width) of the default text encoder, 16 tokens
KEY_STRIDE = 7_919  # caption keys are multiples of this (sorted, distinct)
FULL = {"counts": [1_000, 100_000, 10_000_000], "shard_bytes": None, "draws": 5_000, "reads": 200, "epoch_draws": 5,
        "train": {"clips": 5_000, "batch": 32, "steps": 500, "ckpt_every": 125}}
QUICK = {"counts": [1_000, 20_000], "shard_bytes": 1_000_000, "draws": 200, "reads": 10, "epoch_draws": 3,
         "train": {"clips": 200, "batch": 8, "steps": 20, "ckpt_every": 10}}
BATCH = 16
TRAIN_BUCKET = "9x32x32"  # token grid (3, 4, 4) through the tiny CausalVAE


# ---------------------------------------------------------------------------------------------------- memory readings
def proc_mem() -> dict:
    """This process's RSS, its anonymous and file-backed parts, and its peak (``VmHWM``), in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) * 1024
    return out


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs``) and ``tracemalloc``'s peak; False if the kernel
    refused (then the phase's RSS peak is the process's peak so far)."""
    if tracemalloc.is_tracing():
        tracemalloc.reset_peak()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Phase:
    """What the process holds and peaks at between ``Phase()`` and :meth:`end`, relative to its start."""

    def __init__(self):
        gc.collect()
        self.peak_reset = reset_peak()
        self.mem0, self.py0, self.t0 = proc_mem(), tracemalloc.get_traced_memory()[0], time.perf_counter()

    def end(self, **extra) -> dict:
        py, py_peak = tracemalloc.get_traced_memory()
        mem = proc_mem()
        return {"python_held": py - self.py0, "python_peak": py_peak - self.py0,
                "rss_delta": mem["VmRSS"] - self.mem0["VmRSS"], "anon_delta": mem["RssAnon"] - self.mem0["RssAnon"],
                "file_delta": mem["RssFile"] - self.mem0["RssFile"],
                "rss_peak_delta": mem["VmHWM"] - self.mem0["VmRSS"] if self.peak_reset else None,
                "seconds": time.perf_counter() - self.t0, **extra}


def state_sizes(state: dict) -> dict:
    """Bytes of a sampler's ``state_dict()`` as JSON, as a pickle and through ``torch.save`` (as in a checkpoint)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return {"json": len(json.dumps(state)), "pickle": len(pickle.dumps(state)), "torch_save": buf.tell()}


# ------------------------------------------------------------------------------------------------ synthetic datasets
def _item(i: int, x: bytes) -> dict:
    return {"x": x, "text_key": (i + 1) * KEY_STRIDE, "key": f"synthetic/{i:08d}", "caption": ""}


def _write_chunk(folder: Path, first: int, n: int, shard_bytes: int) -> dict:
    """``n`` synthetic clips (from index ``first``) as a LitData dataset at ``folder``; its ``index.json``."""
    from vidgen.data.shards.format import ShardWriter, to_bytes
    g = torch.Generator().manual_seed(first)
    pool = [to_bytes(torch.randn(SHAPE, generator=g), "bfloat16") for _ in range(16)]
    writer = ShardWriter(folder, shard_bytes)
    for i in range(n):
        writer.add(_item(first + i, pool[i % len(pool)]))
    writer.close()
    return json.loads((folder / "index.json").read_text())


def base_dataset(work: Path, shard_bytes: int | None = None) -> dict:
    """One full shard (of ``shard_bytes``, default the encode's ``SHARD_BYTES``) of synthetic clips and a one-row
    caption table, which every count's dataset links to; returns ``{index, shard, clips_a_shard, text,
    shard_bytes}``."""
    from vidgen.data.shards.format import SHARD_BYTES, ShardWriter
    shard_bytes = shard_bytes or SHARD_BYTES
    per_clip = 1 + int(np.prod(SHAPE)) * 2 + 64  # about a clip's bytes in a shard
    index = _write_chunk(work / "base" / BUCKET, 0, int(1.2 * shard_bytes / per_clip), shard_bytes)
    full = index["chunks"][0]
    writer = ShardWriter(work / "base" / "text")
    writer.add({"key": KEY_STRIDE, "hidden": np.zeros(TEXT, np.float32).tobytes(),
                "mask": np.ones(TEXT[0], np.int32).tobytes(), "pooled": np.zeros(TEXT[1], np.float32).tobytes()})
    writer.close()
    return {"index": index, "shard": str(work / "base" / BUCKET / full["filename"]),
            "clips_a_shard": full["chunk_size"], "text": str(work / "base" / "text"), "shard_bytes": shard_bytes}


def scaled_dataset(root: Path, clips: int, base: dict) -> dict:
    """A dataset of ``clips`` clips at ``root``: full shards linked to the base shard, the rest written, and a caption
    table of ``clips`` distinct captions. Returns its on-disk index sizes."""
    from vidgen.data.shards.format import FORMAT, INFO_FILE, TEXT_DIR, VERSION, write_json
    from vidgen.text import DEFAULT_TEXT_ENCODER
    bucket = root / BUCKET
    bucket.mkdir(parents=True)
    per, template = base["clips_a_shard"], base["index"]["chunks"][0]
    full, rest = divmod(clips, per)
    chunks = []
    for k in range(full):
        (bucket / f"chunk-{k}.bin").symlink_to(base["shard"])
        chunks.append({**template, "filename": f"chunk-{k}.bin"})
    if rest:
        tail = _write_chunk(root / ".tail", full * per, rest, base["shard_bytes"])["chunks"]
        assert len(tail) == 1, tail
        os.replace(root / ".tail" / tail[0]["filename"], bucket / f"chunk-{full}.bin")
        chunks.append({**tail[0], "filename": f"chunk-{full}.bin"})
        shutil.rmtree(root / ".tail")
    (bucket / "index.json").write_text(json.dumps({**base["index"], "chunks": chunks}))
    text = root / TEXT_DIR
    text.mkdir()
    for f in Path(base["text"]).iterdir():
        (text / f.name).symlink_to(f)
    np.save(root / "text_keys.npy", np.arange(1, clips + 1, dtype=np.int64) * KEY_STRIDE)
    np.save(root / "text_rows.npy", np.zeros(clips, dtype=np.int64))  # every caption's embeddings: row 0
    write_json(root / INFO_FILE, {
        "format": FORMAT, "version": VERSION, "library": "litdata", "source": "synthetic", "clips": clips,
        "buckets": {BUCKET: {"clips": clips, "shape": list(SHAPE)}},
        "tokenizer": {"fingerprint": "f" * 16, "path": "synthetic", "kind": "latents", "dtype": "bfloat16",
                      "class": "CausalVAE"},
        "text_encoder": DEFAULT_TEXT_ENCODER,
        "text": {"captions": clips, "max_text_tokens": TEXT[0], "hidden": list(TEXT), "mask": [TEXT[0]],
                 "pooled": [TEXT[1]]},
        "skipped": [], "units": 1})
    return {"shards": len(chunks), "index_json_bytes": (bucket / "index.json").stat().st_size,
            "caption_table_bytes": sum((root / f).stat().st_size for f in ("text_keys.npy", "text_rows.npy"))}


# ---------------------------------------------------------------------------------------- one clip count (a process)
def measure_count(root: str, clips: int, draws: int, reads: int, epoch_draws: int) -> dict:
    """(In a fresh process, ``tracemalloc`` on) the phases of the module's description for the dataset at ``root``."""
    from vidgen.data.shards import BucketBatchSampler, ShardBatches, ShardDataset
    from vidgen.training.data import EpochSampler
    rng = random.Random(0)
    out = {"clips": clips, "baseline_rss": proc_mem()["VmRSS"]}

    # the index: open the dataset (shard check, LitData's index, caption table), read batches with their captions.
    # The first opening also imports LitData and fills its caches: measured, then dropped; the second is the index's.
    per = json.loads((Path(root) / BUCKET / "index.json").read_text())["chunks"][0]["chunk_size"]
    linked = clips // per * per if clips > per else 0  # clips in the shards linked to the base shard

    def key(i: int) -> int:  # the caption key clip i was written with
        return ((i % per if i < linked else i) + 1) * KEY_STRIDE

    for name in ("index_open_first", "index_open"):
        ds = None
        p = Phase()
        ds = ShardDataset(root)
        ds.clips(BUCKET, [0])
        ds.text([KEY_STRIDE])
        out[name] = p.end()
    p = Phase()
    for _ in range(reads):
        picks = [rng.randrange(clips) for _ in range(BATCH)]
        _, keys, _ = ds.clips(BUCKET, picks)
        assert keys == [key(i) for i in picks]
        ds.text([(rng.randrange(clips) + 1) * KEY_STRIDE for _ in range(BATCH)])  # anywhere in the caption table
    out["index_reads"] = p.end(clips_read=reads * BATCH)

    # the bucket sampler: one permutation a bucket, drawn from; then an epoch boundary
    p = Phase()
    sampler = BucketBatchSampler({BUCKET: clips}, {BUCKET: BATCH}, seed=0)
    sampler.take()
    perm_bytes = sum(t.nbytes for _, t in sampler._perms.values())
    out["sampler_build"] = p.end(tensor_bytes=perm_bytes)
    p = Phase()
    for _ in range(draws):
        sampler.take()
    out["sampler_draws"] = p.end(batches=draws, tensor_bytes=sum(t.nbytes for _, t in sampler._perms.values()))
    state = sampler.state_dict()
    out["sampler_state_dict"] = {**state_sizes(state), "state": state}
    step = sampler.step
    sampler.load_state_dict({"step": step, "positions": {BUCKET: [0, clips - BATCH]}})  # one batch to this epoch's end
    sampler.take()
    p = Phase()
    sampler.take()  # the first batch of the next epoch: a new permutation
    sampler.take()
    out["sampler_epoch_boundary"] = p.end(tensor_bytes=sum(t.nbytes for _, t in sampler._perms.values()),
                                          epoch=sampler.positions[BUCKET][0])
    del sampler

    # the loader: the sampler in the prefetch thread, reading the shards
    p = Phase()
    loader = ShardBatches(ds, {BUCKET: BATCH}, seed=0, conditioning="none")
    for _ in range(reads):
        loader.take_batch()
    held = p.end(clips_read=reads * BATCH)
    loader.close()
    out["loader"] = {**held, "state_dict": state_sizes(loader.state_dict())}
    del loader

    # rates, and the epoch sampler's RSS, without tracemalloc (which slows Python allocations several times over)
    tracemalloc.stop()
    t0 = time.perf_counter()
    for _ in range(reads):
        ds.clips(BUCKET, [rng.randrange(clips) for _ in range(BATCH)])
    out["index_reads"]["clips_per_s"] = reads * BATCH / (time.perf_counter() - t0)
    loader = ShardBatches(ds, {BUCKET: BATCH}, seed=1, conditioning="none")
    loader.take_batch()
    t0 = time.perf_counter()
    for _ in range(reads):
        loader.take_batch()
    out["loader"]["clips_per_s"] = reads * BATCH / (time.perf_counter() - t0)
    loader.close()
    del loader, ds

    # the trainers' sampler for in-memory datasets and caches: RSS and time untraced, then its Python heap traced
    epoch = EpochSampler(clips, seed=0)
    p = Phase()
    for _ in range(epoch_draws):
        epoch.take(BATCH)
    untraced = p.end()
    tracemalloc.start()
    p = Phase()
    for _ in range(epoch_draws):
        epoch.take(BATCH)
    out["epoch_sampler"] = {**p.end(batches=epoch_draws, state_dict=state_sizes(epoch.state_dict())),
                            "seconds_a_batch": untraced["seconds"] / epoch_draws,
                            "rss_peak_delta_untraced": untraced["rss_peak_delta"],
                            "rss_delta_untraced": untraced["rss_delta"]}
    return out


def run_child(args: list, timeout: float = 3600) -> dict:
    done = subprocess.run([sys.executable, __file__, *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------ training run
def training_data(work: Path, clips: int) -> tuple[Path, Path]:
    """A tiny perturbed CausalVAE saved at ``work/vae`` and ``clips`` synthetic latent clips of it in bucket
    ``TRAIN_BUCKET`` (written as an encode's work unit and merged by the encode's merge) at ``work/shards``."""
    from vidgen.data.shards import tokenizer_fingerprint
    from vidgen.data.shards.format import PARTS_DIR, ShardWriter, to_bytes, write_json
    from vidgen.data.shards.merge import merge
    from vidgen.testing import perturb_weights
    from vidgen.tokenizers import CausalVAE, load_tokenizer, video_to_tokens
    torch.manual_seed(0)
    perturb_weights(CausalVAE.from_preset("tiny"), scale=0.02).save_pretrained(work / "vae")
    tok = load_tokenizer(work / "vae")  # as the run loads it (its fingerprint)
    frames, height, width = (int(v) for v in TRAIN_BUCKET.split("x"))
    with torch.no_grad():
        shape = tuple(video_to_tokens(tok, torch.zeros(1, 3, frames, height, width)).shape[1:])
    g = torch.Generator().manual_seed(0)
    pool = [to_bytes(torch.randn(shape, generator=g), "bfloat16") for _ in range(64)]
    out = work / "shards"
    unit = out / PARTS_DIR / "c000000"
    writer = ShardWriter(unit / TRAIN_BUCKET)
    for i in range(clips):
        writer.add({"x": pool[i % len(pool)], "text_key": 0, "key": f"synthetic/{i:08d}", "caption": ""})
    writer.close()
    write_json(unit / "done.json", {"unit": 0, "clips": clips, "counts": {TRAIN_BUCKET: clips},
                                    "shapes": {TRAIN_BUCKET: list(shape)}, "captions": [], "skipped": []})
    merge(out, {"source": "synthetic", "clips": clips, "chunk_size": clips, "buckets": [TRAIN_BUCKET],
                "max_text_tokens": 16},
          {"fingerprint": tokenizer_fingerprint(tok), "path": str(work / "vae"), "kind": "latents",
           "dtype": "bfloat16", "class": "CausalVAE"}, None, show=False)
    return work / "vae", out


def child_train(tokenizer: str, root: str, run_dir: str, batch: int, steps: int, ckpt_every: int) -> dict:
    """(In a fresh process, ``tracemalloc`` on) train; the process's memory every 5 % of the steps."""
    import vidgen.training.generator_task as gt
    from vidgen.training import GeneratorTrainConfig, load_config, train_generator
    marks = sorted({max(1, round(steps * k / 20)) for k in range(1, 21)})
    curve, state = [], {"steps": 0, "clips": 0}
    base = gt.GeneratorTask.after_optimizer_step

    def reading(**extra) -> dict:
        gc.collect()
        mem = proc_mem()
        entry = {**extra, "rss": mem["VmRSS"], "anon": mem["RssAnon"], "interval_peak_rss": mem["VmHWM"],
                 "python_heap": tracemalloc.get_traced_memory()[0], "python_objects": len(gc.get_objects()),
                 "time": time.perf_counter()}
        if not reset_peak():
            raise SystemExit("this kernel does not let /proc/self/clear_refs reset the peak RSS")
        return entry

    def after_optimizer_step(self, out):  # runs after every optimizer step (before that step's checkpoint)
        base(self, out)
        state["steps"] += 1
        state["clips"] += out.units // self.tokens_per_clip
        if state["steps"] in marks:
            curve.append(reading(step=state["steps"], clips_read=state["clips"]))

    gt.GeneratorTask.after_optimizer_step = after_optimizer_step
    cfg = load_config(None, [f"run_dir={run_dir}", f"video_tokenizer={tokenizer}", "model.generator=flow",
                             "model.preset=tiny", "data.dataset=shards", f"data.root={root}", "data.conditioning=none",
                             f"data.batch={batch}", f"steps={steps}", f"log_every={max(1, steps // 20)}",
                             "sample_every=0", f"ckpt_every={ckpt_every}", "keep_checkpoints=2", "threads=1"],
                      schema=GeneratorTrainConfig)
    t0 = time.perf_counter()
    reset_peak()  # each reading's peak is the peak since the one before (the first: since the process started)
    train_generator(cfg)
    seconds = time.perf_counter() - t0
    after = reading()  # after the final checkpoint and save, the loader closed
    for c in curve:
        c["time"] = c["time"] - t0
    logs = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    return {"steps": steps, "batch": batch, "clips_read": state["clips"], "seconds": seconds,
            "peak_rss": max(c["interval_peak_rss"] for c in [*curve, after]), "rss_after_run": after["rss"],
            "peak_rss_after_last_step": after["interval_peak_rss"], "curve": curve,
            "precision": next(m["info"].split()[1] for m in logs if str(m.get("info", "")).startswith("precision:")),
            "buckets_logged": sorted({m["bucket"] for m in logs if "bucket" in m})}


# --------------------------------------------------------------------------------------------------------- summaries
#: the structures of the results table: name -> bytes held at one count (from that count's record)
HELD = {
    "shard index in memory (Python heap: the open dataset, LitData's index, after the reads)":
        lambda r: r["index_open"]["python_held"] + r["index_reads"]["python_held"],
    "shard index on disk (LitData `index.json`)": lambda r: r["disk"]["index_json_bytes"],
    "caption table on disk, memory-mapped (`text_keys.npy`, `text_rows.npy`)":
        lambda r: r["disk"]["caption_table_bytes"],
    "bucket sampler: its permutation (int64 tensor) and Python heap":
        lambda r: r["sampler_build"]["tensor_bytes"] + r["sampler_build"]["python_held"]
        + r["sampler_draws"]["python_held"],
    "bucket sampler at an epoch boundary: RSS peak over the phase's start": lambda r: r["sampler_epoch_boundary"][
        "rss_peak_delta"] or 0,
    "bucket sampler `state_dict()` (`torch.save` bytes)": lambda r: r["sampler_state_dict"]["torch_save"],
    "loader (the sampler in its thread, reading): anonymous RSS growth over the reads":
        lambda r: r["loader"]["anon_delta"],
    "epoch sampler (in-memory datasets): Python heap peak while drawing one batch":
        lambda r: r["epoch_sampler"]["python_peak"],
}


def per_clip(results: dict) -> dict:
    """Bytes of each structure of :data:`HELD` at each count, a clip, and the slope between consecutive counts (the
    same slope over both ranges: linear; a rising one: faster than linear; about 0: flat)."""
    counts = results["counts"]
    table = {}
    for name, get in HELD.items():
        values = [get(results["per_count"][str(n)]) for n in counts]
        table[name] = {"bytes": dict(zip(map(str, counts), values)),
                       "bytes_a_clip": {str(n): v / n for n, v in zip(counts, values)},
                       "slope_bytes_a_clip": {f"{a}-{b}": (vb - va) / (b - a) for (a, va), (b, vb)
                                              in zip(zip(counts, values), zip(counts[1:], values[1:]))}}
    return table


def training_summary(run: dict) -> dict:
    """RSS and Python heap at 10 %, 50 % and 100 % of the run, the peak RSS of the spans up to each, and the growth
    from 10 % to 100 % a clip read."""
    curve = run["curve"]
    at, last = {}, 0
    for p in (10, 50, 100):
        c = min(curve, key=lambda c: abs(c["step"] - run["steps"] * p / 100))
        span = [e["interval_peak_rss"] for e in curve if last < e["step"] <= c["step"]]
        at[f"{p}%"] = {**c, "span_peak_rss": max(span), "span_from_step": last}
        last = c["step"]
    a, b = at["10%"], at["100%"]
    clips = b["clips_read"] - a["clips_read"]
    return {"at": at, "clips_read_10_to_100": clips,
            "rss_growth_10_to_100": b["rss"] - a["rss"], "anon_growth_10_to_100": b["anon"] - a["anon"],
            "python_heap_growth_10_to_100": b["python_heap"] - a["python_heap"],
            "python_objects_growth_10_to_100": b["python_objects"] - a["python_objects"],
            "rss_growth_a_clip_read": (b["rss"] - a["rss"]) / clips,
            "python_heap_growth_a_clip_read": (b["python_heap"] - a["python_heap"]) / clips,
            "rss_min_max_after_10": [min(e["rss"] for e in curve if e["step"] >= a["step"]),
                                     max(e["rss"] for e in curve if e["step"] >= a["step"])]}


def _mb(v: float) -> str:
    return f"{v / 2**20:.1f}"


def _size(v: float) -> str:
    return f"{v / 2**20:.1f} MB" if abs(v) >= 2**20 else f"{v / 2**10:.1f} KB" if abs(v) >= 2**10 else f"{v:.0f} B"


def _slope(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"


def readme_table(results: dict) -> str:
    """docs/scale.md's data memory tables (``eval/readme_tables.py``, marker ``data_memory``)."""
    counts = results["counts"]
    pc = [results["per_count"][str(n)] for n in counts]
    spans = [f"{a:,} to {b:,}" for a, b in zip(counts, counts[1:])]
    lines = [f"| held | {' | '.join(f'{n:,} clips' for n in counts)} | "
             f"{' | '.join(f'bytes a clip added, {s}' for s in spans)} |",
             "|---|" + "---|" * (2 * len(counts) - 1)]
    for name, row in results["per_clip"].items():
        cells = " | ".join(_size(row["bytes"][str(n)]) for n in counts)
        slopes = " | ".join(_slope(v) for v in row["slope_bytes_a_clip"].values())
        lines.append(f"| {name} | {cells} | {slopes} |")
    rate = " | ".join(f"{r['index_reads']['clips_per_s']:.0f}" for r in pc)
    lines.append(f"| random reads of the shards, clips/s | {rate} |{' |' * len(spans)}")
    ep = " | ".join(f"{r['epoch_sampler']['seconds_a_batch'] * 1e3:.1f} ms" for r in pc)
    lines.append(f"| epoch sampler, time to draw a batch of {results['batch']} | {ep} |{' |' * len(spans)}")
    shards = " | ".join(f"{r['disk']['shards']:,}" for r in pc)
    lines.append(f"| shards of {results['shard_bytes'] / 1e6:.0f} MB ({results['clips_a_shard']:,} clips each) | "
                 f"{shards} |{' |' * len(spans)}")
    t, s = results["training"], results["training_summary"]
    lines += ["", "| training run, after step | clips read | RSS | peak RSS since the row above (first row: since "
              "the start) | Python heap (tracemalloc) | live Python objects |", "|---|---|---|---|---|---|"]
    for name, c in s["at"].items():
        lines.append(f"| {c['step']} ({name}) | {c['clips_read']:,} | {_mb(c['rss'])} MB | "
                     f"{_mb(c['span_peak_rss'])} MB | {_mb(c['python_heap'])} MB | {c['python_objects']:,} |")
    lines += ["", f"Training: `tiny` flow generator on a tiny CausalVAE's latents ({TRAIN_BUCKET} clips), batch "
              f"{t['batch']}, {t['steps']} steps: {t['clips_read']:,} clips read from a {results['training_clips']:,}-"
              f"clip shard dataset, {t['precision']}, {t['seconds']:.0f} s with tracemalloc on. Peak RSS over the "
              f"steps {_mb(max(c['interval_peak_rss'] for c in t['curve']))} MB, "
              f"{_mb(t['peak_rss_after_last_step'])} MB after the last step (the final checkpoint and save). One run "
              f"on {results['cpu']}, one thread a process, {results['date'][:10]}, load "
              f"{results['loadavg_start'][0]:.1f} at the start; `{results['command']}`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts and a short run (the test's mode)")
    parser.add_argument("--out", default=None, help=f"results file (default {OUT.relative_to(ROOT)}; --quick: none)")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--child-count", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--child-train", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_count:
        torch.set_num_threads(1)
        import litdata  # noqa: F401  (imported before tracing: imports are not the index's memory)
        import vidgen.data.shards  # noqa: F401
        import vidgen.training.data  # noqa: F401
        tracemalloc.start()
        root, *numbers = args.child_count
        print(json.dumps(measure_count(root, *map(int, numbers))))
        return 0
    if args.child_train:
        torch.set_num_threads(1)
        import accelerate  # noqa: F401  (imported before tracing)
        import litdata  # noqa: F401
        import vidgen.generators  # noqa: F401
        import vidgen.training.generator_task  # noqa: F401
        tracemalloc.start()
        tok, root, run_dir, *numbers = args.child_train
        print(json.dumps(child_train(tok, root, run_dir, *map(int, numbers))))
        return 0
    if args.table:
        print(readme_table(json.loads(Path(args.out or OUT).read_text())))
        return 0
    plan = QUICK if args.quick else FULL
    out = args.out or (None if args.quick else OUT)
    torch.set_num_threads(1)
    per_count = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        base = base_dataset(work, plan["shard_bytes"])
        for n in plan["counts"]:
            disk = scaled_dataset(work / f"n{n}", n, base)
            per_count[str(n)] = {**run_child(["--child-count", work / f"n{n}", n, plan["draws"], plan["reads"],
                                              plan["epoch_draws"]]), "disk": disk}
            shutil.rmtree(work / f"n{n}")
            print(n, "clips:", json.dumps({k: v for k, v in per_count[str(n)].items() if k != "disk"})[:400],
                  flush=True)
        t = plan["train"]
        tok, shards = training_data(work, t["clips"])
        training = run_child(["--child-train", tok, shards, work / "run", t["batch"], t["steps"], t["ckpt_every"]])
        print("training:", {k: v for k, v in training.items() if k != "curve"}, flush=True)
    results = {"counts": plan["counts"], "batch": BATCH, "clips_a_shard": base["clips_a_shard"],
               "shard_bytes": base["shard_bytes"],
               "per_count": per_count, "training_clips": plan["train"]["clips"], "training": training,
               "quick": args.quick, "cores_allowed": len(os.sched_getaffinity(0))}
    results["per_clip"] = per_clip(results)
    results["training_summary"] = training_summary(training)
    if out is None:
        print(json.dumps({"per_clip": results["per_clip"], "training_summary": results["training_summary"]}, indent=1))
        return 0
    write_result(out, results, threads=1)
    print(readme_table(json.loads(Path(out).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

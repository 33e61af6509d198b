#!/usr/bin/env python
"""Which shard format holds the encoded latent datasets: the candidates measured side by side in one run.

    python eval/bench_shards.py               # -> docs/results/bench_shards.json
    python eval/bench_shards.py --table       # print the docs/scale.md table from that file

Each candidate writes the same clips (bf16 latents of a 17x64x64 clip through a 4x8x8, 16-channel VAE, as raw
bytes, a caption row and a key) into shards of about 4 MB, then reads them back: one shuffled epoch through the
library's own loader, random access by index where the library has it, the same seed twice (deterministic order?),
and a mid-epoch resume through the library's own state (the rest of the epoch equal to an uninterrupted run's?).
A candidate that is not installed is skipped and named in the file. Bytes a clip are the shard folder's size over
the clip count.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.results import write_result  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "bench_shards.json"
SHAPE = (16, 5, 8, 8)  # latents of one 17x64x64 clip through a 4x8x8 16-channel VAE
SHARD_BYTES = 4_000_000
BATCH = 8


def clips(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(SHAPE, generator=g).to(torch.bfloat16).view(torch.int16).numpy().tobytes(),
             "text_row": i % 97, "key": f"clip{i:07d}"} for i in range(n)]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# each candidate: write(items, dir), loader(dir, seed), keys(loader) -> the epoch's keys; state / resumed for a
# mid-epoch resume through the library's own state (None: none); random_access(dir) -> indexable (None: none)
class _Stateful:
    """A library loader with ``state_dict`` / ``load_state_dict``, yielding batches (dicts of lists)."""

    def keys(self, loader):
        for batch in loader:
            yield from batch["key"]

    def state(self, loader):
        return loader.state_dict()

    def resumed(self, out, seed, state):
        loader = self.loader(out, seed)
        loader.load_state_dict(state)
        return loader


class LitData(_Stateful):
    name, package = "LitData", "litdata"

    def write(self, items, out):
        from litdata.streaming.writer import BinaryWriter
        writer = BinaryWriter(str(out), chunk_bytes=SHARD_BYTES)
        for i, item in enumerate(items):
            writer[i] = item
        writer.done()
        writer.merge(1)

    def loader(self, out, seed):
        import litdata
        return litdata.StreamingDataLoader(litdata.StreamingDataset(str(out), shuffle=True, seed=seed),
                                           batch_size=BATCH, num_workers=0)

    def random_access(self, out):
        import litdata
        return litdata.StreamingDataset(str(out))


class MDS(_Stateful):
    name, package = "MosaicML Streaming (MDS)", "streaming"

    def write(self, items, out):
        from streaming import MDSWriter
        with MDSWriter(out=str(out), columns={"x": "bytes", "text_row": "int", "key": "str"},
                       size_limit=SHARD_BYTES) as writer:
            for item in items:
                writer.write(item)

    def loader(self, out, seed):
        from streaming import StreamingDataLoader, StreamingDataset
        from streaming.base.util import clean_stale_shared_memory
        clean_stale_shared_memory()
        ds = StreamingDataset(local=str(out), shuffle=True, shuffle_seed=seed, batch_size=BATCH,
                              num_canonical_nodes=1)
        return StreamingDataLoader(ds, batch_size=BATCH, num_workers=0)

    def random_access(self, out):
        from streaming import LocalDataset
        return LocalDataset(str(out))


class WebDatasetTar:
    name, package = "WebDataset (tar)", "webdataset"

    def write(self, items, out):
        import webdataset as wds
        out.mkdir(parents=True)
        with wds.ShardWriter(str(out / "shard-%06d.tar"), maxsize=SHARD_BYTES, verbose=0) as sink:
            for item in items:
                sink.write({"__key__": item["key"], "x.bin": item["x"], "text_row.cls": item["text_row"]})

    def loader(self, out, seed):
        import webdataset as wds
        urls = sorted(str(p) for p in out.glob("*.tar"))
        return wds.WebDataset(urls, shardshuffle=len(urls), seed=seed, empty_check=False).shuffle(
            256, rng=random.Random(seed))

    def keys(self, loader):
        for sample in loader:
            yield sample["__key__"]

    state = resumed = random_access = None  # no loader state, no index: resume means replaying the epoch


class ParquetDatasets(_Stateful):
    name, package = "Parquet via datasets", "datasets"

    def write(self, items, out):
        import datasets
        out.mkdir(parents=True)
        per = max(1, SHARD_BYTES // len(items[0]["x"]))
        for s in range(0, len(items), per):
            part = items[s:s + per]
            datasets.Dataset.from_dict({k: [it[k] for it in part] for k in part[0]}).to_parquet(
                str(out / f"shard-{s // per:06d}.parquet"))

    def loader(self, out, seed):
        import datasets
        files = sorted(str(p) for p in out.glob("*.parquet"))
        return datasets.load_dataset("parquet", data_files=files, split="train", streaming=True).shuffle(
            seed=seed, buffer_size=256)

    def keys(self, loader):  # samples, not batches
        for sample in loader:
            yield sample["key"]

    def random_access(self, out):
        import datasets
        files = sorted(str(p) for p in out.glob("*.parquet"))
        return datasets.load_dataset("parquet", data_files=files, split="train")  # converts to an Arrow cache


CANDIDATES = [LitData(), MDS(), WebDatasetTar(), ParquetDatasets()]


def installed(package: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(package) is not None


def measure(c, items, work: Path, seed: int, reads: int) -> dict:
    out = work / c.package
    t0 = time.perf_counter()
    c.write(items, out)
    write_s = time.perf_counter() - t0
    n = len(items)
    t0 = time.perf_counter()
    first = list(c.keys(c.loader(out, seed)))
    read_s = time.perf_counter() - t0
    row = {"name": c.name, "package": c.package, "clips": n, "write_clips_per_s": n / write_s,
           "read_clips_per_s": n / read_s, "bytes_per_clip": folder_bytes(out) / n,
           "payload_bytes_per_clip": len(items[0]["x"]), "shards": sum(1 for p in out.iterdir() if p.is_file()),
           "epoch_complete": sorted(first) == sorted(it["key"] for it in items),
           "deterministic_for_seed": first == list(c.keys(c.loader(out, seed))),
           "other_seed_differs": first != list(c.keys(c.loader(out, seed + 1)))}
    if c.state is not None:
        half = (n // 2 // BATCH) * BATCH
        loader, got = c.loader(out, seed), []
        it = iter(c.keys(loader))
        for _ in range(half):
            got.append(next(it))
        state = c.state(loader)
        rest = list(c.keys(c.resumed(out, seed, state)))
        row.update(resume="library state", resume_exact=got + rest == first,
                   resume_rest_matching=sum(a == b for a, b in zip(rest, first[half:])), resume_rest=n - half)
    else:
        row.update(resume="none (replay and skip)", resume_exact=None)
    if c.random_access is not None:
        t_open = time.perf_counter()
        ds = c.random_access(out)
        open_s = time.perf_counter() - t_open
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:reads].tolist()
        t0 = time.perf_counter()
        ok = all(ds[i]["key"] == items[i]["key"] for i in order)
        row.update(random_access_clips_per_s=reads / (time.perf_counter() - t0), random_access_correct=ok,
                   random_access_open_s=open_s)
    shutil.rmtree(out, ignore_errors=True)
    return row


def readme_table(results: dict) -> str:
    """The format comparison in docs/scale.md (``eval/readme_tables.py``, marker ``shard_formats``)."""
    lines = ["| format | write clips/s | shuffled read clips/s | random access clips/s | bytes a clip | same order for a "
             "seed | mid-epoch resume exact | installs beside the pinned environment |",
             "|---|---|---|---|---|---|---|---|"]
    yes = {True: "yes", False: "**no**", None: "–"}
    for r in results["rows"]:
        ra = f"{r['random_access_clips_per_s']:.0f}" if "random_access_clips_per_s" in r else "none (no index)"
        resume = yes[r["resume_exact"]] if r["resume_exact"] is not None else "no state (replay the epoch)"
        if r["resume_exact"] is False:
            resume += f" ({r['resume_rest_matching']} of {r['resume_rest']} after the resume in place)"
        lines.append(f"| {r['name']} | {r['write_clips_per_s']:.0f} | {r['read_clips_per_s']:.0f} | {ra} | "
                     f"{r['bytes_per_clip']:.0f} ({r['payload_bytes_per_clip']} latent) | "
                     f"{yes[r['deterministic_for_seed']]} | {resume} | {yes[r['installs_cleanly']]} |")
    for s in results["skipped"]:
        lines.append(f"| {s['name']} | skipped: {s['reason']} | | | | | | |")
    lines += ["", f"{results['rows'][0]['clips'] if results['rows'] else 0} clips of {'x'.join(map(str, SHAPE))} bf16 "
              f"latents, shards of ~{SHARD_BYTES // 1_000_000} MB, batch {BATCH}, one run on {results['cpu']}, "
              f"{results['threads']} thread, {results['date'][:10]}; `{results['command']}`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=4000)
    parser.add_argument("--reads", type=int, default=1000, help="random-access reads timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--table", action="store_true", help="print the table of the results file and exit")
    args = parser.parse_args(argv)
    if args.table:
        import json
        print(readme_table(json.loads(Path(args.out).read_text())))
        return 0
    torch.set_num_threads(1)
    items = clips(args.clips, args.seed)
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as work:
        os.environ.setdefault("HF_DATASETS_CACHE", str(Path(work) / "hf"))
        for c in CANDIDATES:
            if not installed(c.package):
                skipped.append({"name": c.name, "reason": f"`{c.package}` is not installed"})
                print(f"{c.name}: skipped ({c.package} not installed)")
                continue
            row = measure(c, items, Path(work), args.seed, min(args.reads, args.clips))
            row["installs_cleanly"] = c.package != "streaming"  # its releases pin transformers<5 and torch<2.x
            rows.append(row)
            print({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
    write_result(args.out, {"rows": rows, "skipped": skipped,
                            "notes": {"streaming": "mosaicml-streaming 0.13 declares transformers<5 (the project pins "
                                                   "5.x): measured here after pip install --no-deps"}}, threads=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The shard data path at scale, in one run (``docs/scale.md``):

* **Memory.** A ``small``-preset flow training process on shards of 1,000 and of 100,000 clips (synthetic bf16
  latents of 17x64x64 clips through the shipped natural VAE: 16x5x8x8, written in the encode's own layout and merged
  by its merge): peak RSS of each. Its 12 steps of 16 clips read 192 clips, so this peak is the model's set-up, not
  the data's: what the data holds as it grows is ``eval/bench_data_memory.py``'s measurement.
* **Loader vs step.** Clips/s the shard loader delivers (random access, one bucket, batch 16, prefetch thread) against
  the clips/s the same training consumes (steady steps, batch 16, this CPU); target >= 5x.
* **Encode.** ``vidgen data encode`` of rendered natural clips with ``pretrained/natural-vae-small`` with 1 and 2
  processes (``accelerate launch -m vidgen``): clips/s of the whole command, and the per-clip encode cost alone.

    python eval/bench_data.py          # -> docs/results/bench_data.json
    python eval/bench_data.py --table  # print the docs/scale.md table from that file
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.results import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "bench_data.json"
VAE = ROOT / "pretrained" / "natural-vae-small"
SHAPE = (16, 5, 8, 8)
BUCKET = "17x64x64"
UNIT = 10_000
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def synthetic_shards(out: Path, clips: int, fingerprint: str) -> None:
    """``clips`` synthetic latent clips in the encode's layout (work units, then the encode's merge)."""
    from vidgen.data.shards.format import PARTS_DIR, ShardWriter, caption_key, to_bytes, write_json
    from vidgen.data.shards.merge import merge
    g = torch.Generator().manual_seed(0)
    pool = [to_bytes(torch.randn(SHAPE, generator=g), "bfloat16") for _ in range(64)]
    units = -(-clips // UNIT)
    for u in range(units):
        n = min(UNIT, clips - u * UNIT)
        folder = out / PARTS_DIR / f"c{u:06d}"
        writer = ShardWriter(folder / BUCKET)
        for i in range(n):
            writer.add({"x": pool[(u * UNIT + i) % len(pool)], "text_key": caption_key(""),
                        "key": f"synthetic/{u * UNIT + i:08d}", "caption": ""})
        writer.close()
        write_json(folder / "done.json", {"unit": u, "clips": n, "counts": {BUCKET: n}, "shapes": {BUCKET: list(SHAPE)},
                                          "captions": [], "skipped": []})
    args = {"source": "synthetic", "clips": clips, "chunk_size": UNIT, "buckets": [BUCKET], "max_text_tokens": 16}
    merge(out, args, {"fingerprint": fingerprint, "path": str(VAE), "kind": "latents", "dtype": "bfloat16",
                      "class": "CausalVAE"}, None, show=False)


def child_train(root: str, run_dir: str, steps: int, batch: int) -> None:
    """(In a fresh process) train the small flow generator on ``root``; print peak RSS and steady clips/s."""
    from vidgen.training import GeneratorTrainConfig, load_config, train_generator
    cfg = load_config(None, [f"run_dir={run_dir}", f"video_tokenizer={VAE}", "model.generator=flow",
                             "model.preset=small", "data.dataset=shards", f"data.root={root}",
                             "data.conditioning=none", f"data.batch={batch}", f"steps={steps}", "log_every=1",
                             "sample_every=0", f"ckpt_every={steps * 10}", "threads=1"], schema=GeneratorTrainConfig)
    train_generator(cfg)
    logs = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    rates = [m["tokens_per_s"] for m in logs if "loss" in m][2:]
    tokens = SHAPE[1] * SHAPE[2] * SHAPE[3]
    status = Path("/proc/self/status").read_text()
    rss_end = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_end_mb": rss_end,
                      "train_clips_per_s": statistics.median(rates) / tokens, "precision": next(m["info"].split()[1] for m in logs if str(m.get("info", "")).startswith("precision:"))}))


def train_run(root: Path, work: Path, steps: int, batch: int) -> dict:
    run_dir = work / f"run-{root.name}"
    done = subprocess.run([sys.executable, __file__, "--child-train", str(root), str(run_dir), str(steps), str(batch)],
                          env=ENV, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    shutil.rmtree(run_dir, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_mb() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(line.split()[1]) / 1024
    return fields


def child_read(root: str, batch: int) -> None:
    """(In a fresh process) read one whole epoch of ``root`` through the training loader; print its rate and the
    process's memory before and after."""
    from vidgen.data.shards import ShardBatches, ShardDataset
    ds = ShardDataset(root)
    loader = ShardBatches(ds, {BUCKET: batch}, seed=0, conditioning="none")
    loader.take_batch()  # the thread starts, the first shard is opened
    before, read = _rss_mb(), batch
    t0 = time.perf_counter()
    while read < len(ds):
        loader.take_batch()
        read += batch
    rate = (read - batch) / (time.perf_counter() - t0)
    loader.close()
    print(json.dumps({"clips_read": read, "clips_per_s": rate, "rss_before_mb": before["VmRSS"],
                      "rss_after_mb": _rss_mb()["VmRSS"], "peak_rss_mb": _rss_mb()["VmHWM"]}))


def read_run(root: Path, batch: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child-read", str(root), str(batch)], env=ENV,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def encode_runs(work: Path, clips: int) -> dict:
    from vidgen.data import NaturalClips
    from vidgen.io import write_video
    from vidgen.testing import accelerate_launch
    from vidgen.tokenizers import load_tokenizer, video_to_tokens
    src = work / "natural"
    src.mkdir()
    data = NaturalClips("train", num_frames=17, size=64, num_clips=clips)
    for i in range(clips):
        write_video(src / f"{i:04d}.mp4", data[i]["video"], fps=8)
    args = ["data", "encode", str(src), "--tokenizer", str(VAE), "--buckets", BUCKET, "--text-encoder", "none",
            "--workers", "1", "--batch-size", "8", "--threads", "1"]
    out = {"clips": clips}
    for processes in (1, 2):
        t0 = time.perf_counter()
        if processes == 1:
            done = subprocess.run([sys.executable, "-m", "vidgen", *args, "--out", str(work / "enc1")], env=ENV,
                                  capture_output=True, text=True, timeout=3600)
        else:
            done = accelerate_launch("-m", ["vidgen", *args, "--out", str(work / "enc2")], 2, timeout=3600)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        out[f"processes_{processes}_clips_per_s"] = clips / (time.perf_counter() - t0)
    from vidgen.io import read_video
    files = sorted(src.glob("*.mp4"))[:32]
    read_video(files[0])
    t0 = time.perf_counter()
    for f in files:
        read_video(f, num_frames=17, size=(64, 64))
    out["decode_s_per_clip"] = (time.perf_counter() - t0) / len(files)
    tok = load_tokenizer(VAE)
    batch = min(8, clips)
    video = torch.stack([data[i]["video"] for i in range(batch)])
    video_to_tokens(tok, video[:1])
    t0 = time.perf_counter()
    video_to_tokens(tok, video)
    out["vae_encode_s_per_clip"] = (time.perf_counter() - t0) / batch
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        video_to_tokens(tok, video[:1])
    out["vae_encode_flops_per_clip"] = counter.get_total_flops()
    return out


def cores(results: dict) -> str:
    n = results.get("cores_allowed", results["host_cpus"])
    return (f"every process on {n} of the {results['host_cpus']} cores (taskset) with one thread"
            if n < results["host_cpus"] else "one thread per process")


def readme_table(results: dict) -> str:
    """docs/scale.md's measured table (``eval/readme_tables.py``, marker ``data_scale``)."""
    m, e = results["memory"], results["encode"]
    steps = m.get("steps", 12)  # files before the count was recorded: the default of --steps, 12
    lines = ["| measured | value | target |", "|---|---|---|",
             f"| `small` flow training, {steps} steps of {results['batch']} clips ({steps * results['batch']:,} clips "
             f"read) on {m['small_clips']:,} / {m['large_clips']:,}-clip shards: peak RSS (set by the model's set-up; "
             f"data memory: the next section) | {m['small']['peak_rss_mb']:.0f} / {m['large']['peak_rss_mb']:.0f} MB | |",
             f"| shard bytes a clip ({'x'.join(map(str, SHAPE))} bf16) | {m['bytes_per_clip']:.0f} | |",
             *(f"| loader alone, a whole epoch of {r['clips_read']:,} clips: RSS before / after, peak | "
               f"{r['rss_before_mb']:.0f} / {r['rss_after_mb']:.0f} MB, {r['peak_rss_mb']:.0f} MB | |"
               for r in results["epochs"].values()),
             f"| loader, clips/s over that epoch (batch {results['batch']}, random access) | "
             f"{results['loader_clips_per_s']:.0f} | |",
             f"| `small` flow training step, clips/s ({m['large']['precision']}) | "
             f"{m['large']['train_clips_per_s']:.1f} | |",
             f"| loader / step | {results['loader_over_step']:.0f}x | >= 5x |",
             f"| encode, 1 process (whole command, {e['clips']} clips) | {e['processes_1_clips_per_s']:.2f} clips/s | |",
             f"| encode, 2 processes sharing that core (whole command) | {e['processes_2_clips_per_s']:.2f} clips/s | |",
             f"| natural VAE encode alone, batch 8 | {e['vae_encode_s_per_clip']:.3f} s a clip "
             f"({e['vae_encode_flops_per_clip'] / 1e9:.1f} GFLOP) | |",
             f"| MP4 decode alone (17x64x64) | {e['decode_s_per_clip'] * 1e3:.1f} ms a clip | |",
             "", f"One run on {results['cpu']}, {cores(results)}, {results['date'][:10]}, load "
             f"{results['loadavg_start'][0]:.1f} at the start; `{results['command']}`."]
    return "\n".join(lines)


# the plan's inputs that are not measured here (docs/scale.md says which numbers are which)
PLAN = {"clips": 10_000_000, "gpus": 64, "mix": {"17x256x256": 0.5, "33x256x256": 0.25, "17x256x384": 0.25},
        "gpu_vae_tflops": 100.0,  # assumed sustained bf16 conv3d rate of one H100-class GPU for the VAE encoder
        "decode_workers_per_gpu": 12,  # DataLoader workers decoding videos beside each GPU
        "gpu_train_clips_per_s": 100.0}  # assumed training rate per GPU, for the loader requirement
TEXT_BYTES = (16 * 384 + 16 + 384) * 4  # one caption's embeddings: hidden, mask, pooled (float32, 16 tokens)


def plan_table(results: dict) -> str:
    """docs/scale.md's plan for ``PLAN['clips']`` clips on ``PLAN['gpus']`` GPUs (marker ``data_plan``)."""
    from vidgen.data.shards.format import SHARD_BYTES
    e, m = results["encode"], results["memory"]
    ref_voxels = 17 * 64 * 64
    rows, total, mean_bytes = [], 0.0, 0.0
    for name, share in PLAN["mix"].items():
        f, h, w = (int(v) for v in name.split("x"))
        latent = 16 * (1 + (f - 1) // 4) * (h // 8) * (w // 8) * 2
        stored = latent * m["bytes_per_clip"] / (16 * 5 * 8 * 8 * 2)  # the measured per-clip overhead, scaled
        rows.append(f"| {name} | {share:.0%} | {latent / 1e3:.0f} KB | {SHARD_BYTES // int(stored)} | "
                    f"{PLAN['clips'] * share * stored / 1e12:.2f} TB |")
        total += PLAN["clips"] * share * stored
        mean_bytes += share * stored
    text = PLAN["clips"] * TEXT_BYTES
    per_gpu = PLAN["clips"] / PLAN["gpus"]
    voxels = sum(share * int(n.split("x")[0]) * int(n.split("x")[1]) * int(n.split("x")[2])
                 for n, share in PLAN["mix"].items()) / ref_voxels
    flops = e["vae_encode_flops_per_clip"] * voxels
    vae_rate = PLAN["gpu_vae_tflops"] * 1e12 / flops
    decode_s = e["decode_s_per_clip"] * voxels  # measured at 17x64x64 on one core
    decode_rate = PLAN["decode_workers_per_gpu"] / decode_s
    rate = min(vae_rate, decode_rate)
    need = PLAN["gpu_train_clips_per_s"]
    lines = ["| bucket | share | latents a clip (bf16) | clips a 64 MB shard | storage |", "|---|---|---|---|---|",
             *rows,
             f"| captions (10 M distinct, float32) | | {TEXT_BYTES / 1e3:.1f} KB a caption | | {text / 1e12:.2f} TB |",
             f"| **total** | | | | **{(total + text) / 1e12:.2f} TB** |", "",
             "| quantity | value | how it was obtained |", "|---|---|---|",
             f"| VAE encode FLOPs a clip (mix) | {flops / 1e9:.0f} GFLOP | measured {e['vae_encode_flops_per_clip'] / 1e9:.2f}"
             f" GFLOP at 17x64x64 (natural VAE), scaled by voxels |",
             f"| VAE encode rate a GPU | {vae_rate:.0f} clips/s | extrapolated: assumed {PLAN['gpu_vae_tflops']:.0f} "
             f"TFLOP/s sustained |",
             f"| video decode rate a GPU | {decode_rate:.0f} clips/s | extrapolated: measured "
             f"{e['decode_s_per_clip'] * 1e3:.1f} ms to decode a 17x64x64 MP4 clip on one core, scaled by voxels, "
             f"{PLAN['decode_workers_per_gpu']} workers a GPU |",
             f"| encode time ({per_gpu:,.0f} clips a GPU) | {per_gpu / rate / 3600:.1f} h | extrapolated: "
             f"{'decode' if decode_rate < vae_rate else 'VAE'}-bound |",
             f"| loader need a GPU at {need:.0f} clips/s | {need * mean_bytes / 1e6:.0f} MB/s "
             f"({PLAN['gpus'] * need * mean_bytes / 1e9:.1f} GB/s for {PLAN['gpus']} GPUs) | assumed step rate; "
             f"the loader measured {results['loader_clips_per_s']:.0f} clips/s of 10 KB clips on one core |",
             "",
             "No GPU was available to this measurement: every GPU number above is extrapolated from the CPU "
             "measurements and the stated assumptions."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small-clips", type=int, default=1_000)
    parser.add_argument("--large-clips", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--encode-clips", type=int, default=160)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--child-train", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-read", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_read:
        torch.set_num_threads(1)
        child_read(args.child_read[0], int(args.child_read[1]))
        return 0
    if args.child_train:
        torch.set_num_threads(1)
        child_train(args.child_train[0], args.child_train[1], int(args.child_train[2]), int(args.child_train[3]))
        return 0
    if args.table:
        print(readme_table(json.loads(Path(args.out).read_text())))
        return 0
    torch.set_num_threads(1)
    from vidgen.tokenizers import load_tokenizer
    from vidgen.data.shards import tokenizer_fingerprint
    fingerprint = tokenizer_fingerprint(load_tokenizer(VAE))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        memory = {"small_clips": args.small_clips, "large_clips": args.large_clips, "steps": args.steps}
        for size, n in (("small", args.small_clips), ("large", args.large_clips)):
            t0 = time.perf_counter()
            synthetic_shards(work / size, n, fingerprint)
            memory[f"{size}_write_s"] = time.perf_counter() - t0
            print(f"{n} synthetic clips written in {memory[f'{size}_write_s']:.1f} s", flush=True)
        memory["bytes_per_clip"] = sum(p.stat().st_size for p in (work / "large" / BUCKET).glob("*.bin")) / args.large_clips
        for size in ("small", "large"):
            memory[size] = train_run(work / size, work, args.steps, args.batch)
            print(size, memory[size], flush=True)
        memory["ratio"] = memory["large"]["peak_rss_mb"] / memory["small"]["peak_rss_mb"]
        epochs = {size: read_run(work / size, args.batch) for size in ("small", "large")}
        print(epochs, flush=True)
        loader = epochs["large"]["clips_per_s"]
        encode = encode_runs(work, args.encode_clips)
        print(encode, flush=True)
    write_result(args.out, {"memory": memory, "epochs": epochs, "batch": args.batch, "loader_clips_per_s": loader,
                            "loader_over_step": loader / memory["large"]["train_clips_per_s"], "encode": encode,
                            "cores_allowed": len(os.sched_getaffinity(0))},
                 threads=1)
    print(readme_table(json.loads(Path(args.out).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

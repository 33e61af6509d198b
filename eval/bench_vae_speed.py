#!/usr/bin/env python
"""Speed and memory of vidgen's CausalVAE vs diffusers' AutoencoderKLCogVideoX, side by side in one run.

Matched: 4x8x8 compression, 16 latent channels, widths (64, 128, 256, 256). Each (model, frames) case runs in
a fresh subprocess so its peak RSS (``ru_maxrss``) is its own; encode + decode are timed after a small warm-up.

    python eval/bench_vae_speed.py [--threads 2] [--frames 17 65] [--size 128] [--out outputs/bench_vae_speed.json]
    python eval/bench_vae_speed.py --memory   # decode 17 vs 257 frames with chunking: peak RSS ratio

Random weights are fine for speed and memory (they do not depend on weight values). On a shared machine the
wall-clock ratio is noisy (the cases run one after another); CPU seconds per frame are reported alongside.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

WIDTHS = (64, 128, 256, 256)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _build(kind: str):
    import torch
    if kind == "vidgen":
        from vidgen.tokenizers import CausalVAE
        return CausalVAE.from_preset("base", widths=WIDTHS, latent_channels=16).eval()
    from diffusers import AutoencoderKLCogVideoX
    torch.manual_seed(0)
    return AutoencoderKLCogVideoX(block_out_channels=WIDTHS, latent_channels=16, temporal_compression_ratio=4).eval()


def worker(kind: str, frames: int, size: int, threads: int, mode: str, chunk: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = _build(kind)
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        if mode == "speed":
            warm = torch.rand(1, 3, 5, 64, 64) * 2 - 1
            model.decode(model.encode(warm).latent_dist.mode())
            base_rss = _rss_mb()
            x = torch.rand(1, 3, frames, size, size) * 2 - 1
            c0, t0 = _cpu_s(), time.perf_counter()
            z = model.encode(x).latent_dist.mode()
            t1 = time.perf_counter()
            y = model.decode(z).sample
            t2, c2 = time.perf_counter(), _cpu_s()
            assert y.shape[2] == frames, y.shape
            return {"model": kind, "frames": frames, "size": size, "threads": threads, "params_m": params / 1e6,
                    "encode_s": t1 - t0, "decode_s": t2 - t1, "frames_per_s": frames / (t2 - t0),
                    "cpu_s_per_frame": (c2 - c0) / frames,
                    "peak_rss_mb": _rss_mb(), "rss_before_mb": base_rss}
        # memory mode: decode `frames` frames from latents, `chunk` latent frames at a time
        t_lat = 1 + (frames - 1) // 4
        z = torch.randn(1, 16, t_lat, size // 8, size // 8)
        base_rss = _rss_mb()
        t0 = time.perf_counter()
        y = model.decode(z, chunk_frames=chunk).sample
        return {"model": kind, "frames": y.shape[2], "size": size, "chunk_latents": chunk, "decode_s": time.perf_counter() - t0,
                "output_mb": y.numel() * 4 / 2 ** 20, "peak_rss_mb": _rss_mb(), "rss_before_mb": base_rss}


def run_case(*args) -> dict:
    cmd = [sys.executable, __file__, "--worker", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, nargs="+", default=[17, 65])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--memory", action="store_true", help="decode-memory flatness (17 vs 257 frames)")
    parser.add_argument("--chunk", type=int, default=2, help="latent frames per decode chunk (--memory)")
    parser.add_argument("--skip-anchor", action="store_true", help="only vidgen (no CogVideoX)")
    parser.add_argument("--out", default="outputs/bench_vae_speed.json")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, frames, size, threads, mode, chunk = args.worker
        print(json.dumps(worker(kind, int(frames), int(size), int(threads), mode, int(chunk))))
        return 0

    results: dict = {"cases": []}
    if args.memory:
        rows = [run_case("vidgen", f, args.size, args.threads, "memory", args.chunk) for f in (17, 257)]
        results["cases"] = rows
        results["peak_rss_ratio_257_vs_17"] = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        results["rss_growth_ratio_257_vs_17"] = ((rows[1]["peak_rss_mb"] - rows[1]["rss_before_mb"])
                                                 / max(1e-9, rows[0]["peak_rss_mb"] - rows[0]["rss_before_mb"]))
        for r in rows:
            print(f"decode {r['frames']:4d} frames {r['size']}px chunk={r['chunk_latents']}: peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(+{r['peak_rss_mb'] - r['rss_before_mb']:.0f} MB over model; output alone {r['output_mb']:.0f} MB), "
                  f"{r['decode_s']:.1f} s")
        print(f"peak RSS ratio 257/17 frames: {results['peak_rss_ratio_257_vs_17']:.3f}; "
              f"growth-over-baseline ratio: {results['rss_growth_ratio_257_vs_17']:.2f}")
    else:
        kinds = ["vidgen"] + ([] if args.skip_anchor else ["cogvideox"])
        for frames in args.frames:
            row = {k: run_case(k, frames, args.size, args.threads, "speed", 0) for k in kinds}
            results["cases"].append(row)
            for k, r in row.items():
                print(f"{k:10s} {frames:3d}x{args.size}x{args.size}: {r['params_m']:.1f} M params, encode {r['encode_s']:.2f} s, "
                      f"decode {r['decode_s']:.2f} s, {r['frames_per_s']:.2f} frames/s, {r['cpu_s_per_frame']:.2f} CPU-s/frame, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB")
            if "cogvideox" in row:
                ratio = row["vidgen"]["frames_per_s"] / row["cogvideox"]["frames_per_s"]
                mem = row["vidgen"]["peak_rss_mb"] / row["cogvideox"]["peak_rss_mb"]
                cpu_ratio = row["cogvideox"]["cpu_s_per_frame"] / row["vidgen"]["cpu_s_per_frame"]
                row["speedup"], row["cpu_speedup"], row["memory_ratio"] = ratio, cpu_ratio, mem
                print(f"  -> vidgen is {ratio:.1f}x faster (wall), {cpu_ratio:.1f}x less CPU time per frame, "
                      f"peak memory {mem:.2f}x of CogVideoX")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

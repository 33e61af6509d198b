#!/usr/bin/env python
"""Speed, FLOPs and memory of vidgen's CausalVAE vs diffusers' AutoencoderKLCogVideoX, side by side in one run.

Matched: 4x8x8 compression, 16 latent channels, widths (64, 128, 256, 256). Models compared:

* ``vidgen``: ``CausalVAE.from_preset("base")`` (2 res blocks per encoder level, 3 per decoder level);
* ``cogvideox``: ``AutoencoderKLCogVideoX`` with its default ``layers_per_block=3`` (3 encoder / 4 decoder);
* ``cogvideox_lpb2``: the same with ``layers_per_block=2`` (2 encoder / 3 decoder), depth-matched to vidgen.

Each (model, frames) case runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own. Every case gets
the same seeded input tensor. In each case one untimed encode + decode at the benchmark shape is run under
``torch.utils.flop_counter.FlopCounterMode`` (it counts convolutions, matmuls and attention; norms and activations
are not counted) and doubles as the warm-up; then ``--reps`` timed encode + decode passes follow and the median
(with min and max) is reported. A 2048^3 fp32 GEMM is timed (median of several reps) at the same thread count
before and after the model cases: achieved GFLOP/s of each model is reported as a fraction of it.

    python eval/bench_vae_speed.py [--threads 2] [--frames 17 65] [--size 128] [--reps 3]
    python eval/bench_vae_speed.py --memory   # decode 17 vs 257 frames with chunking: peak RSS ratio

Results go to ``docs/results/bench_vae_speed.json`` (section ``speed`` or ``memory``; a run keeps the other
section); ``readme_table`` renders the README table from it (``eval/readme_tables.py``). Random weights are fine
for speed and memory (they do not depend on weight values). Do not time anything while other jobs use the cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

WIDTHS = (64, 128, 256, 256)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "bench_vae_speed.json"
GEMM_N = 2048
# kind -> (README label, description)
MODELS = {
    "vidgen": ("vidgen `base`", "CausalVAE.from_preset('base'): 2 res blocks per encoder level, 2+1 per decoder level"),
    "cogvideox": ("CogVideoX (default depth)", "AutoencoderKLCogVideoX, layers_per_block=3 (3 encoder / 4 decoder)"),
    "cogvideox_lpb2": ("CogVideoX, `layers_per_block=2`",
                       "AutoencoderKLCogVideoX, layers_per_block=2 (2 encoder / 3 decoder): depth-matched to vidgen"),
}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def build(kind: str, widths=WIDTHS):
    """The model of ``kind`` (random weights, seeded) at the matched configuration."""
    import torch
    torch.manual_seed(0)
    widths = tuple(widths)
    if kind == "vidgen":
        from vidgen.tokenizers import CausalVAE
        return CausalVAE.from_preset("base", widths=widths, latent_channels=16).eval()
    from diffusers import AutoencoderKLCogVideoX
    layers = {"cogvideox": 3, "cogvideox_lpb2": 2}[kind]
    return AutoencoderKLCogVideoX(block_out_channels=widths, latent_channels=16, temporal_compression_ratio=4,
                                  layers_per_block=layers, norm_num_groups=min(32, min(widths))).eval()


def make_input(frames: int, size: int, seed: int = 0):
    """The benchmark input: uniform in [-1, 1], the same tensor in every case (seeded generator)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, size, size, generator=g) * 2 - 1


def count_flops(fn, *args) -> tuple[int, object]:
    """``(flops, fn(*args))``: FLOPs as counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = fn(*args)
    return int(counter.get_total_flops()), out


def gemm_worker(threads: int, reps: int = 7, n: int = GEMM_N) -> dict:
    """Median time of an ``n^3`` fp32 matmul at ``threads`` threads -> GFLOP/s (2 n^3 FLOPs per product)."""
    import torch
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    for _ in range(2):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t0)
    flops = 2 * n ** 3
    return {"n": n, "threads": threads, "times_s": times, "gflops_median": flops / statistics.median(times) / 1e9,
            "gflops_max": flops / min(times) / 1e9}


def speed_worker(kind: str, frames: int, size: int, threads: int, reps: int, widths=WIDTHS) -> dict:
    """One case: FLOP-counted warm-up pass, then ``reps`` timed encode + decode passes of the seeded input."""
    import torch
    torch.set_num_threads(threads)
    model = build(kind, widths)
    params = sum(p.numel() for p in model.parameters())
    x = make_input(frames, size)
    with torch.no_grad():
        enc_flops, z = count_flops(lambda v: model.encode(v).latent_dist.mode(), x)
        dec_flops, y = count_flops(lambda v: model.decode(v).sample, z)
        assert y.shape == x.shape, (y.shape, x.shape)
        rss_loaded = _rss_mb()
        walls, encs, cpus = [], [], []
        load_before = os.getloadavg()[0]
        for _ in range(reps):
            c0, t0 = _cpu_s(), time.perf_counter()
            z = model.encode(x).latent_dist.mode()
            t1 = time.perf_counter()
            y = model.decode(z).sample
            t2, c2 = time.perf_counter(), _cpu_s()
            walls.append(t2 - t0)
            encs.append(t1 - t0)
            cpus.append(c2 - c0)
    wall = statistics.median(walls)
    flops = enc_flops + dec_flops
    return {"model": kind, "frames": frames, "size": size, "threads": threads, "params": params,
            "latent_shape": list(z.shape), "input_sum": float(x.double().sum()),
            "flops_encode": enc_flops, "flops_decode": dec_flops, "gflop_per_frame": flops / frames / 1e9,
            "reps": reps, "wall_s": walls, "encode_s": encs, "cpu_s": cpus, "wall_s_median": wall,
            "frames_per_s": frames / wall, "frames_per_s_min": frames / max(walls), "frames_per_s_max": frames / min(walls),
            "cpu_s_per_frame": statistics.median(cpus) / frames, "achieved_gflops": flops / wall / 1e9,
            "loadavg_1min_before": load_before, "peak_rss_mb": _rss_mb(), "rss_after_first_pass_mb": rss_loaded}


def memory_worker(kind: str, frames: int, size: int, threads: int, chunk: int) -> dict:
    """Decode ``frames`` frames from latents, ``chunk`` latent frames at a time (vidgen only)."""
    import torch
    torch.set_num_threads(threads)
    model = build(kind)
    t_lat = 1 + (frames - 1) // 4
    z = torch.randn(1, 16, t_lat, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    base_rss = _rss_mb()
    t0 = time.perf_counter()
    with torch.no_grad():
        y = model.decode(z, chunk_frames=chunk).sample
    return {"model": kind, "frames": y.shape[2], "size": size, "chunk_latents": chunk, "decode_s": time.perf_counter() - t0,
            "output_mb": y.numel() * 4 / 2 ** 20, "peak_rss_mb": _rss_mb(), "rss_before_mb": base_rss}


def run_case(mode: str, **kw) -> dict:
    """Run one worker in a fresh subprocess (its own peak RSS) and return its JSON line."""
    cmd = [sys.executable, __file__, "--worker", json.dumps({"mode": mode, **kw})]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"worker {mode} {kw} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(cases: list[dict], gemm: list[dict]) -> dict:
    """Add GEMM fraction and vidgen speed-ups to the cases; group them by frame count."""
    n = gemm[0]["n"]
    gemm_times = [t for g in gemm for t in g["times_s"]]
    gemm_gflops = 2 * n ** 3 / statistics.median(gemm_times) / 1e9
    by_frames: dict = {}
    for c in cases:
        c["fraction_of_gemm"] = c["achieved_gflops"] / gemm_gflops
        by_frames.setdefault(str(c["frames"]), {})[c["model"]] = c
    for row in by_frames.values():
        if "vidgen" in row:
            v = row["vidgen"]
            for k, c in row.items():
                c["vidgen_speedup"] = v["frames_per_s"] / c["frames_per_s"]
                c["vidgen_cpu_speedup"] = c["cpu_s_per_frame"] / v["cpu_s_per_frame"]
                c["vidgen_memory_ratio"] = v["peak_rss_mb"] / c["peak_rss_mb"]
    return {"gemm": {"n": n, "runs": gemm, "gflops_median": gemm_gflops}, "by_frames": by_frames}


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f} M"


def readme_table(results: dict) -> str:
    """The README table (``<!-- table:vae_speed -->``) from ``docs/results/bench_vae_speed.json``."""
    s = results["speed"]
    size = next(iter(next(iter(s["by_frames"].values())).values()))["size"]
    lines = [f"| frames ({size}x{size}) | model | params | GFLOP / frame | frames/s (min–max) | vidgen speed-up (wall / CPU) | "
             "CPU-s / frame | achieved GFLOP/s | of fp32 GEMM | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for frames, row in s["by_frames"].items():
        for kind, c in row.items():
            label = MODELS.get(kind, (kind,))[0]
            if kind == "vidgen":
                speed = "–"
            else:
                speed = f"**{c['vidgen_speedup']:.1f}x** / {c['vidgen_cpu_speedup']:.1f}x"
            lines.append(f"| {frames} | {label} | {_fmt_params(c['params'])} | {c['gflop_per_frame']:.1f} | "
                         f"{c['frames_per_s']:.2f} ({c['frames_per_s_min']:.2f}–{c['frames_per_s_max']:.2f}) | {speed} | "
                         f"{c['cpu_s_per_frame']:.2f} | {c['achieved_gflops']:.1f} | {100 * c['fraction_of_gemm']:.0f} % | "
                         f"{c['peak_rss_mb']:.0f} MB |")
    g = s["gemm"]
    load = f", load average {s['loadavg_start'][0]:.2f} at start" if "loadavg_start" in s else ""
    drift = (f": {g['runs'][0]['gflops_median']:.0f} before / {g['runs'][-1]['gflops_median']:.0f} after the models"
             if len(g["runs"]) > 1 else "")
    reps = sorted({c["reps"] for row in s["by_frames"].values() for c in row.values()})
    lines += ["", f"{'/'.join(map(str, reps))} timed reps per case (median; min–max in brackets) after one FLOP-counted "
              f"warm-up pass, same seeded input for every model, {s['threads']} thread{'s' * (s['threads'] != 1)}, "
              f"{s['date'][:10]}{load}; "
              f"{g['n']}³ fp32 GEMM {g['gflops_median']:.1f} GFLOP/s (median of {len(g['runs'])}x"
              f"{len(g['runs'][0]['times_s'])} reps in the same run{drift}); "
              f"`{s['command']}`."]
    return "\n".join(lines)


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, nargs="+", default=[17, 65])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3, help="timed encode+decode passes per case (median reported)")
    parser.add_argument("--gemm-reps", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--memory", action="store_true", help="decode-memory flatness (17 vs 257 frames)")
    parser.add_argument("--chunk", type=int, default=2, help="latent frames per decode chunk (--memory)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kw = json.loads(args.worker)
        mode = kw.pop("mode")
        fn = {"gemm": gemm_worker, "speed": speed_worker, "memory": memory_worker}[mode]
        print(json.dumps(fn(**kw)))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import environment, write_result

    out = Path(args.out)
    previous = _load(out)
    command = " ".join(["python", *sys.argv])
    section = {"command": command, **environment(args.threads)}
    if args.memory:
        rows = [run_case("memory", kind="vidgen", frames=f, size=args.size, threads=args.threads, chunk=args.chunk)
                for f in (17, 257)]
        section["cases"] = rows
        section["peak_rss_ratio_257_vs_17"] = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
        section["rss_growth_ratio_257_vs_17"] = ((rows[1]["peak_rss_mb"] - rows[1]["rss_before_mb"])
                                                 / max(1e-9, rows[0]["peak_rss_mb"] - rows[0]["rss_before_mb"]))
        for r in rows:
            print(f"decode {r['frames']:4d} frames {r['size']}px chunk={r['chunk_latents']}: peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(+{r['peak_rss_mb'] - r['rss_before_mb']:.0f} MB over model; output alone {r['output_mb']:.0f} MB), "
                  f"{r['decode_s']:.1f} s")
        print(f"peak RSS ratio 257/17 frames: {section['peak_rss_ratio_257_vs_17']:.3f}; "
              f"growth-over-baseline ratio: {section['rss_growth_ratio_257_vs_17']:.2f}")
        payload = {"speed": previous["speed"]} if "speed" in previous else {}
        payload["memory"] = section
    else:
        gemm = [run_case("gemm", threads=args.threads, reps=args.gemm_reps)]
        print(f"GEMM {GEMM_N}^3 fp32, {args.threads} threads: {gemm[0]['gflops_median']:.1f} GFLOP/s (median)")
        cases = []
        for frames in args.frames:
            for kind in args.models:
                c = run_case("speed", kind=kind, frames=frames, size=args.size, threads=args.threads, reps=args.reps)
                cases.append(c)
                print(f"{kind:15s} {frames:3d}x{args.size}x{args.size}: {c['params'] / 1e6:.1f} M params, "
                      f"{c['gflop_per_frame']:.1f} GFLOP/frame, {c['frames_per_s']:.2f} frames/s "
                      f"({c['frames_per_s_min']:.2f}-{c['frames_per_s_max']:.2f}), {c['cpu_s_per_frame']:.2f} CPU-s/frame, "
                      f"{c['achieved_gflops']:.1f} GFLOP/s, peak RSS {c['peak_rss_mb']:.0f} MB", flush=True)
        gemm.append(run_case("gemm", threads=args.threads, reps=args.gemm_reps))
        print(f"GEMM after: {gemm[1]['gflops_median']:.1f} GFLOP/s (median)")
        section.update({"size": args.size, "frames": args.frames, "reps": args.reps, "widths": list(WIDTHS),
                        "models": {k: MODELS[k][1] for k in args.models},
                        "flop_counting": "torch.utils.flop_counter.FlopCounterMode on one encode + decode at the "
                                         "benchmark shape (convolutions, matmuls, attention; not norms/activations)",
                        **summarize(cases, gemm)})
        for frames, row in section["by_frames"].items():
            for kind, c in row.items():
                if kind != "vidgen" and "vidgen_speedup" in c:
                    print(f"  {frames} frames: vidgen is {c['vidgen_speedup']:.1f}x faster than {kind} (wall), "
                          f"{c['vidgen_cpu_speedup']:.1f}x less CPU time, peak memory {c['vidgen_memory_ratio']:.2f}x")
            print(f"  {frames} frames: fraction of GEMM: " + ", ".join(
                f"{k} {100 * c['fraction_of_gemm']:.0f} %" for k, c in row.items()))
        payload = {"speed": section}
        if "memory" in previous:
            payload["memory"] = previous["memory"]
    write_result(out, payload, command=command, threads=args.threads)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Speed, FLOPs and memory of vidgen's CausalVAE vs diffusers' AutoencoderKLCogVideoX in fp32, bf16 and bf16 +
torch.compile, side by side in one run, with the fp32 and bf16 GEMM ceilings measured in the same run.

Matched: 4x8x8 compression, 16 latent channels, widths (64, 128, 256, 256). Models compared:

* ``vidgen``: ``CausalVAE.from_preset("base")`` (2 res blocks per encoder level, 3 per decoder level);
* ``cogvideox``: ``AutoencoderKLCogVideoX`` with its default ``layers_per_block=3`` (3 encoder / 4 decoder);
* ``cogvideox_lpb2``: the same with ``layers_per_block=2`` (2 encoder / 3 decoder), depth-matched to vidgen.

Precisions (``--precisions``): ``fp32``; ``bf16`` = weights and input in bf16 (CogVideoX also in
``channels_last_3d``, its best layout: the anchor is measured at its best dtype too); ``amp`` = fp32 weights under
``torch.autocast("cpu", torch.bfloat16)``; ``compile`` = bf16 weights + ``torch.compile`` (inductor, ``freezing``:
weights prepacked, inference only) of the encoder and decoder (vidgen only; CogVideoX's compile takes minutes).
bf16 weights vs autocast: both are measured; bf16 weights are the ``bf16`` column because they won (vidgen base,
17x128x128, 2 threads, one run, 2026-11-25: 79.4 vs 70.6 frames/s; autocast re-casts every weight on every call).

Each (model, precision, frames) case runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own. Every
case gets the same seeded input tensor. In each case one untimed eager encode + decode at the benchmark shape runs
under ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls, attention; not norms / activations) and
doubles as the warm-up; a compiled case then times its first call (compilation, reported apart as ``compile_s``;
cache in ``.cache/torchinductor``) before ``--reps`` timed encode + decode passes (median, min and max reported).
``eval/ceiling.py``'s 2048^3 GEMM ceilings (fp32 and bf16, interleaved) are timed before and after the model cases;
each case's achieved GFLOP/s is reported as a fraction of the ceiling of its own dtype.

    python eval/bench_vae_speed.py [--threads 2] [--frames 17] [--size 128] [--reps 3]
    python eval/bench_vae_speed.py --memory   # decode 17 vs 257 frames with chunking: peak RSS ratio

Results go to ``docs/results/bench_vae_speed.json`` (section ``speed`` or ``memory``; a run keeps the other
section); ``readme_table`` renders the README table from it (``eval/readme_tables.py``). Random weights are fine
for speed and memory (they do not depend on weight values). Run timed benchmarks on idle cores only.
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
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import environment, write_result  # noqa: E402  (imported first: the run's start load)

DEFAULT_OUT = ROOT / "docs" / "results" / "bench_vae_speed.json"
CACHE_DIR = ROOT / ".cache" / "torchinductor"
GEMM_N = 2048
# precision -> (README label, dtype of its ceiling)
PRECISIONS = {"fp32": ("fp32", "fp32"), "bf16": ("bf16", "bf16"), "amp": ("bf16 autocast", "bf16"),
              "compile": ("bf16 + compile", "bf16")}
COMPILED_MODELS = ("vidgen",)  # CogVideoX's inductor compile takes minutes here: not in a <= 8 min run
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


def build(kind: str, widths=WIDTHS, precision: str = "fp32"):
    """The model of ``kind`` (random weights, seeded) at the matched configuration, set up for ``precision``."""
    import torch
    torch.manual_seed(0)
    widths = tuple(widths)
    if kind == "vidgen":
        from vidgen.tokenizers import CausalVAE
        model = CausalVAE.from_preset("base", widths=widths, latent_channels=16).eval()
    else:
        from diffusers import AutoencoderKLCogVideoX
        layers = {"cogvideox": 3, "cogvideox_lpb2": 2}[kind]
        model = AutoencoderKLCogVideoX(block_out_channels=widths, latent_channels=16, temporal_compression_ratio=4,
                                       layers_per_block=layers, norm_num_groups=min(32, min(widths))).eval()
    if precision in ("bf16", "compile"):
        model = model.to(torch.bfloat16)
        if kind != "vidgen":  # Conv3d: oneDNN's bf16 conv is fastest on channels_last_3d (its 2-D convs stay)
            for module in model.modules():
                if isinstance(module, torch.nn.Conv3d):
                    module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def prepare_input(x, kind: str, precision: str):
    """The input as the ``precision`` case feeds it (bf16 weights: bf16 input; CogVideoX bf16: channels_last_3d)."""
    import torch
    if precision in ("bf16", "compile"):
        x = x.to(torch.bfloat16)
        if kind != "vidgen":
            x = x.contiguous(memory_format=torch.channels_last_3d)
    return x


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


def ceiling_worker(threads: int, reps: int = 5, n: int = GEMM_N) -> dict:
    """``eval/ceiling.py``'s fp32 and bf16 ``n^3`` GEMM ceilings at ``threads`` threads."""
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ceiling import gemm_ceilings
    return {"threads": threads, **gemm_ceilings(n=n, repeats=reps)}


def speed_worker(kind: str, frames: int, size: int, threads: int, reps: int, widths=WIDTHS,
                 precision: str = "fp32") -> dict:
    """One case: FLOP-counted eager warm-up pass, (compiled: the timed first call), then ``reps`` timed passes."""
    import contextlib

    import torch
    torch.set_num_threads(threads)
    model = build(kind, widths, precision)
    params = sum(p.numel() for p in model.parameters())
    x = prepare_input(make_input(frames, size), kind, precision)
    amp = torch.autocast("cpu", torch.bfloat16) if precision == "amp" else contextlib.nullcontext()
    compile_s = None
    with torch.no_grad(), amp:
        enc_flops, z = count_flops(lambda v: model.encode(v).latent_dist.mode(), x)
        dec_flops, y = count_flops(lambda v: model.decode(v).sample, z)
        assert y.shape == x.shape, (y.shape, x.shape)
        if precision == "compile":
            import torch._inductor.config as inductor_config
            inductor_config.freezing = True  # prepacked weights (inference only); this worker is its own process
            model.encoder.compile()
            model.decoder.compile()
            t0 = time.perf_counter()
            y = model.decode(model.encode(x).latent_dist.mode()).sample
            compile_s = time.perf_counter() - t0
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
    return {"model": kind, "precision": precision, "frames": frames, "size": size, "threads": threads,
            "params": params, "latent_shape": list(z.shape), "input_sum": float(x.double().sum()),
            "output_dtype": str(y.dtype), "flops_encode": enc_flops, "flops_decode": dec_flops,
            "gflop_per_frame": flops / frames / 1e9, "reps": reps, "wall_s": walls, "encode_s": encs, "cpu_s": cpus,
            "wall_s_median": wall, "compile_s": None if compile_s is None else max(0.0, compile_s - wall),
            "frames_per_s": frames / wall, "frames_per_s_min": frames / max(walls),
            "frames_per_s_max": frames / min(walls), "cpu_s_per_frame": statistics.median(cpus) / frames,
            "achieved_gflops": flops / wall / 1e9, "loadavg_1min_before": load_before, "peak_rss_mb": _rss_mb(),
            "rss_after_first_pass_mb": rss_loaded}


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


def inductor_cache() -> Path:
    """The workers' inductor cache: the caller's ``TORCHINDUCTOR_CACHE_DIR`` (the Makefile sets one), else CACHE_DIR."""
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", CACHE_DIR)).resolve()


def run_case(mode: str, **kw) -> dict:
    """Run one worker in a fresh subprocess (its own peak RSS) and return its JSON line."""
    cmd = [sys.executable, __file__, "--worker", json.dumps({"mode": mode, **kw})]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TORCHINDUCTOR_CACHE_DIR": str(inductor_cache())}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"worker {mode} {kw} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarize(cases: list[dict], ceilings: list[dict]) -> dict:
    """Add the fraction of the matching-dtype GEMM ceiling, the speed-up over the same model's fp32 and vidgen's
    speed-up over each model at the same precision; group by frame count, model and precision."""
    n = ceilings[0]["fp32"]["n"]
    ceiling = {}
    for d in ("fp32", "bf16"):
        times = [t for c in ceilings for t in c[d]["times_s"]]
        ceiling[d] = 2 * n ** 3 / statistics.median(times) / 1e9
    by_frames: dict = {}
    for c in cases:
        c["ceiling_dtype"] = PRECISIONS[c["precision"]][1]
        c["fraction_of_ceiling"] = c["achieved_gflops"] / ceiling[c["ceiling_dtype"]]
        by_frames.setdefault(str(c["frames"]), {}).setdefault(c["model"], {})[c["precision"]] = c
    for row in by_frames.values():
        for kind, per in row.items():
            for c in per.values():
                if "fp32" in per:
                    c["speedup_vs_fp32"] = c["frames_per_s"] / per["fp32"]["frames_per_s"]
                v = row.get("vidgen", {}).get(c["precision"])
                if v is not None:
                    c["vidgen_speedup"] = v["frames_per_s"] / c["frames_per_s"]
                    c["vidgen_memory_ratio"] = v["peak_rss_mb"] / c["peak_rss_mb"]
    return {"ceilings": {"n": n, "runs": ceilings, "gflops": ceiling,
                         "bf16_over_fp32": ceiling["bf16"] / ceiling["fp32"]}, "by_frames": by_frames}


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f} M"


def _cell(c: dict | None, compiled: bool = False) -> str:
    if c is None:
        return "–"
    text = f"{c['frames_per_s']:.2f} ({100 * c['fraction_of_ceiling']:.0f} %)"
    if "speedup_vs_fp32" in c and c["precision"] != "fp32":
        text += f", **{c['speedup_vs_fp32']:.1f}x**"
    if compiled and c.get("compile_s") is not None:
        text += f"; compile {c['compile_s']:.0f} s"
    return text


def readme_table(results: dict) -> str:
    """The README table (``<!-- table:vae_speed -->``) from ``docs/results/bench_vae_speed.json``: frames/s per
    precision with the fraction of the same-dtype GEMM ceiling and the speed-up over fp32."""
    s = results["speed"]
    size = s["size"]
    lines = [f"| frames ({size}x{size}) | model | params | GFLOP / frame | fp32 frames/s | bf16 frames/s | "
             "bf16 + compile frames/s | peak RSS fp32 / bf16 |",
             "|---|---|---|---|---|---|---|---|"]
    for frames, row in s["by_frames"].items():
        for kind, per in row.items():
            first = next(iter(per.values()))
            label = MODELS.get(kind, (kind,))[0]
            rss = " / ".join(f"{per[p]['peak_rss_mb']:.0f}" for p in ("fp32", "bf16") if p in per)
            bf16 = _cell(per.get("bf16"))
            if "amp" in per:
                bf16 += f"; autocast {per['amp']['frames_per_s']:.2f}"
            lines.append(f"| {frames} | {label} | {_fmt_params(first['params'])} | {first['gflop_per_frame']:.1f} | "
                         f"{_cell(per.get('fp32'))} | {bf16} | {_cell(per.get('compile'), True)} | {rss} MB |")
    c = s["ceilings"]
    runs = c["runs"]
    drift = "; ".join(f"{d} {runs[0][d]['gflops']:.0f} before / {runs[-1][d]['gflops']:.0f} after"
                      for d in ("fp32", "bf16")) if len(runs) > 1 else ""
    load = f", load average {s['loadavg_start'][0]:.2f} at start" if "loadavg_start" in s else ""
    reps = sorted({p["reps"] for row in s["by_frames"].values() for per in row.values() for p in per.values()})
    lines += ["", f"frames/s: median of {'/'.join(map(str, reps))} timed encode + decode passes after one "
              "FLOP-counted warm-up (min–max in the results file); in brackets the achieved model GFLOP/s as a "
              "fraction of the GEMM ceiling of the same dtype; bold: speed-up over the same model in fp32. "
              f"bf16 = bf16 weights (CogVideoX also channels_last_3d); compile = bf16 + torch.compile (inductor, "
              f"freezing), compile time apart. {s['threads']} thread{'s' * (s['threads'] != 1)}, {s['date'][:10]}"
              f"{load}; {c['n']}³ GEMM ceilings fp32 {c['gflops']['fp32']:.0f} / bf16 {c['gflops']['bf16']:.0f} "
              f"GFLOP/s ({c['bf16_over_fp32']:.1f}x; median of {len(runs)} runs in the same run"
              f"{': ' + drift if drift else ''}); `{s['command']}`."]
    return "\n".join(lines)


def _describe_ceiling(c: dict, when: str) -> str:
    return (f"GEMM {GEMM_N}^3 ceilings {when}, {c['threads']} threads: fp32 {c['fp32']['gflops']:.0f}, "
            f"bf16 {c['bf16']['gflops']:.0f} GFLOP/s")


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, nargs="+", default=[17])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3, help="timed encode+decode passes per case (median reported)")
    parser.add_argument("--gemm-reps", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS),
                        help="amp is run for vidgen only, compile for the models in COMPILED_MODELS")
    parser.add_argument("--memory", action="store_true", help="decode-memory flatness (17 vs 257 frames)")
    parser.add_argument("--chunk", type=int, default=2, help="latent frames per decode chunk (--memory)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kw = json.loads(args.worker)
        mode = kw.pop("mode")
        fn = {"ceiling": ceiling_worker, "speed": speed_worker, "memory": memory_worker}[mode]
        print(json.dumps(fn(**kw)))
        return 0

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
        ceilings = [run_case("ceiling", threads=args.threads, reps=args.gemm_reps)]
        print(_describe_ceiling(ceilings[0], "before"), flush=True)
        cases = []
        for frames in args.frames:
            for kind in args.models:
                for precision in args.precisions:
                    if (precision == "compile" and kind not in COMPILED_MODELS) or (precision == "amp" and kind != "vidgen"):
                        continue
                    c = run_case("speed", kind=kind, frames=frames, size=args.size, threads=args.threads,
                                 reps=args.reps, precision=precision)
                    cases.append(c)
                    extra = f", compile {c['compile_s']:.1f} s" if c["compile_s"] is not None else ""
                    print(f"{kind:15s} {precision:8s} {frames:3d}x{args.size}x{args.size}: {c['params'] / 1e6:.1f} M "
                          f"params, {c['gflop_per_frame']:.1f} GFLOP/frame, {c['frames_per_s']:.2f} frames/s "
                          f"({c['frames_per_s_min']:.2f}-{c['frames_per_s_max']:.2f}), {c['achieved_gflops']:.1f} "
                          f"GFLOP/s, peak RSS {c['peak_rss_mb']:.0f} MB{extra}", flush=True)
        ceilings.append(run_case("ceiling", threads=args.threads, reps=args.gemm_reps))
        print(_describe_ceiling(ceilings[1], "after"), flush=True)
        cache = inductor_cache()
        section.update({"size": args.size, "frames": args.frames, "reps": args.reps, "widths": list(WIDTHS),
                        "models": {k: MODELS[k][1] for k in args.models}, "precisions": args.precisions,
                        "inductor_cache": str(cache.relative_to(ROOT) if cache.is_relative_to(ROOT) else cache),
                        "flop_counting": "torch.utils.flop_counter.FlopCounterMode on one eager encode + decode at "
                                         "the benchmark shape (convolutions, matmuls, attention; not norms/activations)",
                        **summarize(cases, ceilings)})
        g = section["ceilings"]["gflops"]
        print(f"ceilings (median of both runs): fp32 {g['fp32']:.0f}, bf16 {g['bf16']:.0f} GFLOP/s")
        for frames, row in section["by_frames"].items():
            for kind, per in row.items():
                print(f"  {frames} frames {kind}: " + ", ".join(
                    f"{p} {c['frames_per_s']:.2f} f/s ({c.get('speedup_vs_fp32', 1):.2f}x fp32, "
                    f"{100 * c['fraction_of_ceiling']:.0f} % of {c['ceiling_dtype']} ceiling)" for p, c in per.items()))
        payload = {"speed": section}
        if "memory" in previous:
            payload["memory"] = previous["memory"]
    write_result(out, payload, command=command, threads=args.threads)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

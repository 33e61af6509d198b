"""Benchmark: masked (MaskGIT) vs flow (DiT) vs autoregressive (GPT + KV cache) generators on one backbone size.

One run measures, with random weights (speed does not depend on weight values) and random prompt embeddings:
sampling seconds per video at two batch sizes, FLOPs (``FlopCounterMode``; CPU SDPA is added with its dense
formula) and their fraction of a 2048^3 fp32 GEMM timed in the same run, the uncached AR scaling law and the
cached-vs-uncached speed-up on the same grid, bytes moved per step (arithmetic intensity), training tokens/s,
parameter counts, and text conditioning by prefix tokens vs cross-attention. No tokenizer runs: a 33x128x128
video is a 9x16x16 token grid for a 4x8x8 tokenizer; flow works on 16-channel latents with (1, 2, 2) patches,
i.e. 9x8x8 tokens (``--flow-patch 1`` matches 9x16x16).

    python eval/bench_generators.py            # full run -> docs/results/bench_generators.json
    python eval/bench_generators.py --quick    # smoke run (tiny preset, 2x8x8 grid) -> ..._quick.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from vidgen.attention.kv_cache import ModelKVCache
from vidgen.generators import (AutoregressiveVideoTransformer, DiffusionVideoTransformer, MaskedVideoTransformer,
                               generate_ids, generate_latents, generate_tokens)
from vidgen.generators.embeddings import Conditioning

TEXT_DIM, TEXT_TOKENS, LATENT_CHANNELS, CFG_SCALE = 384, 16, 16, 4.0
# FlopCounterMode has no formula for the CPU SDPA kernel: count it as dense attention (2 matmuls), which is what
# the kernel computes when it gets a mask (the prefix + token-causal pattern of AR is a dense boolean mask).
CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v)}


def timeit(fn, repeats: int = 1, warmup=None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs, after one call of ``warmup`` (if given)."""
    if warmup is not None:
        warmup()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as counter:
        fn()
    return counter.get_total_flops()


def cond(batch: int) -> Conditioning:
    return Conditioning(text=torch.randn(batch, TEXT_TOKENS, TEXT_DIM), pooled=torch.randn(batch, TEXT_DIM))


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(kind: str, args, **overrides):
    kw = dict(text_dim=TEXT_DIM, max_text_tokens=TEXT_TOKENS, **overrides)
    if kind == "flow":
        p = args.flow_patch
        return DiffusionVideoTransformer.from_preset(args.preset, in_channels=LATENT_CHANNELS, patch_size=(1, p, p),
                                                     **kw).eval()
    cls = MaskedVideoTransformer if kind == "masked" else AutoregressiveVideoTransformer
    return cls.from_preset(args.preset, vocab_size=args.vocab, **kw).eval()


def sampler(kind: str, model, batch: int, grid, steps: int = 1, scale: float = 1.0, use_cache: bool = True):
    """A zero-argument call generating ``batch`` videos on ``grid`` (flow: the latent grid)."""
    c, g = cond(batch), torch.Generator().manual_seed(0)
    if kind == "masked":
        return lambda: generate_ids(model, grid, batch, cond=c, guidance_scale=scale, num_inference_steps=steps,
                                    generator=g)
    if kind == "flow":
        shape, sched = (batch, LATENT_CHANNELS, *grid), FlowMatchEulerDiscreteScheduler()
        return lambda: generate_latents(model, sched, shape, cond=c, guidance_scale=scale,
                                        num_inference_steps=steps, generator=g)
    return lambda: generate_tokens(model, grid, batch, cond=c, guidance_scale=scale, generator=g, use_cache=use_cache)


def forward_flops(kind: str, model, grid) -> int:
    """FLOPs of one batch-1 forward pass over the whole grid (AR: teacher forcing = one uncached AR step)."""
    if kind == "flow":
        x = torch.randn(1, LATENT_CHANNELS, *grid)
        return count_flops(lambda: model(x, torch.tensor([500.0]), cond(1)))
    ids = torch.zeros((1, *grid), dtype=torch.long)
    return count_flops(lambda: model(ids, cond(1)))


def ar_cached_flops(model, grid):
    """Batch-1 FLOPs of a cached AR generation = prefill + (N - 1) decode steps. A decode step's FLOPs are affine
    in its position, so (N - 1) x one step counted at the mean position is exact. -> (total, step, position)."""
    cfg, p, n = model.backbone_config, model.num_prefix_tokens, math.prod(grid)
    prefix, context, vec = model.embed_condition(cond(1), 1)
    cache = ModelKVCache.allocate(cfg.depth, 1, cfg.num_heads, p + n, cfg.head_dim)
    bos = torch.full((1, 1), model.bos_token_id)
    prefill = count_flops(lambda: model.forward_tokens(bos, grid, vec, prefix, context, cache, 0))
    mid = p + n // 2
    for layer in cache.layers:  # pretend the first `mid` positions are cached (values do not change FLOPs)
        layer.length = mid
    step = count_flops(lambda: model.forward_tokens(bos, grid, vec, None, context, cache, mid))
    return prefill + (n - 1) * step, step, mid


def traffic(model, flops_step_b1: int, kv_tokens: int, steps: int, batch: int) -> dict:
    """Bytes one sampling step reads at ``batch``: every weight matrix once + K and V of ``kv_tokens`` per layer."""
    cfg = model.backbone_config
    weights = 4 * (n_params(model.backbone) + n_params(model.head))
    kv = 4 * 2 * cfg.depth * kv_tokens * cfg.dim * batch
    flops = flops_step_b1 * batch
    return dict(batch=batch, flops_per_step=flops, weight_bytes_per_step=weights, kv_bytes_per_step=kv,
                intensity_flop_per_byte=flops / (weights + kv), bytes_per_video=steps * (weights + kv) / batch)


def fit_power(points) -> tuple[float, float]:
    """seconds = a * tokens^k by least squares in log-log -> (a, k)."""
    k, log_a = np.polyfit(np.log([n for n, _ in points]), np.log([s for _, s in points]), 1)
    return float(math.exp(log_a)), float(k)


def ar_uncached_scaling(model, batch: int, grid, budget: float) -> dict:
    """Uncached AR on 1, 2, ... frames of the grid while the predicted time fits ``budget`` seconds."""
    points = []
    sampler("ar", model, batch, (1, 2, 2), use_cache=False)()  # warm-up
    for frames in range(1, grid[0] + 1):
        n = frames * grid[1] * grid[2]
        if points:  # one point: assume quadratic; then the fitted law
            a, k = fit_power(points) if len(points) > 1 else (points[0][1] / points[0][0] ** 2, 2.0)
            if a * n ** k > budget:
                break
        print(f"  ar uncached b={batch} grid {frames}x{grid[1]}x{grid[2]} ({n} tokens) ...", flush=True)
        points.append((n, timeit(sampler("ar", model, batch, (frames, *grid[1:]), use_cache=False))))
        print(f"    {points[-1][1]:.2f} s", flush=True)
    largest = (len(points), *grid[1:])
    cached = timeit(sampler("ar", model, batch, largest))
    out = dict(batch=batch, points=[dict(tokens=n, seconds=s) for n, s in points], grid=list(largest),
               uncached_s=points[-1][1], cached_s=cached, speedup=points[-1][1] / cached)
    if len(points) > 1:
        a, k = fit_power(points)
        out.update(exponent=k, predicted_full_grid_s=a * math.prod(grid) ** k)
    return out


def machine_rates(repeats: int) -> tuple[float, float, float]:
    """-> (seconds of a 2048^3 fp32 GEMM, its FLOP/s, copy bandwidth in bytes/s counting read + write)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gemm_s = timeit(lambda: a @ b, repeats, warmup=lambda: a @ b)
    src = torch.rand(2 ** 25)
    dst = torch.empty_like(src)
    copy_s = timeit(lambda: dst.copy_(src), repeats, warmup=lambda: dst.copy_(src))
    return gemm_s, 2 * 2048 ** 3 / gemm_s, 2 * src.nbytes / copy_s


def text_conditioning(args, grid, repeats: int) -> dict:
    """One batch-1 flow forward with the text as self-attention prefix tokens vs per-block cross-attention."""
    out = {}
    for mode in ("prefix", "cross"):
        model = build("flow", args, text_conditioning=mode)
        x, c, t = torch.randn(1, LATENT_CHANNELS, *grid), cond(1), torch.tensor([500.0])
        fn = lambda: model(x, t, c)  # noqa: E731
        out[mode] = dict(params=n_params(model), backbone=n_params(model.backbone),
                         forward_s=timeit(fn, repeats, warmup=fn), gflop=count_flops(fn) / 1e9)
        print(f"  {mode:>6}: {out[mode]['params'] / 1e6:.2f} M params, {out[mode]['forward_s'] * 1e3:.0f} ms, "
              f"{out[mode]['gflop']:.2f} GFLOP", flush=True)
    return out


def train_throughput(kind: str, model, args, grid, tokens: int) -> dict:
    b = args.train_batch
    x = torch.randn(b, LATENT_CHANNELS, *grid) if kind == "flow" else torch.randint(0, args.vocab, (b, *grid))
    opt, c, g = torch.optim.AdamW(model.parameters(), lr=1e-4), cond(b), torch.Generator().manual_seed(0)
    model.train()

    def step():
        loss, _ = model.loss(x, c, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    s = timeit(step, args.train_steps, warmup=step)
    print(f"  {kind:>6}: {s:.2f} s/step, {b * tokens / s:.0f} tokens/s", flush=True)
    return dict(batch=b, tokens_per_step=b * tokens, seconds_per_step=s, tokens_per_s=b * tokens / s)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--video", type=int, nargs=3, default=[33, 128, 128], help="frames, height, width")
    parser.add_argument("--vocab", type=int, default=1024, help="codebook size of the discrete tokenizer")
    parser.add_argument("--flow-patch", type=int, default=2, choices=(1, 2), help="spatial patch of the flow model")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--masked-steps", type=int, default=12)
    parser.add_argument("--flow-steps", type=int, nargs="+", default=[50, 25])
    parser.add_argument("--cfg", action="store_true", help=f"also sample with CFG (scale {CFG_SCALE}, 2x batch)")
    parser.add_argument("--ar-uncached-budget", type=float, default=300.0, help="seconds per uncached AR run")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="GEMM / copy / single-forward timings (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (well under a minute)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.video, args.batches, args.masked_steps, args.flow_steps = "tiny", [5, 64, 64], [1, 2], 2, [2]
        args.ar_uncached_budget, args.train_steps, args.repeats = 5.0, 2, 3
    out_path = Path(args.out or f"docs/results/bench_generators{'_quick' if args.quick else ''}.json")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()
    frames, height, width = args.video
    grid = (1 + (frames - 1) // 4, height // 8, width // 8)  # 4x8x8 tokenizer (flow: its latent grid)
    bmax, scales = max(args.batches), ([1.0, CFG_SCALE] if args.cfg else [1.0])
    print(f"torch {torch.__version__}, {args.threads} threads, preset {args.preset}, video {frames}x{height}x{width}"
          f" -> token grid {'x'.join(map(str, grid))}, load average {load_start[0]:.2f}", flush=True)
    if load_start[0] > 0.5:
        print("WARNING: the machine is busy; when threads compete for cores, small ops (AR decode steps) slow down "
              "by up to 100x (each parallel region waits for a descheduled thread): read ratios with care")
    gemm_s, gemm, bandwidth = machine_rates(args.repeats)
    print(f"2048^3 fp32 GEMM: {gemm_s * 1e3:.0f} ms = {gemm / 1e9:.1f} GFLOP/s; copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s (read + write)", flush=True)

    models = {kind: build(kind, args) for kind in ("masked", "flow", "ar")}
    tokens = {"masked": math.prod(grid), "ar": math.prod(grid), "flow": math.prod(models["flow"].patch.grid(grid))}
    params = {k: dict(total=n_params(m), backbone=n_params(m.backbone)) for k, m in models.items()}
    print("parameters: " + ", ".join(f"{k} {v['total'] / 1e6:.2f} M (backbone {v['backbone'] / 1e6:.2f} M)"
                                     for k, v in params.items()))
    print("tokens per video: " + ", ".join(f"{k} {n} (+{TEXT_TOKENS} text prefix)" for k, n in tokens.items()))
    results: dict = dict(command=" ".join([sys.executable, *sys.argv]), torch=torch.__version__, threads=args.threads,
                         date=datetime.now().isoformat(timespec="seconds"), host_cpus=os.cpu_count(),
                         loadavg_start=load_start, config=dict(vars(args), token_grid=list(grid)), tokens=tokens,
                         gemm=dict(n=2048, seconds=gemm_s, gflops=gemm / 1e9), copy_bandwidth_gbs=bandwidth / 1e9,
                         params=params, sampling=[])
    with torch.inference_mode():
        fwd = {k: forward_flops(k, m, grid) for k, m in models.items()}
        ar_total, ar_step, ar_mid = ar_cached_flops(models["ar"], grid)
        flops_per_video = {"masked": fwd["masked"] * args.masked_steps, "ar_cached": ar_total,
                           "ar_uncached": fwd["ar"] * tokens["ar"],
                           **{f"flow{s}": fwd["flow"] * s for s in args.flow_steps}}
        jobs = [("masked", f"masked {args.masked_steps} steps", args.masked_steps, "masked"),
                *[("flow", f"flow {s} steps", s, f"flow{s}") for s in args.flow_steps],
                ("ar", "ar kv-cache", 1, "ar_cached")]
        print(f"{'sampler':>16} {'batch':>5} {'cfg':>4} {'tokens':>6} {'s/call':>8} {'s/video':>8} {'GFLOP/video':>11} "
              f"{'GFLOP/s':>8} {'% GEMM':>7}", flush=True)
        for kind, label, steps, key in jobs:
            for batch in args.batches:
                for scale in scales:
                    warm = sampler(kind, models[kind], batch, (1, 2, 2) if kind == "ar" else grid, 1, scale)
                    secs = timeit(sampler(kind, models[kind], batch, grid, steps, scale), 1, warmup=warm)
                    flops = flops_per_video[key] * (1 if scale == 1.0 else 2)
                    rate = flops * batch / secs
                    results["sampling"].append(dict(sampler=key, batch=batch, guidance_scale=scale, steps=steps,
                                                    tokens=tokens[kind], seconds=secs, seconds_per_video=secs /
                                                    batch, gflop_per_video=flops / 1e9, gflops=rate / 1e9,
                                                    fraction_of_gemm=rate / gemm))
                    print(f"{label:>16} {batch:>5} {scale if scale != 1 else '-':>4} {tokens[kind]:>6} {secs:>8.2f} "
                          f"{secs / batch:>8.2f} {flops / 1e9:>11.1f} {rate / 1e9:>8.1f} {100 * rate / gemm:>6.1f}%",
                          flush=True)
        print("autoregressive without KV cache (the whole grid is recomputed for every token):", flush=True)
        uncached = [ar_uncached_scaling(models["ar"], batch, grid, args.ar_uncached_budget) for batch in args.batches]
        for u in uncached:
            print(f"  b={u['batch']}: {'x'.join(map(str, u['grid']))}: uncached {u['uncached_s']:.2f} s, cached "
                  f"{u['cached_s']:.2f} s -> {u['speedup']:.1f}x; time ~ tokens^{u.get('exponent', float('nan')):.2f}"
                  f", full grid predicted {u.get('predicted_full_grid_s', float('nan')):.0f} s", flush=True)
        print("text conditioning (flow, one forward at batch 1):", flush=True)
        text = text_conditioning(args, grid, args.repeats)

    # masked vs AR: bytes each step reads vs FLOPs it does (roofline = max(FLOPs / GEMM rate, bytes / bandwidth))
    seconds = {(r["sampler"], r["batch"]): r["seconds_per_video"] for r in results["sampling"]
               if r["guidance_scale"] == 1}
    intensity = dict(machine_balance_flop_per_byte=gemm / bandwidth, ar_decode_step_position=ar_mid,
                     ar_over_masked_flops=flops_per_video["ar_cached"] / flops_per_video["masked"])
    print(f"masked vs AR (cached): machine balance {gemm / bandwidth:.0f} FLOP/byte; AR/masked FLOPs "
          f"{intensity['ar_over_masked_flops']:.2f}")
    for batch in args.batches:
        m = traffic(models["masked"], fwd["masked"], TEXT_TOKENS + tokens["masked"], args.masked_steps, batch)
        r = traffic(models["ar"], ar_step, ar_mid, tokens["ar"] - 1, batch)
        for name, t, key in (("masked", m, "masked"), ("ar_cached_decode", r, "ar_cached")):
            t.update(roofline_s_per_video=max(flops_per_video[key] / gemm, t["bytes_per_video"] / bandwidth),
                     measured_s_per_video=seconds[(key, batch)], seconds_per_step=seconds[(key, batch)] * batch /
                     (args.masked_steps if key == "masked" else tokens["ar"]))
            intensity[f"{name}_b{batch}"] = t
        ratio = seconds[("ar_cached", batch)] / seconds[("masked", batch)]
        intensity[f"ar_over_masked_seconds_b{batch}"] = ratio
        print(f"  b={batch}: FLOP/byte masked {m['intensity_flop_per_byte']:.0f} vs AR decode "
              f"{r['intensity_flop_per_byte']:.2f}; MB/video {m['bytes_per_video'] / 1e6:.0f} vs "
              f"{r['bytes_per_video'] / 1e6:.0f}; roofline s/video {m['roofline_s_per_video']:.3f} vs "
              f"{r['roofline_s_per_video']:.3f}; measured AR/masked seconds {ratio:.2f}x")

    print(f"training (AdamW, batch {args.train_batch}, median of {args.train_steps} steps after one warm-up):")
    training = {kind: train_throughput(kind, model, args, grid, tokens[kind]) for kind, model in models.items()}
    fractions = {r["sampler"]: r["fraction_of_gemm"] for r in results["sampling"]
                 if r["guidance_scale"] == 1 and r["batch"] == bmax}
    speedup = uncached[0]["speedup"]
    targets = dict(measured_at_batch=bmax, masked_ge_half_gemm=fractions["masked"] >= 0.5,
                   flow_ge_half_gemm=all(fractions[f"flow{s}"] >= 0.5 for s in args.flow_steps),
                   ar_cache_speedup_ge_20x=speedup >= 20)
    results.update(flop_counting="sampling FLOPs = one batch-1 forward counted x steps x batch (x2 with CFG); AR "
                   "cached = prefill + (N-1) decode steps counted at the mean position; AR uncached = one whole-grid "
                   "forward x N; CPU SDPA counted as dense attention", flops_per_video=flops_per_video,
                   forward_flops_b1=fwd, ar_uncached=uncached, text_conditioning=text, intensity=intensity,
                   training=training, targets=targets, loadavg_end=os.getloadavg())
    print(f"targets (batch {bmax}): masked {100 * fractions['masked']:.0f}% of GEMM, flow "
          + ", ".join(f"{100 * fractions[f'flow{s}']:.0f}%" for s in args.flow_steps)
          + f" (>= 50%); AR cache speed-up {speedup:.1f}x at batch {uncached[0]['batch']} (>= 20x) -> {targets}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2))
    print(f"load average {load_start[0]:.2f} -> {results['loadavg_end'][0]:.2f}; wrote {out_path}")
    return 0



def readme_table(results: dict) -> str:
    """The README's sampling table (``eval/readme_tables.py``, marker ``generators``) from a results file."""
    def label(r):
        if r["sampler"] == "ar_cached":
            return "autoregressive, KV cache"
        return f"{'masked' if r['sampler'] == 'masked' else 'flow'}, {r['steps']} steps"
    best = {}  # the lower fraction of GEMM at the target batch in bold, as the target reads it
    for r in results["sampling"]:
        if r["batch"] == results["targets"]["measured_at_batch"] and r["sampler"] in ("masked", "flow50"):
            best[r["sampler"]] = r
    lines = ["| sampler | batch | s / video | GFLOP / video | achieved GFLOP/s | % of GEMM |", "|---|---|---|---|---|---|"]
    for r in results["sampling"]:
        pct = f"{r['fraction_of_gemm']:.1%}" if r["fraction_of_gemm"] < 0.1 else f"{r['fraction_of_gemm']:.0%}"
        pct = pct.replace("%", " %")
        pct = f"**{pct}**" if best.get(r["sampler"]) is r else pct
        gflops = f"{r['gflops']:.0f}" if r["gflops"] >= 100 else f"{r['gflops']:.1f}"
        lines.append(f"| {label(r)} | {r['batch']} | {r['seconds_per_video']:.2f} | {r['gflop_per_video']:.0f} | "
                     f"{gflops} | {pct} |")
    lines += ["", f"{results['threads']} threads, GEMM {results['gemm']['gflops']:.0f} GFLOP/s in the same run, "
              f"{results['date'][:10]}; `{' '.join(['python', *results['command'].split()[1:]])}`."]
    return "\n".join(lines)

if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: 3D windowed attention, blocked CPU path vs dense masked SDPA vs unmasked SDPA (forward+backward).

All methods run interleaved in the same rounds (the machine is shared and noisy), so the printed speed-ups
are ratios of medians measured side by side. Beside each measured ratio we print the FLOP-count upper bound
(dense work / allowed work, as NATTEN reports) and the work the blocked path really does. For the Triton
kernel (no GPU here) we report the fraction of (query tile, key tile) pairs it skips for each pattern.

    python eval/bench_attention.py --threads 2            # the README table (several minutes)
    python eval/bench_attention.py --quick                # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vidgen.attention import attention3d, make_pattern
from vidgen.attention.cpu_blocked import blocked_work, plan_blocks
from vidgen.attention.masks import PATTERN_FACTORIES, pattern_mask
from vidgen.attention.reference import cached_pattern_mask
from vidgen.attention.tiles import needed_tile_map, tile_visit_map


def fwd_bwd_seconds(fn, q, k, v) -> float:
    for x in (q, k, v):
        x.grad = None
    start = time.perf_counter()
    fn(q, k, v).sum().backward()
    return time.perf_counter() - start


def bench_grid(grid, window, heads, head_dim, rounds, causal=False, with_unmasked=True):
    pattern = make_pattern(grid, window, causal)
    n = pattern.num_tokens
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, head_dim, generator=gen).requires_grad_() for _ in range(3))
    cached_pattern_mask(pattern, q.device)  # build the dense mask outside the timings (it is cached in use)
    methods = {"blocked": lambda a, b, c: attention3d(a, b, c, grid, window, causal, backend="cpu"),
               "dense_masked_sdpa": lambda a, b, c: attention3d(a, b, c, grid, window, causal, backend="reference")}
    if with_unmasked:
        methods["unmasked_sdpa"] = lambda a, b, c: F.scaled_dot_product_attention(a, b, c)
    fwd_bwd_seconds(methods["blocked"], q, k, v)  # warm-up (mask / plan caches)
    times = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            times[name].append(fwd_bwd_seconds(fn, q, k, v))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    plans = plan_blocks(pattern)
    row = dict(grid=list(grid), tokens=n, window=window and list(window), causal=causal,
               block=[p.block for p in plans],
               seconds=med, flop_bound_speedup=1.0 / pattern.density(),
               blocked_work_speedup=n * n / blocked_work(pattern))
    for name in methods:
        if name != "blocked":  # per-round ratios, then the median: robust to load changing between rounds
            row[f"speedup_vs_{name}"] = statistics.median(
                other / mine for other, mine in zip(times[name], times["blocked"]))
    return row


def tile_skips(grid, tile_sizes):
    rows = []
    for name, factory in PATTERN_FACTORIES.items():
        pattern = factory(grid)
        mask = pattern_mask(pattern)
        row = dict(pattern=name, density=pattern.density())
        for bm, bn in tile_sizes:
            visited = tile_visit_map(pattern, bm, bn)
            needed = needed_tile_map(pattern, mask, bm, bn)
            row[f"{bm}x{bn}"] = dict(skipped=1 - visited.float().mean().item(),
                                     ideal=1 - needed.float().mean().item())
        rows.append(row)
        del mask
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--size", type=int, default=32, help="H = W of the token grid")
    parser.add_argument("--window", type=int, nargs=3, default=[3, 7, 7])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out", default="outputs/bench_attention.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.size, args.rounds = [2, 4], 16, 1
    torch.set_num_threads(args.threads)
    window = tuple(args.window)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, heads={args.heads}, D={args.head_dim}, "
          f"window={window}, forward+backward, median of {args.rounds} interleaved rounds")
    header = (f"{'T x H x W':>12} {'tokens':>7} {'block':>10} {'blocked s':>10} {'dense s':>9} {'unmasked s':>10} "
              f"{'vs dense':>9} {'vs unmasked':>11} {'FLOP bound':>10} {'blocked work':>12}")
    print(header)
    rows = []
    for frames in args.frames:
        row = bench_grid((frames, args.size, args.size), window, args.heads, args.head_dim, args.rounds)
        rows.append(row)
        s = row["seconds"]
        print(f"{'x'.join(map(str, row['grid'])):>12} {row['tokens']:>7} {'x'.join(map(str, row['block'])):>10} "
              f"{s['blocked']:>10.3f} {s['dense_masked_sdpa']:>9.3f} {s['unmasked_sdpa']:>10.3f} "
              f"{row['speedup_vs_dense_masked_sdpa']:>8.1f}x {row['speedup_vs_unmasked_sdpa']:>10.1f}x "
              f"{row['flop_bound_speedup']:>9.1f}x {row['blocked_work_speedup']:>11.1f}x", flush=True)
    base = rows[0]
    linear = [dict(frames=r["grid"][0], time_ratio=r["seconds"]["blocked"] / base["seconds"]["blocked"],
                   frames_ratio=r["grid"][0] / base["grid"][0]) for r in rows]
    print("linear in T (blocked): " + ", ".join(
        f"T={x['frames']}: time x{x['time_ratio']:.2f} for frames x{x['frames_ratio']:.0f}" for x in linear))
    pattern_grid = (args.frames[len(args.frames) // 2], args.size, args.size)
    print(f"other patterns at {pattern_grid} (blocked vs dense masked SDPA, forward+backward):")
    other = []
    for name, window, causal in [("spatial", (1, None, None), False), ("temporal", (None, 1, 1), False),
                                 ("window+causal", window, True), ("spatial window 1x7x7", (1, 7, 7), False)]:
        row = bench_grid(pattern_grid, window, args.heads, args.head_dim, max(1, args.rounds - 1), causal,
                         with_unmasked=False)
        row["pattern"] = name
        other.append(row)
        secs = row["seconds"]
        print(f"  {name:>20}: blocked {secs['blocked']:.3f}s, dense {secs['dense_masked_sdpa']:.3f}s,"
              f" speed-up {row['speedup_vs_dense_masked_sdpa']:.1f}x (FLOP bound {row['flop_bound_speedup']:.1f}x)",
              flush=True)
    tile_grid = (args.frames[-1], args.size, args.size)
    tile_sizes = [(64, 64), (128, 64)]
    skips = tile_skips(tile_grid, tile_sizes)
    print(f"Triton kernel: fraction of tile pairs skipped at {tile_grid} (kernel's test / ideal from the dense mask)")
    for r in skips:
        names = [f"{a}x{b}" for a, b in tile_sizes]
        cells = "  ".join(f"{t}: {r[t]['skipped']:.3f} / {r[t]['ideal']:.3f}" for t in names)
        print(f"  {r['pattern']:>8} (density {r['density']:.4f})  {cells}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(threads=args.threads, heads=args.heads, head_dim=args.head_dim,
                                              rounds=args.rounds, rows=rows, linear_in_t=linear, other_patterns=other,
                                              tile_skips=dict(grid=list(tile_grid), rows=skips),
                                              host_cpus=os.cpu_count(), torch=torch.__version__), indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

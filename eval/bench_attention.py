"""Benchmark: 3D windowed attention, fused CPU kernel and blocked CPU path vs dense masked SDPA vs unmasked SDPA
(forward+backward).

All methods run interleaved in the same rounds (the machine is shared and noisy), so the speed-ups are medians
of per-round ratios measured side by side. Beside each ratio: the FLOP-count upper bound (dense pairs / allowed
pairs, as NATTEN reports) and the blocked path's own work bound (dense pairs / pairs it computes, halo overlap
included). For the Triton kernel (no GPU here) we report the fraction of (query tile, key tile) pairs it skips.

    python eval/bench_attention.py --threads 2            # docs/results/bench_attention.json (~10 minutes)
    python eval/bench_attention.py --quick                # smoke run (outputs/bench_attention_quick.json)
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vidgen.attention import attention3d, cpu_window, make_pattern
from vidgen.attention.cpu_blocked import blocked_work, plan_blocks
from vidgen.attention.masks import PATTERN_FACTORIES, pattern_mask
from vidgen.attention.reference import cached_pattern_mask
from vidgen.attention.tiles import needed_tile_map, tile_visit_map

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "bench_attention.json"
OTHER_PATTERNS = [("spatial", (1, None, None), False), ("temporal", (None, 1, 1), False),
                  ("window+causal", None, True), ("spatial window 1x7x7", (1, 7, 7), False)]


def fwd_bwd_seconds(fn, q, k, v) -> float:
    for x in (q, k, v):
        x.grad = None
    start = time.perf_counter()
    fn(q, k, v).sum().backward()
    return time.perf_counter() - start


def _inputs(pattern, heads, head_dim):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(1, heads, pattern.num_tokens, head_dim, generator=gen).requires_grad_() for _ in range(3)]


def _interleaved(methods, q, k, v, rounds, warm=None):
    for name in warm or methods:  # warm-up: plan / mask caches, allocator (dense SDPA has none: it is costly)
        fwd_bwd_seconds(methods[name], q, k, v)
    times = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            times[name].append(fwd_bwd_seconds(fn, q, k, v))
    return times


def bench_grid(grid, window, heads, head_dim, rounds, causal=False, with_unmasked=True, with_dense=True):
    pattern = make_pattern(grid, window, causal)
    n = pattern.num_tokens
    q, k, v = _inputs(pattern, heads, head_dim)
    methods = {"blocked": lambda a, b, c: attention3d(a, b, c, grid, window, causal, backend="cpu")}
    if cpu_window.unsupported_reason(q, pattern) is None:
        methods["fused"] = lambda a, b, c: attention3d(a, b, c, grid, window, causal, backend="cpu_fused")
    if with_dense:
        cached_pattern_mask(pattern, q.device)  # the dense mask is cached in use: build it outside the timings
        methods["dense_masked_sdpa"] = lambda a, b, c: attention3d(a, b, c, grid, window, causal, backend="reference")
    if with_unmasked:
        methods["unmasked_sdpa"] = lambda a, b, c: F.scaled_dot_product_attention(a, b, c)
    times = _interleaved(methods, q, k, v, rounds, warm=[m for m in ("blocked", "fused") if m in methods])
    row = dict(grid=list(grid), tokens=n, window=window and list(window), causal=causal, rounds=rounds,
               block=[p.block for p in plan_blocks(pattern)],
               seconds={name: statistics.median(ts) for name, ts in times.items()},
               flop_bound_speedup=1.0 / pattern.density(), blocked_work_speedup=n * n / blocked_work(pattern))
    for fast in ("blocked", "fused"):  # per-round ratios, then the median: robust to load changing between rounds
        prefix = "" if fast == "blocked" else "fused_"
        for other in methods:
            if other != fast and fast in methods and not (fast == "fused" and other == "blocked"):
                row[f"{prefix}speedup_vs_{other}"] = statistics.median(o / m for o, m in zip(times[other], times[fast]))
    if "fused" in methods:
        row["fused_speedup_vs_blocked"] = statistics.median(o / m for o, m in zip(times["blocked"], times["fused"]))
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


def _x(values) -> str:
    return "×".join(map(str, values))


def _fused(r: dict, key: str, fmt: str) -> str:
    """A fused-kernel cell (an older results file, or a machine without a compiler, has none)."""
    return format(r[key], fmt) if key in r else "–"


def readme_table(results: dict) -> str:
    """The README tables (``<!-- table:attention -->``) from ``docs/results/bench_attention.json``."""
    lines = ["| T×H×W | tokens | `cpu_fused` (s) | `cpu` (s), block | dense masked SDPA (s) | unmasked SDPA (s) | "
             "`cpu_fused` vs dense masked | `cpu` vs dense masked | `cpu_fused` vs unmasked | FLOP bound | "
             "`cpu` work bound |", "|---" * 11 + "|"]
    for r in results["rows"]:
        s = r["seconds"]
        unmasked = f"{s['unmasked_sdpa']:.2f}" if "unmasked_sdpa" in s else "–"
        vs_unmasked = _fused(r, "fused_speedup_vs_unmasked_sdpa", ".1f") + ("×" if "unmasked_sdpa" in s else "")
        lines.append(f"| {_x(r['grid'])} | {r['tokens']:,} | {_fused(s, 'fused', '.3f')} | {s['blocked']:.3f}, "
                     f"{_x(r['block'])} | {s['dense_masked_sdpa']:.2f} | {unmasked} | "
                     f"**{_fused(r, 'fused_speedup_vs_dense_masked_sdpa', '.1f')}×** | "
                     f"{r['speedup_vs_dense_masked_sdpa']:.1f}× | {vs_unmasked} | {r['flop_bound_speedup']:.0f}× | "
                     f"{r['blocked_work_speedup']:.0f}× |")
    lines += ["", f"| pattern at {_x(results['pattern_grid'])} | `cpu_fused` (s) | `cpu` (s), block | dense masked "
              "SDPA (s) | `cpu_fused` vs dense masked | `cpu` vs dense masked | FLOP bound | `cpu` work bound |",
              "|---" * 8 + "|"]
    for r in results["other_patterns"]:
        s = r["seconds"]
        lines.append(f"| {r['pattern']} | {_fused(s, 'fused', '.3f')} | {s['blocked']:.3f}, {_x(r['block'])} | "
                     f"{s['dense_masked_sdpa']:.2f} | {_fused(r, 'fused_speedup_vs_dense_masked_sdpa', '.1f')}× | "
                     f"{r['speedup_vs_dense_masked_sdpa']:.1f}× | {r['flop_bound_speedup']:.0f}× | "
                     f"{r['blocked_work_speedup']:.0f}× |")
    first = results["linear_in_t"][0]["frames"]
    lin = ", ".join(f"×{x['time_ratio']:.2f} at T={x['frames']}" for x in results["linear_in_t"][1:])
    lin_fused = ", ".join(f"×{x['fused_time_ratio']:.2f} at T={x['frames']}" for x in results["linear_in_t"][1:]
                          if "fused_time_ratio" in x)
    lines += ["", f"Forward + backward, B=1, heads={results['heads']}, D={results['head_dim']}, fp32, "
              f"{results['threads']} threads, window {_x(results['window'])}; median of per-round ratios over "
              f"{results['rounds']} interleaved rounds. Time vs T={first}: `cpu` {lin}"
              + (f"; `cpu_fused` {lin_fused}" if lin_fused else "") + ". "
              f"{results['date'][:10]}, load average {results['loadavg_start'][0]:.2f} at start; `{results['command']}`."]
    return "\n".join(lines)


def readme_tile_table(results: dict) -> str:
    """The Triton tile-skipping table (``<!-- table:attention_tiles -->``) from the same results file."""
    skips = results["tile_skips"]
    sizes = [k for k in skips["rows"][0] if "x" in k and k[0].isdigit()]
    lines = ["| pattern | allowed pairs | " + " | ".join(f"skipped, {s.replace('x', '×')} tiles (ideal)" for s in sizes)
             + " |", "|---" * (2 + len(sizes)) + "|"]
    for r in skips["rows"]:
        cells = " | ".join(f"{r[s]['skipped']:.3f} ({r[s]['ideal']:.3f})" for s in sizes)
        lines.append(f"| {r['pattern']} | {100 * r['density']:.2f} % | {cells} |")
    lines += ["", f"Token grid {_x(skips['grid'])}; {results['date'][:10]}; `{results['command']}`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--size", type=int, default=32, help="H = W of the token grid")
    parser.add_argument("--wide", type=int, default=64, help="also time (max frames, size, wide); 0 = skip")
    parser.add_argument("--window", type=int, nargs=3, default=[3, 7, 7])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.size, args.wide, args.rounds = [2, 4], 16, 0, 1
    out = Path(args.out) if args.out else (Path("outputs/bench_attention_quick.json") if args.quick else OUT)
    torch.set_num_threads(args.threads)
    window = tuple(args.window)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, heads={args.heads}, D={args.head_dim}, "
          f"window={window}, forward+backward, median of {args.rounds} interleaved rounds")
    print(f"{'T x H x W':>12} {'tokens':>7} {'block':>8} {'cpu s':>7} {'fused s':>8} {'dense s':>8} {'cpu/dense':>9} "
          f"{'fused/dense':>11} {'FLOP bound':>10} {'work bound':>10}")
    grids = [(f, args.size, args.size) for f in args.frames]
    if args.wide:
        grids.append((args.frames[-1], args.size, args.wide))
    rows = []
    for grid in grids:
        row = bench_grid(grid, window, args.heads, args.head_dim, args.rounds, with_unmasked=grid[2] == args.size)
        rows.append(row)
        s = row["seconds"]
        print(f"{'x'.join(map(str, grid)):>12} {row['tokens']:>7} {'x'.join(map(str, row['block'])):>8} "
              f"{s['blocked']:>7.3f} {s.get('fused', float('nan')):>8.3f} {s['dense_masked_sdpa']:>8.2f} "
              f"{row['speedup_vs_dense_masked_sdpa']:>8.1f}x "
              f"{row.get('fused_speedup_vs_dense_masked_sdpa', float('nan')):>10.1f}x "
              f"{row['flop_bound_speedup']:>9.1f}x {row['blocked_work_speedup']:>9.1f}x", flush=True)
    square = [r for r in rows if r["grid"][1] == r["grid"][2]]
    linear = [dict(frames=r["grid"][0], time_ratio=r["seconds"]["blocked"] / square[0]["seconds"]["blocked"],
                   frames_ratio=r["grid"][0] / square[0]["grid"][0]) for r in square]
    for x, r in zip(linear, square):
        if "fused" in r["seconds"]:
            x["fused_time_ratio"] = r["seconds"]["fused"] / square[0]["seconds"]["fused"]
    print("linear in T (cpu): " + ", ".join(f"T={x['frames']}: x{x['time_ratio']:.2f}" for x in linear))
    pattern_grid = (args.frames[len(args.frames) // 2], args.size, args.size)
    print(f"other patterns at {pattern_grid} (forward+backward):")
    other = []
    for name, win, causal in OTHER_PATTERNS:
        row = bench_grid(pattern_grid, win or window, args.heads, args.head_dim, args.rounds, causal,
                         with_unmasked=False)
        row["pattern"] = name
        other.append(row)
        s = row["seconds"]
        print(f"  {name:>20}: cpu {s['blocked']:.3f}s, fused {s.get('fused', float('nan')):.3f}s, dense "
              f"{s['dense_masked_sdpa']:.2f}s, speed-up {row['speedup_vs_dense_masked_sdpa']:.1f}x / "
              f"{row.get('fused_speedup_vs_dense_masked_sdpa', float('nan')):.1f}x (FLOP bound "
              f"{row['flop_bound_speedup']:.1f}x)", flush=True)
    tile_grid = (args.frames[-1], args.size, args.size)
    tile_sizes = [(64, 64), (128, 64)]
    skips = tile_skips(tile_grid, tile_sizes)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import write_result

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "vidgen/attention"], capture_output=True, text=True).stdout
    payload = dict(git_commit=commit, vidgen_attention_modified=bool(dirty.strip()), heads=args.heads, head_dim=args.head_dim, rounds=args.rounds, window=list(window),
                   rows=rows, linear_in_t=linear, pattern_grid=list(pattern_grid), other_patterns=other,
                   tile_skips=dict(grid=list(tile_grid), rows=skips))
    path = write_result(out, payload, threads=args.threads)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: 3D windowed attention (forward+backward) in fp32, bf16 and bf16+compile, side by side in one run, with the
fp32 and bf16 GEMM ceilings (eval/ceiling.py) timed in the same run.

Methods, all interleaved in the same rounds for both dtypes (the machine is shared and noisy, so every speed-up is a
median of per-round ratios measured side by side):
* ``user_call``: ``attention3d(q, k, v, grid, window=...)`` with the default backend (``auto``), then
  ``out.sum().backward()`` without clearing ``.grad`` (gradients accumulate, as in a user's loop);
* ``dense_masked_sdpa``: ``F.scaled_dot_product_attention`` with the equivalent boolean mask (built once, outside the
  timings), gradients accumulating the same way: the baseline of the user's comparison;
* ``fused`` / ``blocked``: ``backend="cpu_fused"`` / ``"cpu"`` with ``.grad`` cleared first; ``unmasked_sdpa``;
* bf16 + ``torch.compile`` where it applies: dense masked SDPA and the blocked path (pure PyTorch) at the headline grid,
  and FlexAttention's forward (its CPU backward does not exist). It does not apply to the fused C kernel (a ctypes
  call: dynamo would only graph-break around it). Compile time is reported apart from the steady-state time.

Every method is called once before the timed rounds (warm-up) and timed over ``--rounds`` rounds (at least 5; odd
rounds run the methods in reverse order); every round's time is recorded (``round_seconds``), each speed-up is the
median of per-round ratios with the smallest beside it (``..._min``), and a negative time is an error. Grids
below 4,096 tokens (``--small``) time where ``auto`` switches from dense SDPA to the windowed paths: the smallest of
them at which a windowed path beats dense masked SDPA in both dtypes is reported as ``blocked_min_tokens``, the token
count ``vidgen.attention.api.BLOCKED_MIN_TOKENS`` is set from (``tests/scripts/test_bench_attention.py`` compares them).

FLOPs: the useful work, 4·D per allowed (query, key) pair forward and 8·D backward (QK^T, PV; dV, dP, dQ, dK), for
every method (dense SDPA computes N^2 pairs but is credited only with the allowed ones); GFLOP/s are given as a fraction
of the GEMM ceiling of the same dtype. Also: the FLOP-count bound (dense pairs / allowed pairs, as NATTEN reports) and
the fraction of (query tile, key tile) pairs the Triton kernel skips (no GPU here).

    python eval/bench_attention.py --threads 2            # docs/results/bench_attention.json (~10 minutes)
    python eval/bench_attention.py --quick                # smoke run (outputs/bench_attention_quick.json)
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vidgen.attention import attention3d, attention_mask3d, cpu_window, make_pattern
from vidgen.attention.api import choose_backend
from vidgen.attention.cpu_blocked import blocked_work, plan_blocks
from vidgen.attention.masks import PATTERN_FACTORIES, pattern_mask
from vidgen.attention.tiles import needed_tile_map, tile_visit_map

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import alternate, checked_seconds, require_rounds, write_result  # noqa: E402  (first: the start load)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "bench_attention.json"
OTHER_PATTERNS = [("spatial", (1, None, None), False), ("temporal", (None, 1, 1), False),
                  ("window+causal", None, True), ("spatial window 1x7x7", (1, 7, 7), False)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
ACCUMULATING = ("user_call", "dense_masked_sdpa")  # timed as the user's loop: .grad is not cleared


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_attention_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fwd_bwd_seconds(fn, q, k, v, clear_grads: bool = True) -> float:
    if clear_grads:
        for x in (q, k, v):
            x.grad = None
    start = time.perf_counter()
    fn(q, k, v).sum().backward()
    return checked_seconds(time.perf_counter() - start, "forward+backward")


def useful_flops(pattern, heads: int, head_dim: int, backward: bool = True) -> float:
    pairs = pattern.density() * pattern.num_tokens ** 2
    return heads * pairs * head_dim * (12 if backward else 4)


def _methods(grid, window, causal, mask, fused_ok, with_unmasked, with_dense):
    kw = dict(window=window, causal=causal)
    out = {"user_call": lambda a, b, c: attention3d(a, b, c, grid, **kw),
           "blocked": lambda a, b, c: attention3d(a, b, c, grid, backend="cpu", **kw)}
    if fused_ok:
        out["fused"] = lambda a, b, c: attention3d(a, b, c, grid, backend="cpu_fused", **kw)
    if with_dense:
        out["dense_masked_sdpa"] = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask)
    if with_unmasked:
        out["unmasked_sdpa"] = lambda a, b, c: F.scaled_dot_product_attention(a, b, c)
    return out


def bench_grid(grid, window, heads, head_dim, rounds, ceilings, causal=False, with_unmasked=True, with_dense=True,
               compile_bf16=False):
    """One grid: every method in fp32 and bf16 (and bf16 compiled), interleaved over ``rounds`` rounds."""
    pattern = make_pattern(grid, window, causal)
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(1, heads, pattern.num_tokens, head_dim, generator=gen) for _ in range(3)]
    mask = attention_mask3d(grid, window, causal) if with_dense else None
    inputs, methods, compile_s = {}, {}, {}
    for dname, dtype in DTYPES.items():
        xs = [x.to(dtype).requires_grad_() for x in base]
        inputs[dname] = xs
        ms = _methods(grid, window, causal, mask, cpu_window.unsupported_reason(xs[0], pattern) is None,
                      with_unmasked, with_dense)
        if compile_bf16 and dname == "bf16":
            for name in ("dense_masked_sdpa", "blocked"):
                if name in ms:
                    fn = torch.compile(ms[name], dynamic=False)
                    compile_s[f"{name}_compiled"] = fwd_bwd_seconds(fn, *xs)  # the first call compiles
                    ms[f"{name}_compiled"] = fn
        methods.update({(dname, name): fn for name, fn in ms.items()})
    for (dname, name), fn in methods.items():  # warm-up, every method: kernel build, plan / mask caches, allocator
        fwd_bwd_seconds(fn, *inputs[dname])
    times = {key: [] for key in methods}
    for r in range(rounds):
        for dname, name in alternate(methods, r):
            times[(dname, name)].append(fwd_bwd_seconds(methods[(dname, name)], *inputs[dname],
                                                        clear_grads=name not in ACCUMULATING))
    flops = useful_flops(pattern, heads, head_dim)
    row = dict(grid=list(grid), tokens=pattern.num_tokens, window=window and list(window), causal=causal,
               rounds=rounds, block=[p.block for p in plan_blocks(pattern)], flop_bound_speedup=1.0 / pattern.density(),
               blocked_work_speedup=pattern.num_tokens ** 2 / blocked_work(pattern), useful_gflop=flops / 1e9,
               auto_backend={d: choose_backend(*inputs[d], pattern) for d in DTYPES}, compile_seconds=compile_s)
    for dname in DTYPES:
        t = {name: ts for (d, name), ts in times.items() if d == dname}
        sec = {name: statistics.median(ts) for name, ts in t.items()}
        entry = dict(seconds=sec, round_seconds=t, gflops={n: flops / s / 1e9 for n, s in sec.items()},
                     fraction_of_ceiling={n: flops / s / 1e9 / ceilings[dname]["gflops"] for n, s in sec.items()})
        for fast in ("user_call", "fused", "blocked"):  # per-round ratios, then the median
            for other in ("dense_masked_sdpa", "unmasked_sdpa", "blocked"):
                if fast in t and other in t and other != fast:
                    ratios = [o / m for o, m in zip(t[other], t[fast])]
                    entry[f"{fast}_speedup_vs_{other}"] = statistics.median(ratios)
                    entry[f"{fast}_speedup_vs_{other}_min"] = min(ratios)
        row[dname] = entry
    for name in {n for d, n in times if d == "bf16"} & {n for d, n in times if d == "fp32"}:
        row.setdefault("bf16_speedup_vs_fp32", {})[name] = statistics.median(
            a / b for a, b in zip(times[("fp32", name)], times[("bf16", name)]))
    return row


def bench_flex_forward(grid, window, heads, head_dim, rounds, ceilings):
    """FlexAttention forward (it has no CPU backward): eager fp32 / bf16 and compiled bf16, beside the fused kernel."""
    pattern = make_pattern(grid, window)
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(1, heads, pattern.num_tokens, head_dim, generator=gen) for _ in range(3)]
    methods, compile_s = {}, {}
    with torch.no_grad():
        for dname, dtype in DTYPES.items():
            xs = [x.to(dtype) for x in base]
            methods[(dname, "flex")] = (lambda a, b, c: attention3d(a, b, c, grid, window, backend="flex"), xs)
            methods[(dname, "fused")] = (lambda a, b, c: attention3d(a, b, c, grid, window, backend="cpu_fused"), xs)
        flex_c = torch.compile(lambda a, b, c: attention3d(a, b, c, grid, window, backend="flex"), dynamic=False)
        start = time.perf_counter()
        flex_c(*methods[("bf16", "flex")][1])
        compile_s["flex_compiled"] = time.perf_counter() - start
        methods[("bf16", "flex_compiled")] = (flex_c, methods[("bf16", "flex")][1])
        for fn, xs in methods.values():
            fn(*xs)
        times = {key: [] for key in methods}
        for r in range(rounds):
            for key in alternate(methods, r):
                fn, xs = methods[key]
                start = time.perf_counter()
                fn(*xs)
                times[key].append(checked_seconds(time.perf_counter() - start, f"{key} forward"))
    flops = useful_flops(pattern, heads, head_dim, backward=False)
    sec = {f"{d}_{n}": statistics.median(ts) for (d, n), ts in times.items()}
    return dict(grid=list(grid), tokens=pattern.num_tokens, window=list(window), rounds=rounds, seconds=sec,
                round_seconds={f"{d}_{n}": ts for (d, n), ts in times.items()},
                compile_seconds=compile_s, fraction_of_ceiling={
                    k: flops / s / 1e9 / ceilings[k.split("_")[0]]["gflops"] for k, s in sec.items()})


def windowed_beats_dense(row: dict) -> bool:
    """In both dtypes, the faster of the windowed paths (``cpu_fused``, ``cpu``) beats dense masked SDPA (median of
    per-round ratios)."""
    return all(max(row[d].get(f"{name}_speedup_vs_dense_masked_sdpa", 0.0) for name in ("fused", "blocked")) > 1.0
               for d in DTYPES)


def blocked_min_tokens(rows: list[dict]) -> int | None:
    """The smallest token count from which every timed grid (with dense SDPA) has a windowed path beating dense
    masked SDPA: where ``auto`` should start using them. None if the largest grid does not."""
    timed = sorted((r for r in rows if "dense_masked_sdpa" in r["fp32"]["seconds"]), key=lambda r: r["tokens"])
    found = None
    for row in reversed(timed):
        if not windowed_beats_dense(row):
            break
        found = row["tokens"]
    return found


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


def _tokens(n) -> str:
    return f"{n:,} tokens" if n else "no grid timed"


def _x(values) -> str:
    return "×".join(map(str, values))


def _cell(d: dict, key: str, fmt: str, suffix: str = "") -> str:
    return format(d[key], fmt) + suffix if key in d else "–"


def bf16_ceiling_emulated(results: dict) -> bool:
    """The run's bf16 GEMM ceiling was emulated: its CPU has no bf16 units (``cpu`` says so) or its bf16 GEMM ran
    slower than its fp32 one. A fraction of such a ceiling says nothing about the code; the table prints "–"."""
    ceil = results.get("ceilings") or {}
    slower = "fp32" in ceil and "bf16" in ceil and ceil["bf16"]["gflops"] < ceil["fp32"]["gflops"]
    return slower or "no bf16 units" in str(results.get("cpu", ""))


def readme_table(results: dict) -> str:
    """The README tables (``<!-- table:attention -->``) from ``docs/results/bench_attention.json``."""
    ceil = results["ceilings"]
    emulated = bf16_ceiling_emulated(results)
    lines = ["| T×H×W | tokens | `auto` picks | user's call (s) fp32 / bf16 | `cpu_fused` (s) fp32 / bf16 | `cpu` (s) "
             "fp32 / bf16 / bf16+compile | dense masked SDPA (s) fp32 / bf16 / bf16+compile | user's call vs dense "
             "masked, fp32 / bf16 | bf16 vs fp32, `cpu_fused` | % of ceiling, user's call fp32 / bf16 | FLOP bound |",
             "|---" * 11 + "|"]
    for r in results["rows"]:
        f, b = r["fp32"], r["bf16"]
        fs, bs = f["seconds"], b["seconds"]
        picks = sorted(set(r["auto_backend"].values()))
        lines.append(
            f"| {_x(r['grid'])} | {r['tokens']:,} | {' / '.join(f'`{p}`' for p in picks)} | "
            f"{fs['user_call']:.3f} / {bs['user_call']:.3f} | "
            f"{_cell(fs, 'fused', '.3f')} / {_cell(bs, 'fused', '.3f')} | {fs['blocked']:.3f} / {bs['blocked']:.3f} / "
            f"{_cell(bs, 'blocked_compiled', '.3f')} | {_cell(fs, 'dense_masked_sdpa', '.3f')} / "
            f"{_cell(bs, 'dense_masked_sdpa', '.3f')} / {_cell(bs, 'dense_masked_sdpa_compiled', '.3f')} | "
            f"**{_cell(f, 'user_call_speedup_vs_dense_masked_sdpa', '.1f', '×')}** / "
            f"{_cell(b, 'user_call_speedup_vs_dense_masked_sdpa', '.1f', '×')} | "
            f"**{_cell(r.get('bf16_speedup_vs_fp32', {}), 'fused', '.2f', '×')}** | "
            f"{100 * f['fraction_of_ceiling']['user_call']:.1f} / "
            + ("–" if emulated else f"{100 * b['fraction_of_ceiling']['user_call']:.1f}") + " | "
            f"{r['flop_bound_speedup']:.0f}× |")
    lines += ["", f"| pattern at {_x(results['pattern_grid'])} | `auto` picks fp32 / bf16 | `cpu_fused` (s) fp32 / bf16 "
              "| `cpu` (s) fp32 / bf16 | dense masked SDPA (s) fp32 / bf16 | user's call vs dense masked, fp32 / bf16 | "
              "FLOP bound |", "|---" * 7 + "|"]
    for r in results["other_patterns"]:
        f, b = r["fp32"], r["bf16"]
        fs, bs = f["seconds"], b["seconds"]
        lines.append(f"| {r['pattern']} | `{r['auto_backend']['fp32']}` / `{r['auto_backend']['bf16']}` | "
                     f"{_cell(fs, 'fused', '.3f')} / {_cell(bs, 'fused', '.3f')} | {fs['blocked']:.3f} / "
                     f"{bs['blocked']:.3f} | {fs['dense_masked_sdpa']:.2f} / {bs['dense_masked_sdpa']:.2f} | "
                     f"{f['user_call_speedup_vs_dense_masked_sdpa']:.1f}× / "
                     f"{b['user_call_speedup_vs_dense_masked_sdpa']:.1f}× | {r['flop_bound_speedup']:.0f}× |")
    fl = results.get("flex_forward")
    flex_line = ""
    if fl:
        s = fl["seconds"]
        flex_line = (f" FlexAttention forward at {_x(fl['grid'])}: eager fp32 {s['fp32_flex']:.3f} s, bf16 "
                     f"{s['bf16_flex']:.3f} s, bf16 compiled {s['bf16_flex_compiled']:.3f} s (compile "
                     f"{fl['compile_seconds']['flex_compiled']:.0f} s) vs `cpu_fused` forward {s['fp32_fused']:.3f} / "
                     f"{s['bf16_fused']:.3f} s.")
    comp = next((r["compile_seconds"] for r in results["rows"] if r["compile_seconds"]), {})
    lines += ["", f"Forward + backward, B=1, heads={results['heads']}, D={results['head_dim']}, "
              f"{results['threads']} threads, window {_x(results['window'])}; every method warmed up once, then the "
              f"median of per-round ratios over {results['rounds']} interleaved rounds, fp32 and bf16 in the same "
              f"rounds. A windowed path beats dense masked SDPA in both dtypes at every timed grid from "
              f"{_tokens(results.get('blocked_min_tokens'))} on; `auto` keeps dense "
              "SDPA below `BLOCKED_MIN_TOKENS`, a chosen rule (`vidgen/attention/api.py`). GEMM ceilings in the same run: "
              f"fp32 {ceil['fp32']['gflops']:.0f}, bf16 {ceil['bf16']['gflops']:.1f} GFLOP/s; % of ceiling counts "
              "the useful FLOPs (12·D per allowed pair) against the ceiling of the same dtype"
              + (" (bf16: –, this CPU's bf16 GEMM is emulated, so a fraction of it says nothing about the code)"
                 if emulated else "") + ". The user's call is "
              "`attention3d(q, k, v, grid, window=...)` (`auto`) with gradients accumulating; `compile` does not apply "
              "to the fused C kernel" + (f"; compile took " + ", ".join(f"{k.replace('_compiled', '')} {v:.0f} s"
                                                                       for k, v in comp.items()) if comp else "")
              + "." + flex_line + f" {results['date'][:10]}, load average {results['loadavg_start'][0]:.2f} at start"
              + (f", {results['loadavg_end'][0]:.2f} at the end" if "loadavg_end" in results else "")
              + (f", CPU {results['cpu']}" if "cpu" in results else "") + "; "
              f"`{results['command']}`."]
    return "\n".join(lines)


def design_figures(results: dict) -> str:
    """docs/attention.md's design-note figures (marker ``attention_design``) from the same results file: the fused
    kernel against dense masked SDPA and the blocked path at the largest grids, the whole-frame spatial window where
    the blocked path wins, and the blocked path's own time."""
    dense = max((r for r in results["rows"] if "dense_masked_sdpa" in r["fp32"]["seconds"]), key=lambda r: r["tokens"])
    widest = max(results["rows"], key=lambda r: r["tokens"])
    spatial = next(r for r in results["other_patterns"] if r["pattern"] == "spatial")
    f, w, sp = dense["fp32"], widest["fp32"], spatial["fp32"]
    beside = "" if widest is dense else (f"; dense masked SDPA is not timed at {widest['tokens']:,} tokens, the fused "
                                         f"kernel is {w['fused_speedup_vs_blocked']:.2f}x the blocked path there")
    return (f"Current figures (`docs/results/bench_attention.json`, {results['date'][:10]}, forward + backward, "
            f"{results['heads']} heads, D={results['head_dim']}, {results['threads']} threads, fp32, {_x(results['window'])}"
            f" window, median of per-round ratios over {results['rounds']} rounds): at {dense['tokens']:,} tokens the "
            f"fused kernel is {f['fused_speedup_vs_dense_masked_sdpa']:.1f}x faster than dense masked SDPA and "
            f"{f['fused_speedup_vs_blocked']:.2f}x the blocked path{beside}. At {dense['tokens']:,} tokens the blocked path runs in "
            f"{f['seconds']['blocked']:.2f} s against {f['seconds']['dense_masked_sdpa']:.1f} s for dense masked SDPA. "
            f"For a whole-frame spatial window at {_x(results['pattern_grid'])} the blocked path's GEMMs win: "
            f"{sp['blocked_speedup_vs_dense_masked_sdpa']:.1f}x dense masked SDPA against the fused kernel's "
            f"{sp['fused_speedup_vs_dense_masked_sdpa']:.1f}x, which is why `auto` picks by over-fetch.")


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


def _print_row(r: dict, label: str) -> None:
    for d in DTYPES:
        e = r[d]
        s = e["seconds"]
        parts = ", ".join(f"{n} {t:.3f}s" for n, t in s.items())
        print(f"  {label:>18} {d}: {parts}; user vs dense "
              f"{e.get('user_call_speedup_vs_dense_masked_sdpa', float('nan')):.1f}x, fused vs dense "
              f"{e.get('fused_speedup_vs_dense_masked_sdpa', float('nan')):.1f}x, user call "
              f"{100 * e['fraction_of_ceiling']['user_call']:.1f}% of the {d} ceiling", flush=True)
    print(f"  {'':>18} bf16 vs fp32: " + ", ".join(f"{n} {x:.2f}x" for n, x in r["bf16_speedup_vs_fp32"].items()),
          flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--size", type=int, default=32, help="H = W of the token grid")
    parser.add_argument("--wide", type=int, default=64, help="also time (max frames, size, wide) without dense SDPA; 0 = skip")
    parser.add_argument("--small", nargs="*", default=["2x16x16", "1x32x32", "2x32x32"], metavar="TxHxW",
                        help="grids below the main ones: where auto's switch from dense SDPA pays")
    parser.add_argument("--window", type=int, nargs=3, default=[3, 7, 7])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the bf16+compile columns")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    require_rounds(args.rounds, args.quick)
    if args.quick:
        args.frames, args.size, args.wide, args.rounds, args.small = [2, 4], 16, 0, 1, ["1x8x16"]
    out = Path(args.out) if args.out else (Path("outputs/bench_attention_quick.json") if args.quick else OUT)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor"))
    torch.set_num_threads(args.threads)
    window = tuple(args.window)
    ceiling = _sibling("ceiling")
    ceilings = ceiling.gemm_ceilings()
    print(ceiling.describe(ceilings), flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, heads={args.heads}, D={args.head_dim}, "
          f"window={window}, forward+backward, median of {args.rounds} interleaved rounds", flush=True)
    grids = [(f, args.size, args.size) for f in args.frames]
    small = [tuple(int(n) for n in g.split("x")) for g in args.small]
    rows = []
    for grid in small:
        row = bench_grid(grid, window, args.heads, args.head_dim, args.rounds, ceilings, with_unmasked=False)
        rows.append(row)
        _print_row(row, "x".join(map(str, grid)))
    for grid in grids:
        row = bench_grid(grid, window, args.heads, args.head_dim, args.rounds, ceilings,
                         compile_bf16=not args.no_compile and grid == grids[-1])
        rows.append(row)
        _print_row(row, "x".join(map(str, grid)))
    if args.wide:  # dense SDPA at 32k tokens costs ~30 s a call: the wide grid times the fast paths only
        grid = (args.frames[-1], args.size, args.wide)
        row = bench_grid(grid, window, args.heads, args.head_dim, args.rounds, ceilings, with_unmasked=False,
                         with_dense=False)
        rows.append(row)
        _print_row(row, "x".join(map(str, grid)))
    pattern_grid = (args.frames[len(args.frames) // 2], args.size, args.size)
    print(f"other patterns at {pattern_grid} (forward+backward):", flush=True)
    other = []
    for name, win, causal in OTHER_PATTERNS:
        row = bench_grid(pattern_grid, win or window, args.heads, args.head_dim, args.rounds, ceilings, causal,
                         with_unmasked=False)
        row["pattern"] = name
        other.append(row)
        _print_row(row, name)
    flex = None if args.no_compile else bench_flex_forward(pattern_grid, window, args.heads, args.head_dim,
                                                           args.rounds, ceilings)
    if flex:
        print(f"flex forward at {pattern_grid}: " + ", ".join(f"{k} {v:.3f}s" for k, v in flex["seconds"].items())
              + f"; compile {flex['compile_seconds']['flex_compiled']:.1f}s", flush=True)
    tile_grid = (args.frames[-1], args.size, args.size)
    skips = tile_skips(tile_grid, [(64, 64), (128, 64)])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "vidgen/attention"], capture_output=True, text=True).stdout
    payload = dict(git_commit=commit, vidgen_attention_modified=bool(dirty.strip()), heads=args.heads,
                   head_dim=args.head_dim, rounds=args.rounds, window=list(window), ceilings=ceilings,
                   bf16_kernel_native=bool(cpu_window.bf16_native()), rows=rows,
                   blocked_min_tokens=blocked_min_tokens(rows), pattern_grid=list(pattern_grid),
                   other_patterns=other, flex_forward=flex, tile_skips=dict(grid=list(tile_grid), rows=skips))
    path = write_result(out, payload, threads=args.threads, weights=(),  # random inputs: no weights file
                        precision="fp32, bf16 and bf16 + torch.compile, side by side")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Host time of one ``vidgen.attention.attention3d`` call beside a plain ``F.scaled_dot_product_attention`` call,
measured side by side in one run on the CPU.

At the shape timed here (batch 1, 2 heads, a 2x2x2 grid = 8 tokens, head dim 16, fp32, one thread) the arithmetic is
about 8 kFLOP, well under a microsecond, so a call's time is its host time: Python, argument checks, the pattern
lookup, the backend choice and PyTorch's dispatch down to the kernel. At this size ``auto`` picks the ``reference``
backend (recorded), which is one SDPA call: without a window the same unmasked call as the baseline, with a window
SDPA with the pattern's cached boolean mask. Methods:

* ``sdpa``: ``F.scaled_dot_product_attention(q, k, v)``, the baseline;
* ``attention3d``: ``attention3d(q, k, v, grid)``, no window (the same SDPA call underneath);
* ``sdpa_masked``: ``F.scaled_dot_product_attention(q, k, v, attn_mask=mask)`` with the window's mask built once;
* ``attention3d_window``: ``attention3d(q, k, v, grid, window=(1, 3, 3))`` (what runs underneath: ``sdpa_masked``).

Every method is called ``--warmup`` times first (caches filled: the pattern, the mask), then in each of ``--rounds``
rounds the methods run in a shuffled order, each ``--calls`` times back to back, timed with ``time.perf_counter``
(wall) and ``time.thread_time`` (this thread's CPU time, which leaves out time spent waiting for a core on a shared
machine). Per-call µs = the round's time / calls. Reported: the median over rounds of each method's µs per call, and
the median over rounds of the per-round ratio to ``sdpa`` (measured in the same round, so load that changes between
rounds cancels). The headline (``host_us``, ``ratio_to_sdpa``) is ``attention3d_window`` in CPU time: on a machine
shared with other work, wall time also counts the time this thread waited for a core, which no call of the library
causes; the wall figures are recorded beside it. Each ``attention3d`` output is checked equal to the SDPA call it
stands for before timing.

    python eval/bench_attention_host.py            # -> docs/results/bench_attention_host.json (about a minute)
    python eval/bench_attention_host.py --quick    # smoke run (outputs/bench_attention_host_quick.json)
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402  (imported first: the run's start load)

from vidgen.attention import attention3d, make_pattern  # noqa: E402
from vidgen.attention.api import choose_backend  # noqa: E402
from vidgen.attention.masks import pattern_mask  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRID, WINDOW, HEADS, HEAD_DIM = (2, 2, 2), (1, 3, 3), 2, 16


def _source_state() -> dict:
    """The commit and whether vidgen/attention differs from it (the timed code is the working tree's)."""
    def git(*args):
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None
    return {"commit": git("rev-parse", "HEAD"),
            "vidgen_attention_modified": bool(git("status", "--porcelain", "--", "vidgen/attention"))}


def methods(q, k, v):
    mask = pattern_mask(make_pattern(GRID, WINDOW), q.device)
    return {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        "attention3d": lambda: attention3d(q, k, v, GRID),
        "sdpa_masked": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        "attention3d_window": lambda: attention3d(q, k, v, GRID, window=WINDOW),
    }


def check_equal(fns) -> None:
    for mine, plain in (("attention3d", "sdpa"), ("attention3d_window", "sdpa_masked")):
        if not torch.equal(fns[mine](), fns[plain]()):
            raise AssertionError(f"{mine} does not return what {plain} returns: the timings would compare different "
                                 "work")


def time_rounds(fns, rounds: int, calls: int, warmup: int, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    order = list(fns)
    rng = random.Random(seed)
    out = {name: {"wall_us": [], "cpu_us": []} for name in fns}
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = fns[name]
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                fn()
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            out[name]["wall_us"].append(wall / calls * 1e6)
            out[name]["cpu_us"].append(cpu / calls * 1e6)
    return out


def summarize(times: dict) -> dict:
    rows = {}
    for name, t in times.items():
        rows[name] = {"wall_us": round(statistics.median(t["wall_us"]), 2),
                      "cpu_us": round(statistics.median(t["cpu_us"]), 2),
                      "wall_us_range": [round(min(t["wall_us"]), 2), round(max(t["wall_us"]), 2)],
                      "cpu_us_range": [round(min(t["cpu_us"]), 2), round(max(t["cpu_us"]), 2)]}
        if name != "sdpa":
            base = times["sdpa"]
            rows[name]["ratio_to_sdpa"] = round(statistics.median(
                a / b for a, b in zip(t["wall_us"], base["wall_us"])), 2)
            rows[name]["cpu_ratio_to_sdpa"] = round(statistics.median(
                a / b for a, b in zip(t["cpu_us"], base["cpu_us"])), 2)
            rows[name]["cpu_overhead_over_sdpa_us"] = round(statistics.median(
                a - b for a, b in zip(t["cpu_us"], base["cpu_us"])), 2)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 100 calls (a smoke run)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls, args.warmup = 3, 100, 10
    out = args.out or str(ROOT / ("outputs/bench_attention_host_quick.json" if args.quick
                                  else "docs/results/bench_attention_host.json"))
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    n = GRID[0] * GRID[1] * GRID[2]
    q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, generator=gen) for _ in range(3))
    fns = methods(q, k, v)
    check_equal(fns)
    backends = {"attention3d": choose_backend(q, k, v, make_pattern(GRID)),
                "attention3d_window": choose_backend(q, k, v, make_pattern(GRID, WINDOW))}
    rows = summarize(time_rounds(fns, args.rounds, args.calls, args.warmup))
    payload = {
        "shape": {"batch": 1, "heads": HEADS, "grid": list(GRID), "tokens": n, "head_dim": HEAD_DIM, "dtype": "fp32",
                  "window": list(WINDOW)},
        "flops_per_call": 4 * HEADS * n * n * HEAD_DIM,
        "auto_backend": backends, "rounds": args.rounds, "calls_per_round": args.calls, "warmup": args.warmup,
        "method": "per round, methods in shuffled order, each timed over calls_per_round back-to-back calls "
                  "(perf_counter wall and thread_time CPU); medians over rounds of µs per call and of the per-round "
                  "ratio to plain sdpa; outputs of attention3d checked equal to the SDPA call they stand for",
        "source": _source_state(),
        "headline": "attention3d_window, thread CPU time",
        "host_us": rows["attention3d_window"]["cpu_us"], "sdpa_us": rows["sdpa"]["cpu_us"],
        "ratio_to_sdpa": rows["attention3d_window"]["cpu_ratio_to_sdpa"],
        "methods": rows,
    }
    path = write_result(out, payload, threads=1)
    for name, row in rows.items():
        extra = "" if name == "sdpa" else f", {row['ratio_to_sdpa']}x sdpa (CPU time {row['cpu_ratio_to_sdpa']}x)"
        print(f"{name}: {row['wall_us']} µs wall, {row['cpu_us']} µs CPU per call{extra}")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

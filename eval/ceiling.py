"""The machine's matrix-multiply ceiling per dtype, timed in the benchmark's own run.

Every speed benchmark reports model FLOP/s as a fraction of the GEMM rate *of the same dtype* measured in the same
process, because these machines are shared and their rates move from day to day (2048^3 fp32: 67-380 GFLOP/s on
different days, ../shared/ENVIRONMENT.md). fp32 paths are compared with the fp32 ceiling, bf16 paths with bf16's.

    from eval.ceiling import gemm_ceilings
    ceil = gemm_ceilings()               # {"fp32": {"gflops": ..., "seconds": ...}, "bf16": {...}}
    fraction = model_flops_per_s / (ceil["bf16"]["gflops"] * 1e9)
"""
from __future__ import annotations

import statistics
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def gemm_rate(dtype: torch.dtype, n: int = 2048, repeats: int = 5, device="cpu") -> dict:
    """Median seconds and GFLOP/s of an ``n^3`` GEMM in ``dtype`` at the current thread count (one warm-up call);
    on a GPU synchronised around each call."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"n": n, "seconds": seconds, "gflops": 2 * n ** 3 / seconds / 1e9, "times_s": times}


def gemm_ceilings(n: int = 2048, repeats: int = 5, dtypes=("fp32", "bf16"), device="cpu") -> dict:
    """``{name: gemm_rate(...)}`` for each precision name in ``dtypes``, interleaved so load drifts hit both."""
    runs: dict[str, list[float]] = {d: [] for d in dtypes}
    for _ in range(repeats):
        for d in dtypes:
            runs[d] += gemm_rate(DTYPES[d], n, repeats=1, device=device)["times_s"]
    out = {}
    for d, times in runs.items():
        seconds = statistics.median(times)
        out[d] = {"n": n, "seconds": seconds, "gflops": 2 * n ** 3 / seconds / 1e9, "times_s": times}
    return out


def describe(ceilings: dict) -> str:
    """One line for the console: both ceilings and their ratio."""
    parts = [f"{d} {c['gflops']:.0f}" for d, c in ceilings.items()]
    line = f"{ceilings[next(iter(ceilings))]['n']}^3 GEMM ceiling GFLOP/s: " + ", ".join(parts)
    if "fp32" in ceilings and "bf16" in ceilings:
        line += f" (bf16/fp32 {ceilings['bf16']['gflops'] / ceilings['fp32']['gflops']:.1f}x)"
    return line

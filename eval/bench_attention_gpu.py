#!/usr/bin/env python
"""Benchmark on one GPU: vidgen's ``triton`` 3D-window attention beside compiled FlexAttention (the same mask) and dense
SDPA (flash and cuDNN backends), forward and forward+backward, bf16, in one run of at most ~6 minutes.

Shapes (B = 1):
* (a) 16x32x32 tokens, window 3x7x7, 4 heads, D 64: the CPU benchmark's shape (eval/bench_attention.py);
* (b) 30x48x80, window 18x24x24, 24 heads, D 128: NATTEN's published Hopper shape. vidgen's windows reach
  ``|d| <= w//2``, so an even window sees one position more per axis than NATTEN's (19x25x25 keys inside the grid, not
  18x24x24), and vidgen clips windows at the borders where NATTEN shifts them: the allowed pairs are counted here and
  the FLOP bound is that count's;
* (c) 21x30x52, 12 heads, D 128: Wan2.1-1.3B's latent grid at 480x832, 81 frames, with the window stated in SHAPES.

Method: the same q, k, v (and output gradient) for every backend; each (pass, backend) is called once first (its
compile and first call, reported apart as ``first_call_s``), then every one of them once per round, in a seeded random
order each round (no backend always follows the same one). Before each timed call the GPU's L2 cache is flushed
(a 256 MiB buffer zeroed, outside the timed region), then ``torch.cuda.synchronize()`` before and after the call:
``ms`` is the median over the rounds (at least ``--min-rounds``; more while the shape's time budget lasts) of the time
to the end of the call's GPU work, and ``host_ms`` the median time until the call returned to Python (its launch
overhead, which the GPU waits for at the start). After the rounds, ``device_ms`` is the GPU kernels' own time per
call of the windowed backends from torch.profiler: ``ms - device_ms`` is time the GPU spent waiting for launches.
FLOPs (eval/bench_attention.py's
``useful_flops``): 4·D per allowed (query, key) pair forward, 12·D forward+backward. TFLOP/s counts the allowed pairs;
the dense-equivalent TFLOP/s counts all N^2. ``speedup_vs_dense`` is the faster dense backend's median ms over this
backend's, and ``fraction_of_flop_bound`` that speedup over the FLOP bound (all pairs / allowed pairs).
A time guard skips a shape that would start past the deadline and ends a shape's rounds when its budget is spent; the
results file is rewritten after every shape, so a run stopped from outside keeps what it measured.

    python eval/bench_attention_gpu.py                  # GPU: docs/results/bench_attention_gpu.json
    python eval/bench_attention_gpu.py --quick          # CPU, seconds: the Triton interpreter, fp32, tiny shape
    python eval/bench_attention_gpu.py --table          # docs/attention.md's table from the results file
"""
from __future__ import annotations

import os
import sys

QUICK = "--quick" in sys.argv
if QUICK:  # before anything imports triton: the kernels run on CPU tensors under the interpreter
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import kernel_provenance, pinned_versions, write_result  # noqa: E402  (imported first: the start load)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_attention import useful_flops  # noqa: E402
from bench_attention_gpu_table import (readme_table, targets,  # noqa: E402,F401  (readme_tables.py reads it)
                                       write_table)
from vidgen.attention import attention3d, make_pattern  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "bench_attention_gpu.json"
# (b) first: it carries the targets, so the time guard may cut (a) and (c), never it
SHAPES = [
    dict(key="b", grid=(30, 48, 80), window=(18, 24, 24), heads=24, head_dim=128, budget_s=110, tile=(2, 8, 8),
         tile_window=(9, 3, 3),  # 18x24x24 keys a query, as NATTEN's windows, in whole 2x8x8 tiles
         note="NATTEN's published H100 shape (its windows: 18x24x24 keys, shifted at the borders, "
              "115,200 x 10,368 pairs, FLOP bound 11.1x)", natten_keys_per_query=18 * 24 * 24),
    dict(key="a", grid=(16, 32, 32), window=(3, 7, 7), heads=4, head_dim=64, budget_s=30, tile=(2, 8, 8),
         tile_window=(1, 1, 1), note="the CPU benchmark's shape (eval/bench_attention.py)"),
    dict(key="c", grid=(21, 30, 52), window=(9, 17, 33), heads=12, head_dim=128, budget_s=45,
         note="Wan2.1-1.3B at 480x832, 81 frames; window chosen here: +-4 latent frames, +-8 rows, +-16 columns",
         no_tile="the kernel's tiles hold 128 tokens and no 128-token box divides 21x30x52 (21 is odd, 30 = 2x15, "
                 "52 = 4x13); eval/bench_diffusers_models.py times tile windows on Wan at 512x768 (21x32x48 tokens)"),
]
QUICK_SHAPES = [dict(key="quick", grid=(2, 4, 4), window=(3, 3, 4), heads=1, head_dim=16, budget_s=30,
                     tile=(2, 4, 4), tile_window=(1, 1, 1),
                     note="plumbing check under the Triton interpreter (CPU, fp32): not a speed")]
PASSES = ("forward", "forward_backward")
WINDOWED = ("triton", "triton_coords", "triton_raster", "flex")
TRITON_VARIANTS = ("triton", "triton_coords", "triton_raster")
FLUSH_MIB = 256  # more than any GPU's L2 cache (H100 / H200: 50 MiB)
DENSE = ("dense_flash", "dense_cudnn")


def _sdpa(backend_name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = getattr(SDPBackend, backend_name)

    def call(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v)
    return call


def backends(grid, window, tile=None, tile_window=None) -> dict:
    """name -> fn(q, k, v): the windowed backends through the public call, dense SDPA pinned to one backend;
    ``triton_tile``: the kernel on the shape's tile-aligned window (``tile_window`` tiles of ``tile`` tokens)."""
    from vidgen.attention.triton_kernel import triton_attention3d

    pattern = make_pattern(grid, window)
    tiled = {} if tile is None else {"triton_tile": lambda q, k, v: attention3d(
        q, k, v, grid, tile_window, backend="triton", tile=tile)}
    return {**tiled, "triton": lambda q, k, v: attention3d(q, k, v, grid, window, backend="triton"),
            # the same kernels with the mask rebuilt from (t, h, w) coordinates instead of packed codes
            "triton_coords": lambda q, k, v: triton_attention3d(q, k, v, pattern, mask="coords"),
            # ... and with the tokens in raster order (no 3D-box layout)
            "triton_raster": lambda q, k, v: triton_attention3d(q, k, v, pattern, layout="raster"),
            "flex": lambda q, k, v: attention3d(q, k, v, grid, window, backend="flex"),
            "dense_flash": _sdpa("FLASH_ATTENTION"), "dense_cudnn": _sdpa("CUDNN_ATTENTION")}


def pair_counts(spec: dict) -> dict:
    """Allowed (query, key) pairs of the shape's pattern (``AttentionPattern.density``), per head and batch item."""
    pattern = make_pattern(spec["grid"], spec["window"])
    n = pattern.num_tokens
    allowed = round(pattern.density() * n * n)
    inside = math.prod(g if r is None else 2 * r + 1 for r, g in zip(pattern.radii, spec["grid"]))
    counts = dict(tokens=n, radii=list(pattern.radii), keys_per_query_inside=inside, allowed_pairs=allowed,
                  all_pairs=n * n, density=allowed / (n * n), flop_bound=n * n / allowed)
    if "natten_keys_per_query" in spec:
        natten = n * spec["natten_keys_per_query"]
        counts.update(natten_pairs=natten, natten_flop_bound=n * n / natten)
    return counts


class Call:
    """One (pass, backend): a callable that runs it once on the shared tensors and returns (seconds to the end of its
    GPU work, seconds until it returned to Python)."""

    def __init__(self, fn, tensors: dict, backward: bool, device: torch.device, flush=None):
        self.fn, self.backward, self.device, self.flush = fn, backward, device, flush
        self.q, self.k, self.v = tensors["grad" if backward else "plain"]
        self.grad_out = tensors["grad_out"]

    def run(self):
        """One call (and its backward, into freshly cleared ``.grad``); returns the output."""
        for x in (self.q, self.k, self.v):
            x.grad = None
        if not self.backward:
            with torch.no_grad():
                return self.fn(self.q, self.k, self.v)
        out = self.fn(self.q, self.k, self.v)
        out.backward(self.grad_out)
        return out

    def __call__(self) -> tuple:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        if self.flush is not None:
            self.flush.zero_()  # evict the previous call's tensors from the L2 cache
        sync()
        start = time.perf_counter()
        self.run()
        host = time.perf_counter() - start
        sync()
        return time.perf_counter() - start, host


def device_ms(calls: dict, deadline: float, reps: int = 2) -> dict:
    """(pass, windowed backend) -> the GPU kernels' own milliseconds per call (torch.profiler, CUDA activity), or why
    not. Dense SDPA is one kernel a pass: its wall time is its kernel time. Nothing is started past ``deadline``."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for key, call in calls.items():
        if key[1] not in WINDOWED:
            continue
        if time.perf_counter() > deadline:
            out[key] = "not profiled: the run's deadline had passed"
            continue
        try:
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(reps):
                    call.run()
                torch.cuda.synchronize()
            events = prof.key_averages()
            us = sum(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
                     for e in events)
            out[key] = us / reps / 1e3
        except Exception as err:  # noqa: BLE001 - the timings stand without it; the row says why it is missing
            out[key] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    return out


def make_tensors(spec: dict, device, dtype, seed: int = 0) -> dict:
    n = make_pattern(spec["grid"], spec["window"]).num_tokens
    gen = torch.Generator(device=device).manual_seed(seed)
    q, k, v, grad_out = (torch.randn(1, spec["heads"], n, spec["head_dim"], generator=gen, device=device, dtype=dtype)
                         for _ in range(4))
    return {"plain": (q, k, v), "grad": tuple(x.detach().clone().requires_grad_() for x in (q, k, v)),
            "grad_out": grad_out}


def check_outputs(calls: dict, spec: dict, tensors: dict) -> dict:
    """Max |difference| of the windowed backends' outputs (and input gradients) from each other, and from the masked
    reference where its dense (N, N) mask is small enough."""
    out = {}
    for p in PASSES:
        got = {}
        for name, call in ((name, calls[(p, name)]) for name in WINDOWED if (p, name) in calls):
            o = call.run()
            got[name] = [o.detach().float()] + [x.grad.float() for x in (call.q, call.k, call.v) if x.grad is not None]
        for name in TRITON_VARIANTS:
            if name in got and "flex" in got:
                out[f"{p}_{name}_vs_flex"] = max((a - b).abs().max().item() for a, b in zip(got[name], got["flex"]))
    n = make_pattern(spec["grid"], spec["window"]).num_tokens
    if n <= 16384 and ("forward", "triton") in calls:
        q, k, v = tensors["plain"]
        with torch.no_grad():
            ref = attention3d(q.float(), k.float(), v.float(), spec["grid"], spec["window"], backend="reference")
            tri = calls[("forward", "triton")].run().float()
        out["forward_triton_vs_reference_fp32"] = (tri - ref).abs().max().item()
    return out


def time_shape(spec: dict, device, dtype, min_rounds: int, max_rounds: int, deadline: float) -> dict:
    """Every (pass, backend) of one shape, interleaved over rounds; a failing backend is recorded, not fatal."""
    start = time.perf_counter()
    budget_end = min(deadline, start + spec["budget_s"])
    tensors = make_tensors(spec, device, dtype)
    flush = torch.empty(FLUSH_MIB << 20, dtype=torch.int8, device=device) if device.type == "cuda" else None
    fns = backends(spec["grid"], spec["window"], spec.get("tile"), spec.get("tile_window"))
    calls, errors, first = {}, {}, {}
    for p in PASSES:
        for name, fn in fns.items():
            call = Call(fn, tensors, p == "forward_backward", device, flush)
            try:
                first[(p, name)] = call()[0]  # compile (Triton JIT, torch.compile of flex) and the first call
                calls[(p, name)] = call
            except Exception as err:  # noqa: BLE001 - an unavailable backend is recorded in the results
                errors[(p, name)] = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    checks = check_outputs(calls, spec, tensors)
    times = {key: [] for key in calls}
    order, rng = list(calls), random.Random(f"rounds-{spec['key']}")
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() < budget_end):
        if time.perf_counter() > deadline and rounds > 0:
            break  # the run's deadline: stop even below min_rounds (the row says how many rounds it got)
        rng.shuffle(order)
        for key in order:
            times[key].append(calls[key]())
        rounds += 1
    kernels = device_ms(calls, deadline) if device.type == "cuda" else {}
    row = {k: v for k, v in spec.items() if k != "budget_s"}
    tile_pattern = make_pattern(spec["grid"], spec["tile_window"], tile=spec["tile"]) if "tile" in spec else None
    if tile_pattern is not None:
        row["tile_pattern"] = dict(tile=list(spec["tile"]), window_tiles=list(spec["tile_window"]),
                                   density=tile_pattern.density(), flop_bound=1 / tile_pattern.density())
    row.update(grid=list(spec["grid"]), window=list(spec["window"]), **pair_counts(spec), rounds=rounds,
               below_min_rounds=rounds < min_rounds, seconds=round(time.perf_counter() - start, 2), checks=checks,
               l2_flush_mib=FLUSH_MIB if flush is not None else 0)
    pattern = make_pattern(spec["grid"], spec["window"])
    full = make_pattern(spec["grid"], None)
    row["triton_layout"] = kernel_layout(pattern, device)
    row["passes"] = {}
    for p in PASSES:
        backward = p == "forward_backward"
        flops = useful_flops(pattern, spec["heads"], spec["head_dim"], backward=backward)
        dense_flops = useful_flops(full, spec["heads"], spec["head_dim"], backward=backward)
        entries = {}
        for name in fns:
            if (p, name) in errors:
                entries[name] = {"error": errors[(p, name)]}
                continue
            wall, host = zip(*times[(p, name)])
            entries[name] = {"ms": 1e3 * statistics.median(wall), "times_ms": [1e3 * t for t in wall],
                             "host_ms": 1e3 * statistics.median(host), "first_call_s": first[(p, name)]}
            measured = kernels.get((p, name))
            if isinstance(measured, float):
                entries[name]["device_ms"] = measured
            elif measured is not None:
                entries[name]["device_ms_error"] = measured
        entry = dict(flops_allowed=flops, flops_dense=dense_flops, backends=entries)
        if tile_pattern is not None:  # triton_tile's own allowed pairs
            entry["flops_allowed_tile"] = useful_flops(tile_pattern, spec["heads"], spec["head_dim"], backward=backward)
        entry.update(derived(entry, row["flop_bound"]))
        row["passes"][p] = entry
    return row


def kernel_layout(pattern, device) -> dict:
    """The token layout and tiles the triton backend ran this pattern with, and its tuned launch configs."""
    from vidgen.attention import tiles, triton_jit, triton_kernel as tk
    box = tiles.cached_choose_box(pattern, tk.BLOCK_M, tk.BLOCK_N, device)
    tuned = {name: {str(key): str(config) for key, config in getattr(kernel, "cache", {}).items()}
             for name, kernel in (("forward", triton_jit.fwd_kernel), ("backward_kv", triton_jit.bwd_kv_kernel),
                                  ("backward_q", triton_jit.bwd_q_kernel))}
    return dict(box=list(box) if box else "raster", block_m=tk.BLOCK_M, block_n=tk.BLOCK_N,
                backward_block=tk.BWD_BLOCK, autotuned=tuned)


def derived(entry: dict, flop_bound: float) -> dict:
    """The figures computed from the medians: the faster dense backend, TFLOP/s, speedups. Written into the
    backends' entries; returns the pass-level ones."""
    timed = {name: e for name, e in entry["backends"].items() if "ms" in e}
    dense = {name: timed[name]["ms"] for name in DENSE if name in timed}
    out = {"dense_backend": min(dense, key=dense.get) if dense else None,
           "dense_ms": min(dense.values()) if dense else None}
    for name, e in timed.items():
        seconds, tile = e["ms"] / 1e3, name == "triton_tile"
        allowed = entry["flops_allowed_tile"] if tile else entry["flops_allowed"]
        e["tflops"] = allowed / seconds / 1e12
        e["dense_equivalent_tflops"] = entry["flops_dense"] / seconds / 1e12
        if out["dense_ms"] is not None:
            e["speedup_vs_dense"] = out["dense_ms"] / e["ms"]
            e["fraction_of_flop_bound"] = e["speedup_vs_dense"] / (entry["flops_dense"] / allowed if tile else
                                                                   flop_bound)
    for name in TRITON_VARIANTS:
        if name in timed and "flex" in timed:
            out[f"{name}_speedup_vs_flex"] = timed["flex"]["ms"] / timed[name]["ms"]
    return out


def run_shapes(specs, device, dtype, min_rounds, max_rounds, deadline, write=None) -> list:
    """Each shape in turn; one that would start past ``deadline`` is listed as skipped by the time guard."""
    rows = []
    for spec in specs:
        if time.perf_counter() >= deadline:
            rows.append({"key": spec["key"], "grid": list(spec["grid"]), "window": list(spec["window"]),
                         "note": spec["note"],
                         "skipped": "time guard: the run's budget was spent before this shape started"})
        else:
            rows.append(time_shape(spec, device, dtype, min_rounds, max_rounds, deadline))
            if device.type == "cuda":
                torch.cuda.empty_cache()
        _print_row(rows[-1])
        if write is not None:
            write(rows)
    return rows


def machine(device: torch.device) -> dict:
    """What ran it: GPU name, driver, torch, CUDA, cuDNN and triton versions; the code (git commit and the sha256 of
    the kernel's files, ``results.KERNEL_FILES``); the pinned torch and triton, and why they were not the ones that
    ran where they differ. Triton is imported after TRITON_INTERPRET was set (quick mode)."""
    info = {"device": device.type, "torch": torch.__version__, **kernel_provenance(), "cuda": torch.version.cuda,
            "gpu": None, "driver": None}
    pinned = pinned_versions("torch", "triton")
    info["pinned"] = pinned
    ran = {"torch": torch.__version__.split("+")[0], "triton": info["triton"]}
    if any(ran[k] != v for k, v in pinned.items()):
        info["pinned_note"] = (f"ran {ran}, not the pinned {pinned}: the pinned wheels (torch alone is about 900 MB) "
                               "cannot travel within the device call's 64 MiB and the device machine has no network, "
                               "so the run uses the image's torch and triton")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version())
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def _print_row(row: dict) -> None:
    if "skipped" in row:
        print(f"({row['key']}) {row['grid']}: skipped ({row['skipped']})", flush=True)
        return
    print(f"({row['key']}) {row['grid']} window {row['window']}: {row['tokens']:,} tokens, FLOP bound "
          f"{row['flop_bound']:.1f}x, {row['rounds']} rounds, {row['seconds']:.0f} s; checks {row['checks']}",
          flush=True)
    for p, entry in row["passes"].items():
        parts = [f"{name} {e['ms']:.3f} ms ({e['tflops']:.0f} TFLOP/s)" if "ms" in e else f"{name} -"
                 for name, e in entry["backends"].items()]
        print(f"  {p}: " + ", ".join(parts), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU plumbing run: interpreter, fp32, tiny shape")
    parser.add_argument("--shapes", nargs="*", default=None, help="keys of SHAPES to run (default: all)")
    parser.add_argument("--budget-s", type=float, default=330.0, help="the whole run's time guard")
    parser.add_argument("--min-rounds", type=int, default=5)
    parser.add_argument("--max-rounds", type=int, default=15)
    parser.add_argument("--table", action="store_true", help="only write docs/attention.md's table from --out")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or (ROOT / "outputs" / "bench_attention_gpu_quick.json" if args.quick else OUT)
    if args.table:
        print(write_table(out))
        return 0
    start = time.perf_counter()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor"))
    dynamo = torch._dynamo.config  # flex recompiles per shape and grad mode: room for all of them
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(dynamo, name):
            setattr(dynamo, name, max(getattr(dynamo, name), 64))
    if args.quick:
        if not QUICK:
            raise SystemExit("--quick must be given on the command line: TRITON_INTERPRET=1 is set before imports")
        device, dtype, specs = torch.device("cpu"), torch.float32, QUICK_SHAPES
        args.min_rounds, args.max_rounds = min(args.min_rounds, 3), 3
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU: run with --quick for the CPU plumbing check", file=sys.stderr)
            return 2
        device, dtype = torch.device("cuda"), torch.bfloat16
        specs = [s for s in SHAPES if args.shapes is None or s["key"] in args.shapes]
    info = machine(device)
    print(f"{info}; budget {args.budget_s:.0f} s, rounds {args.min_rounds}-{args.max_rounds}", flush=True)
    base = dict(machine=info, dtype=str(dtype).replace("torch.", "").replace("bfloat16", "bf16"), batch=1,
                quick=args.quick, budget_s=args.budget_s, min_rounds=args.min_rounds)

    def write(rows, complete=False):
        write_result(out, dict(base, complete=complete, elapsed_s=time.perf_counter() - start,
                               targets=[] if args.quick else targets(rows), rows=rows))

    rows = run_shapes(specs, device, dtype, args.min_rounds, args.max_rounds, start + args.budget_s, write)
    write(rows, complete=True)
    for t in ([] if args.quick else targets(rows)):
        print(f"target {t['target']} >= {t['at_least']}{t['unit']}: {t['result']} ({t['measured']})")
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
compile and first call, reported apart as ``first_call_s``), then every one of them once per round, in an order
rotated each round, with ``torch.cuda.synchronize()`` before and after each timed call; ``ms`` is the median over the
rounds (at least ``--min-rounds``; more while the shape's time budget lasts). FLOPs (eval/bench_attention.py's
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
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402  (imported first: the run's start load)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_attention import useful_flops  # noqa: E402
from vidgen.attention import attention3d, make_pattern  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "bench_attention_gpu.json"
TABLE = "attention_gpu"  # docs/attention.md's <!-- table:attention_gpu --> markers
SHAPES = [
    dict(key="a", grid=(16, 32, 32), window=(3, 7, 7), heads=4, head_dim=64, budget_s=30,
         note="the CPU benchmark's shape (eval/bench_attention.py)"),
    dict(key="c", grid=(21, 30, 52), window=(9, 17, 33), heads=12, head_dim=128, budget_s=45,
         note="Wan2.1-1.3B at 480x832, 81 frames; window chosen here: +-4 latent frames, +-8 rows, +-16 columns"),
    dict(key="b", grid=(30, 48, 80), window=(18, 24, 24), heads=24, head_dim=128, budget_s=110,
         note="NATTEN's published H100 shape (its windows: 18x24x24 keys, shifted at the borders, "
              "115,200 x 10,368 pairs, FLOP bound 11.1x)", natten_keys_per_query=18 * 24 * 24),
]
QUICK_SHAPES = [dict(key="quick", grid=(2, 4, 4), window=(3, 3, 4), heads=1, head_dim=16, budget_s=30,
                     note="plumbing check under the Triton interpreter (CPU, fp32): not a speed")]
PASSES = ("forward", "forward_backward")
WINDOWED = ("triton", "triton_raster", "flex")
DENSE = ("dense_flash", "dense_cudnn")


def _sdpa(backend_name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = getattr(SDPBackend, backend_name)

    def call(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v)
    return call


def backends(grid, window) -> dict:
    """name -> fn(q, k, v): the windowed backends through the public call, dense SDPA pinned to one backend."""
    def raster(q, k, v):  # the same kernel with the tokens in raster order (no 3D-box layout)
        from vidgen.attention.triton_kernel import triton_attention3d
        return triton_attention3d(q, k, v, make_pattern(grid, window), layout="raster")

    return {"triton": lambda q, k, v: attention3d(q, k, v, grid, window, backend="triton"), "triton_raster": raster,
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
    """One (pass, backend): a callable that runs it once on the shared tensors and returns the seconds it took."""

    def __init__(self, fn, tensors: dict, backward: bool, device: torch.device):
        self.fn, self.backward, self.device = fn, backward, device
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

    def __call__(self) -> float:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        self.run()
        sync()
        return time.perf_counter() - start


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
        for name in ("triton", "triton_raster"):
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
    fns = backends(spec["grid"], spec["window"])
    calls, errors, first = {}, {}, {}
    for p in PASSES:
        for name, fn in fns.items():
            call = Call(fn, tensors, p == "forward_backward", device)
            try:
                first[(p, name)] = call()  # compile (Triton JIT, torch.compile of flex) and the first call
                calls[(p, name)] = call
            except Exception as err:  # noqa: BLE001 - an unavailable backend is recorded in the results
                errors[(p, name)] = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    checks = check_outputs(calls, spec, tensors)
    times = {key: [] for key in calls}
    order = list(calls)
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() < budget_end):
        if time.perf_counter() > deadline and rounds > 0:
            break  # the run's deadline: stop even below min_rounds (the row says how many rounds it got)
        shift = rounds % max(1, len(order))
        for key in order[shift:] + order[:shift]:
            times[key].append(calls[key]())
        rounds += 1
    row = {k: v for k, v in spec.items() if k != "budget_s"}
    row.update(grid=list(spec["grid"]), window=list(spec["window"]), **pair_counts(spec), rounds=rounds,
               below_min_rounds=rounds < min_rounds, seconds=round(time.perf_counter() - start, 2), checks=checks)
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
            else:
                entries[name] = {"ms": 1e3 * statistics.median(times[(p, name)]),
                                 "times_ms": [1e3 * t for t in times[(p, name)]],
                                 "first_call_s": first[(p, name)]}
        entry = dict(flops_allowed=flops, flops_dense=dense_flops, backends=entries)
        entry.update(derived(entry, row["flop_bound"]))
        row["passes"][p] = entry
    return row


def kernel_layout(pattern, device) -> dict:
    """The token layout and tiles the triton backend ran this pattern with, and its tuned launch configs."""
    from vidgen.attention import tiles, triton_kernel as tk
    box = tiles.cached_choose_box(pattern, tk.BLOCK_M, tk.BLOCK_N, device)
    tuned = {name: {str(key): str(config) for key, config in getattr(kernel, "cache", {}).items()}
             for name, kernel in (("forward", tk._fwd_kernel), ("backward_kv", tk._bwd_kv_kernel),
                                  ("backward_q", tk._bwd_q_kernel))}
    return dict(box=list(box) if box else "raster", block_m=tk.BLOCK_M, block_n=tk.BLOCK_N,
                backward_block=tk.BWD_BLOCK, autotuned=tuned)


def derived(entry: dict, flop_bound: float) -> dict:
    """The figures computed from the medians: the faster dense backend, TFLOP/s, speedups. Written into the
    backends' entries; returns the pass-level ones."""
    timed = {name: e for name, e in entry["backends"].items() if "ms" in e}
    dense = {name: timed[name]["ms"] for name in DENSE if name in timed}
    out = {"dense_backend": min(dense, key=dense.get) if dense else None,
           "dense_ms": min(dense.values()) if dense else None}
    for e in timed.values():
        seconds = e["ms"] / 1e3
        e["tflops"] = entry["flops_allowed"] / seconds / 1e12
        e["dense_equivalent_tflops"] = entry["flops_dense"] / seconds / 1e12
        if out["dense_ms"] is not None:
            e["speedup_vs_dense"] = out["dense_ms"] / e["ms"]
            e["fraction_of_flop_bound"] = e["speedup_vs_dense"] / flop_bound
    for name in ("triton", "triton_raster"):
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
    """What ran it: GPU name, driver, torch, CUDA, cuDNN and triton versions."""
    import triton  # after TRITON_INTERPRET was set (quick mode); imported by the kernel call anyway
    info = {"device": device.type, "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "gpu": None, "driver": None}
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


def _ms(e: dict) -> str:
    return f"{e['ms']:.2f}" if "ms" in e else "–"


def _vs(e: dict) -> str:
    if "speedup_vs_dense" not in e:
        return "–"
    return f"{e['speedup_vs_dense']:.2f}× ({100 * e['fraction_of_flop_bound']:.0f} %)"


def _x(values) -> str:
    return "×".join(map(str, values))


def readme_table(results: dict) -> str:
    """The table of docs/attention.md (``<!-- table:attention_gpu -->``) from docs/results/bench_attention_gpu.json."""
    m = results["machine"]
    lines = ["| shape | pass | allowed pairs (FLOP bound) | `triton` ms (TFLOP/s; dense-equiv.) | "
             "`triton`, raster order, ms | `flex` ms (TFLOP/s) | dense flash ms | dense cuDNN ms | "
             "`triton` vs dense (of bound) | `flex` vs dense (of bound) | `triton` vs `flex` |", "|---" * 11 + "|"]
    for row in results["rows"]:
        label = f"({row['key']}) {_x(row['grid'])}, window {_x(row['window'])}"
        if "skipped" in row:
            lines.append(f"| {label} | – | – | {row['skipped']} | | | | | | | |")
            continue
        label += f", {row['heads']} heads, D {row['head_dim']}"
        if row.get("below_min_rounds"):
            label += f" (**{row['rounds']} round only**: the run's time budget ran out)"
        box = row.get("triton_layout", {}).get("box")
        if box:
            label += f"; `triton` layout: {'raster' if box == 'raster' else _x(box) + ' boxes'}"
        for p, entry in row["passes"].items():
            b = entry["backends"]
            t, f = b["triton"], b["flex"]
            tri = f"{_ms(t)} ({t['tflops']:.0f}; {t['dense_equivalent_tflops']:.0f})" if "ms" in t else "–"
            flx = f"{_ms(f)} ({f['tflops']:.0f})" if "ms" in f else "–"
            ratio = entry.get("triton_speedup_vs_flex")
            lines.append(f"| {label} | {p.replace('_', '+')} | {row['allowed_pairs']:,} ({row['flop_bound']:.1f}×) | "
                         f"{tri} | {_ms(b.get('triton_raster', {}))} | {flx} | {_ms(b['dense_flash'])} | "
                         f"{_ms(b['dense_cudnn'])} | {_vs(t)} | {_vs(f)} | "
                         f"{'–' if ratio is None else f'**{ratio:.2f}×**'} |")
    timed = [r for r in results["rows"] if "rounds" in r]
    first = {name: max(r["passes"][p]["backends"][name].get("first_call_s", 0) for r in timed for p in PASSES)
             for name in ("triton", "flex")} if timed else {}
    gpu = m["gpu"] or "CPU (no GPU: a plumbing run, not a speed)"
    lines += ["", f"{gpu}, driver {m['driver']}, torch {m['torch']}, triton {m['triton']}, CUDA {m['cuda']}; "
              f"{results['dtype']}, B=1, one run ({results['date'][:10]}, {results['elapsed_s']:.0f} s). Each backend "
              "called once first (compile: up to "
              + ", ".join(f"{k} {v:.0f} s" for k, v in first.items()) + " for the first call), then the median ms of "
              f"{min((r['rounds'] for r in timed), default=0)}+ rounds in rotated order, "
              "`torch.cuda.synchronize()` around each call. TFLOP/s counts the allowed pairs (4·D forward, 12·D "
              "forward+backward); dense-equivalent counts all N² pairs. \"vs dense\": the faster dense SDPA backend's "
              "median over this one's, and in brackets that speedup as a fraction of the FLOP bound. vidgen's windows "
              "reach |d| ≤ w//2 (an even window sees one position more per axis than NATTEN's) and are clipped at "
              "the borders, where NATTEN shifts them" + "".join(_natten_note(r) for r in timed) + ". Shapes: "
              + "; ".join(f"({r['key']}) {r['note']}" for r in results["rows"] if "note" in r)
              + f". `{results['command']}`."]
    return "\n".join(lines)


def _natten_note(row: dict) -> str:
    if "natten_pairs" not in row:
        return ""
    return (f"; at ({row['key']}) vidgen's pattern has {row['allowed_pairs']:,} pairs (FLOP bound "
            f"{row['flop_bound']:.1f}×), NATTEN's {row['natten_pairs']:,} ({row['natten_flop_bound']:.1f}×)")


def write_table(results_path: Path = OUT, page: Path = ROOT / "docs" / "attention.md") -> str:
    """Put :func:`readme_table` between the page's markers through eval/readme_tables.py's own renderer (once the
    results file is committed, its ``TABLES`` takes the same entry and ``readme_tables.py --check`` guards it)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_bench_attention_gpu_tables", Path(__file__).with_name(
        "readme_tables.py"))
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    tables.RESULTS = results_path.parent
    tables.TABLES = {TABLE: (results_path.name, tables.from_script("bench_attention_gpu"))}
    text = page.read_text()
    rendered = tables.render(text)
    if rendered != text:
        page.write_text(rendered)
    return rendered


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
        write_result(out, dict(base, complete=complete, elapsed_s=time.perf_counter() - start, rows=rows))

    rows = run_shapes(specs, device, dtype, args.min_rounds, args.max_rounds, start + args.budget_s, write)
    write(rows, complete=True)
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Static instruction counts of the Triton attention kernels' loops, compiled for a GPU on a machine without one.

Triton's wheel carries ``ptxas`` and ``cuobjdump``, so the kernels of :mod:`vidgen.attention.triton_jit` compile to
Hopper (sm_90) machine code here, with no driver and nothing launched. Each kernel walks two loops: full tiles (no
mask) and partial tiles (the mask rebuilt per pair of slots). For every kernel, mask variant (packed codes or
coordinates) and launch config its autotuner may pick, this records the SASS instructions of each loop's body (per
thread, per iteration: one key tile of the forward, one query or key tile of the backward), split into integer
instructions, selects, special-function (exp2) instructions, tensor-core instructions and local-memory traffic
(register spills), plus the kernel's registers per thread and stack bytes. These are counts, not timings: which variant
is faster is the GPU benchmark's to say (eval/bench_attention_gpu.py).

    python eval/kernel_sass.py              # docs/results/kernel_sass.json and docs/attention.md's table
    python eval/kernel_sass.py --table      # the table from the results file only
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402  (imported first: the run's start load)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "kernel_sass.json"
TABLE = "kernel_sass"
INTEGER = {"IMAD", "IADD3", "ISETP", "LOP3", "IABS", "SEL", "VIADD", "IMNMX", "VIMNMX", "SHF", "LEA", "PLOP3"}
# (kernel, tiles): the forward's 128x64 tiles, the backward's 64x64 (vidgen.attention.triton_kernel on a GPU)
KERNELS = (("forward", "fwd_kernel", 128, 64), ("backward dK/dV", "bwd_kv_kernel", 64, 64),
           ("backward dQ", "bwd_q_kernel", 64, 64))
POINTERS = {"Q", "K", "V", "O", "DO", "DK", "DV", "DQ"}


def _signature(names, dtype: str, constexprs: dict) -> dict:
    sig = {}
    for name in names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in POINTERS:
            sig[name] = "*" + dtype
        elif name in ("LSE", "DELTA"):
            sig[name] = "*fp32"
        elif name in ("VISITS", "C", "FULL_N", "FULL_I", "PART_N", "PART_I"):
            sig[name] = "*i32"
        elif name in ("qk_scale", "scale"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def compile_kernel(name: str, packed: bool, warps: int, stages: int, head_dim: int = 128, dtype: str = "bf16",
                   causal: bool = False, prefix: bool = False, capability: int = 90):
    """The compiled kernel (Triton's ``CompiledKernel``) for ``capability`` (90: Hopper)."""
    if os.environ.get("TRITON_INTERPRET") == "1":  # the kernels are then interpreted functions, not compilable
        raise RuntimeError("eval/kernel_sass.py compiles the kernels for a GPU: run it without TRITON_INTERPRET=1")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from vidgen.attention import triton_jit

    tiles = {kernel: (m, n) for _, kernel, m, n in KERNELS}[name]
    fn = getattr(triton_jit, name).fn  # the JITFunction under the autotuner
    constexprs = dict(CAUSAL=causal, HAS_PREFIX=prefix, PACKED=packed, BLOCK_M=tiles[0], BLOCK_N=tiles[1],
                      BLOCK_D=head_dim, EVEN_D=True, DOT_FP32=dtype == "fp32")
    sig = _signature(fn.arg_names, dtype, constexprs)
    index = {arg: (i,) for i, arg in enumerate(fn.arg_names)}
    src = ASTSource(fn=fn, signature=sig, constexprs={index[k]: v for k, v in constexprs.items()})
    return triton.compile(src, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": warps, "num_stages": stages})


def loop_counts(compiled) -> list:
    """Per loop (a backward branch in the SASS, in program order, one-instruction loops left out): its instruction
    counts by class."""
    from triton.tools.disasm import get_sass

    instructions, labels, loops = [], {}, []
    for line in get_sass(compiled.asm["cubin"]).splitlines():
        label = re.match(r"^(LBB\d+):", line.strip())
        if label:
            labels[label.group(1)] = len(instructions)
            continue
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1].strip():
            instructions.append(fields[1].strip())
    for i, text in enumerate(instructions):
        target = re.search(r"BRA (LBB\d+)", text)
        start = labels.get(target.group(1)) if target else None
        if start is None or start >= i:
            continue
        ops = collections.Counter()
        for ins in instructions[start:i + 1]:
            words = ins.split()
            opcode = words[1] if words[0].startswith("@") else words[0]
            ops[opcode.split(".")[0]] += 1
        loops.append(dict(instructions=sum(ops.values()), integer=sum(v for k, v in ops.items() if k in INTEGER),
                          select=ops["FSEL"] + ops["SEL"], exp2=ops["MUFU"], tensor_core=ops["HGMMA"] + ops["HMMA"],
                          spill_stores=ops["STL"], spill_loads=ops["LDL"]))
    return [loop for loop in loops if loop["instructions"] > 1]


def resources(compiled) -> dict:
    """Registers per thread and stack bytes (where spilled registers live) of the kernel, from ``cuobjdump``."""
    import subprocess
    import tempfile

    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        text = subprocess.run([str(tool), "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                              check=True, timeout=60).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if found is None:
        raise RuntimeError(f"cuobjdump printed no register count: {text[-300:]}")
    return dict(registers=int(found.group(1)), stack_bytes=int(found.group(2)))


def measure(configs=None, head_dim: int = 128, progress=print) -> list:
    """One row per (kernel, launch config, mask variant): the full and the partial loop, registers and spills."""
    from vidgen.attention import triton_jit

    rows = []
    for label, name, m, n in KERNELS:
        kernel_configs = configs or [(c.num_warps, c.num_stages) for c in getattr(triton_jit, name).configs]
        for warps, stages in kernel_configs:
            for packed in (True, False):
                start = time.perf_counter()
                compiled = compile_kernel(name, packed, warps, stages, head_dim)
                loops = loop_counts(compiled)
                if len(loops) != 2:
                    raise RuntimeError(f"{name}: expected the full and the partial loop, found {len(loops)} loops")
                rows.append(dict(kernel=label, function=name, tiles=[m, n], head_dim=head_dim, num_warps=warps,
                                 num_stages=stages, mask="packed" if packed else "coordinates", full=loops[0],
                                 partial=loops[1], **resources(compiled),
                                 compile_s=round(time.perf_counter() - start, 2)))
                progress(f"{label} {warps} warps {stages} stages {rows[-1]['mask']}: full loop "
                         f"{loops[0]['instructions']}, partial loop {loops[1]['instructions']} instructions")
    return rows


def gpu_shape(key: str = "b") -> dict:
    """A shape of the GPU benchmark (eval/bench_attention_gpu.py's SHAPES): its grid, exact window, and tile-aligned
    window (``tile_window`` tiles of ``tile`` tokens)."""
    from bench_attention_gpu import SHAPES  # eval/ is on sys.path (above)
    spec = next(s for s in SHAPES if s["key"] == key)
    return {k: spec[k] for k in ("grid", "window", "tile", "tile_window")}


LISTS = (("forward", "fwd_kernel", "forward"), ("backward dK/dV", "bwd_kv_kernel", "backward_kv"),
         ("backward dQ", "bwd_q_kernel", "backward_q"))


def visits(pattern) -> dict:
    """The full and the partial tile visits of each kernel's lists for ``pattern`` on a GPU (128x64 forward, 64x64
    backward tiles), in the layout the kernel runs it in: the tiles themselves for a tile-aligned window."""
    from vidgen.attention import tiles
    m, n, backward = KERNELS[0][2], KERNELS[0][3], KERNELS[1][2]
    box = pattern.tile if pattern.tile is not None else tiles.choose_box(pattern, m, n)
    plan = tiles.kernel_plan(pattern, box, m, n, backward)
    return {field: dict(full=int(getattr(plan, field).full_count.sum()),
                        partial=int(getattr(plan, field).partial_count.sum())) for _, _, field in LISTS}


def per_iteration(rows: list, counts: dict) -> dict:
    """Per kernel: SASS instructions per visited tile, averaged over the visits (full tiles run the full loop's body,
    partial ones the partial loop's), with each kernel's first packed-mask launch config of ``rows``."""
    out = {}
    for label, function, field in LISTS:
        row = next(r for r in rows if r["function"] == function and r["mask"] == "packed")
        full, partial = counts[field]["full"], counts[field]["partial"]
        average = (full * row["full"]["instructions"] + partial * row["partial"]["instructions"]) / (full + partial)
        out[label] = dict(**counts[field], num_warps=row["num_warps"], num_stages=row["num_stages"],
                          instructions_per_iteration=round(average, 1),
                          full_loop_instructions=row["full"]["instructions"])
    return out


def tile_windows(rows: list, shape: dict | None = None) -> dict:
    """Exact against tile-aligned windows at ``shape``: each kernel's visits and instructions per visited tile. A
    tile-aligned window visits whole tiles only, so its every iteration is the full loop's body."""
    from vidgen.attention import make_pattern
    shape = shape or gpu_shape("b")
    exact = make_pattern(shape["grid"], shape["window"])
    tiled = make_pattern(shape["grid"], shape["tile_window"], tile=shape["tile"])
    out = {key: per_iteration(rows, visits(pattern)) for key, pattern in (("exact", exact), ("tiled", tiled))}
    out["tile_iterations_equal_the_full_loop"] = all(
        k["partial"] == 0 and k["instructions_per_iteration"] == k["full_loop_instructions"]
        for k in out["tiled"].values())
    return {**{k: list(v) if isinstance(v, tuple) else v for k, v in shape.items()}, **out}


def tile_table(results: dict) -> list:
    """The lines under the table: exact against tile-aligned windows at the GPU benchmark's shape (b)."""
    t = results.get("tile_windows")
    if t is None:
        return []
    x = "×".join
    lines = ["", f"At the GPU benchmark's shape (b), {x(map(str, t['grid']))} tokens, exact window "
             f"{x(map(str, t['window']))} against tile-aligned windows of {x(map(str, t['tile_window']))} tiles of "
             f"{x(map(str, t['tile']))} tokens (the kernels' lists for a GPU's tiles; instructions per visit "
             f"with each kernel's first packed-code launch config above):", "",
             "| kernel | exact: full / partial visits | exact: instructions per visit | tile: full / partial visits | "
             "tile: instructions per visit | full loop |", "|---" * 6 + "|"]
    for label, e in t["exact"].items():
        g = t["tiled"][label]
        lines.append(f"| {label} | {e['full']:,} / {e['partial']:,} | {e['instructions_per_iteration']:,.0f} | "
                     f"{g['full']:,} / {g['partial']:,} | {g['instructions_per_iteration']:,.0f} | "
                     f"{g['full_loop_instructions']:,} |")
    return lines


def readme_table(results: dict) -> str:
    """docs/attention.md's ``<!-- table:kernel_sass -->``: each partial loop, packed beside coordinates."""
    lines = ["| kernel (tiles) | warps, stages | full loop | partial loop, packed codes | partial loop, coordinates | "
             "partial, packed / coordinates | integer instructions, packed / coordinates | spilled loads and stores "
             "a partial iteration, packed / coordinates | registers, stack bytes: packed / coordinates |",
             "|---" * 9 + "|"]
    rows = results["rows"]
    for row in (r for r in rows if r["mask"] == "packed"):
        other = next(r for r in rows if r["mask"] == "coordinates" and r["function"] == row["function"]
                     and r["num_warps"] == row["num_warps"] and r["num_stages"] == row["num_stages"])
        p, c = row["partial"], other["partial"]
        lines.append(f"| {row['kernel']} ({row['tiles'][0]}×{row['tiles'][1]}) | {row['num_warps']}, "
                     f"{row['num_stages']} | {row['full']['instructions']:,} | {p['instructions']:,} | "
                     f"{c['instructions']:,} | **{p['instructions'] / c['instructions']:.2f}** | "
                     f"{p['integer']} / {c['integer']} | {p['spill_loads'] + p['spill_stores']} / "
                     f"{c['spill_loads'] + c['spill_stores']} | {row['registers']}, {row['stack_bytes']} / "
                     f"{other['registers']}, {other['stack_bytes']} |")
    m = results["machine"]
    lines += ["", f"SASS instructions per thread in one iteration of each loop (one key tile of the forward, one "
              f"query or key tile of the backward), sm_{m['capability']}, bf16, head dim {rows[0]['head_dim']}, "
              f"non-causal without prefix; compiled on a CPU ({results['cpu']}) with Triton {m['triton']}'s own "
              f"ptxas, {results['date'][:10]}. Counts, not timings. `{results['command']}`."]
    return "\n".join(lines + tile_table(results))


def write_table(results_path: Path = OUT, page: Path = ROOT / "docs" / "attention.md") -> str:
    import readme_tables  # eval/ is on sys.path (above)

    return readme_tables.write_table(TABLE, results_path, page)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", action="store_true", help="only write docs/attention.md's table from --out")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.table:
        import triton
        rows = measure()
        write_result(args.out, dict(machine=dict(capability=90, triton=triton.__version__), rows=rows,
                                    tile_windows=tile_windows(rows)),
                     weights=(), precision="bf16")  # compiled kernels: no weights file
        print(f"wrote {args.out}")
    write_table(args.out)
    print(f"docs/attention.md's table from {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

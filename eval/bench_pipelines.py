"""Benchmark: the shipped pipelines as a user calls them, fp32 vs bf16 vs bf16 + torch.compile, in one run.

Each shipped pipeline (``pretrained/shapes-*``) generates a batch of 4 videos (17x64x64, 4 prompts, the shipped
sampling settings, one generator per video) end to end: prompt encoding, sampling, decoding, conversion to numpy.
Precisions, each a separately loaded pipeline:

* ``fp32``: ``load_pipeline(path, dtype="fp32")``;
* ``bf16``: ``load_pipeline(path, dtype="bf16")`` (what ``dtype="auto"``, the default, picks on CPUs with AMX or
  AVX512-BF16);
* ``bf16+compile``: as bf16, with ``pipe.transformer.compile()`` (inductor); its first call includes compilation and
  is reported apart (``compile_s``), the timed calls come after it.

Timed rounds alternate between the precisions (so a change of machine load hits all of them) and the median is
reported. The fp32 and bf16 GEMM ceilings are measured in the same run, before and after; the achieved GFLOP/s of
the transformer (``FlopCounterMode``, one counted call) is reported as a fraction of the ceiling of its dtype.

    python eval/bench_pipelines.py                    # -> docs/results/bench_pipelines.json
    python eval/bench_pipelines.py --quick            # smoke run: 1 round, no compile -> /tmp
    python eval/bench_pipelines.py --device cuda --batch 8   # on a GPU: -> bench_pipelines_cuda_b8.json (8192^3 GEMM
                                                             # ceilings; "auto" there is bf16 for every pipeline)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceiling import describe, gemm_ceilings  # noqa: E402
from results import write_result  # noqa: E402

PROMPTS = ["a red circle moving right on a black background", "a blue square moving up on a gray background",
           "a green star moving down on a textured background", "a yellow hexagon rotating on a gradient background"]
PRECISIONS = ("fp32", "bf16", "bf16+compile")
TARGET = 2.5  # issue 32: bf16 (the default precision here) >= 2.5x fp32 seconds per video, every pipeline


DEVICE = "cpu"  # main() sets it from --device


def load(name: str, precision: str):
    from vidgen.pipelines import load_pipeline, shipped_folder
    pipe = load_pipeline(shipped_folder(name, ROOT / "pretrained"), dtype="fp32" if precision == "fp32" else "bf16")
    pipe.to(DEVICE)
    pipe.set_progress_bar_config(disable=True)
    if precision == "bf16+compile":
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor"))
        pipe.transformer.compile()
    return pipe


def call(pipe, name: str, batch: int):
    """The shipped sampling settings: the folder's ``sampling_config.json`` (``pipe.sampling_config``)."""
    prompts = (PROMPTS * batch)[:batch]
    return pipe(prompts, num_frames=17, height=64, width=64, output_type="np",
                generator=[torch.Generator().manual_seed(i) for i in range(batch)]).frames


def transformer_flops(pipe, name: str, batch: int) -> int:
    """FLOPs of the transformer's forward passes in one call (the CPU SDPA kernel counted as dense attention)."""
    from torch.utils.flop_counter import sdpa_flop_count
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                lambda q, k, v, *args, **kwargs: sdpa_flop_count(q, k, v)}
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        call(pipe, name, batch)
    return counter.get_total_flops()


def default_precision(name: str, device: str = "cpu") -> str:
    """What ``dtype="auto"`` loads for pipeline ``name``: bf16 on a GPU; on a CPU with fast bf16 units, bf16 where
    it pays (``bf16_pays_on_cpu``)."""
    from vidgen.pipelines import pipeline_spec
    return "bf16" if device != "cpu" or pipeline_spec(name).pipeline_class.bf16_pays_on_cpu else "fp32"


def main(argv=None) -> int:
    from vidgen.pipelines import PIPELINE_REGISTRY as PIPELINES, shipped_folder
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="1 round, no compile, results to /tmp")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.no_compile = 1, True
    global DEVICE
    DEVICE = args.device
    gpu = torch.device(DEVICE).type == "cuda"
    gemm_n = 8192 if gpu else (512 if args.quick else 2048)  # --quick checks the plumbing, not the rate
    name = f"bench_pipelines_cuda_b{args.batch}.json" if gpu else "bench_pipelines.json"
    out = Path(args.out or ("/tmp/bench_pipelines_quick.json" if args.quick else ROOT / "docs" / "results" / name))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    precisions = [p for p in PRECISIONS if not (args.no_compile and p == "bf16+compile")]
    sampling = {}
    try:
        ceilings = [gemm_ceilings(n=gemm_n, repeats=3, device=DEVICE)]
        print(describe(ceilings[0]), flush=True)
        rows = {}
        for name in args.pipelines:
            pipes, row = {}, {}
            for precision in precisions:
                pipe = load(name, precision)
                sampling[name] = pipe.sampling_config.to_dict()
                start = time.perf_counter()
                call(pipe, name, args.batch)  # warm-up; for compile, the compilation
                row[precision] = {"first_call_s": time.perf_counter() - start, "times_s": []}
                if precision == "bf16+compile":
                    row[precision]["compile_s"] = row[precision]["first_call_s"]
                else:
                    row[precision]["transformer_flops"] = transformer_flops(pipe, name, args.batch)
                pipes[precision] = pipe
            for _ in range(args.rounds):
                for precision, pipe in pipes.items():
                    start = time.perf_counter()
                    call(pipe, name, args.batch)
                    row[precision]["times_s"].append(time.perf_counter() - start)
            for precision, r in row.items():
                r["seconds_per_video"] = statistics.median(r["times_s"]) / args.batch
                r["speedup_over_fp32"] = row["fp32"]["seconds_per_video"] / r["seconds_per_video"] \
                    if "fp32" in row else None
            rows[name] = row
            print(f"{name}: s/video " + ", ".join(f"{p} {r['seconds_per_video']:.3f} ({r['speedup_over_fp32']:.2f}x)"
                                                 for p, r in row.items()), flush=True)
        ceilings.append(gemm_ceilings(n=gemm_n, repeats=3, device=DEVICE))
        print(describe(ceilings[-1]), flush=True)
        gflops = {d: statistics.median([c[d]["gflops"] for c in ceilings]) for d in ("fp32", "bf16")}
        for row in rows.values():
            flops = row["fp32"]["transformer_flops"]
            for precision, r in row.items():
                dtype = "fp32" if precision == "fp32" else "bf16"
                rate = flops / (r["seconds_per_video"] * args.batch)
                r["transformer_gflops_per_s"] = rate / 1e9
                r["fraction_of_ceiling"] = rate / (gflops[dtype] * 1e9)
        targets = {}
        for name, row in rows.items():
            default = default_precision(name, DEVICE)
            targets[name] = {"default_precision": default, "default_speedup": row[default]["speedup_over_fp32"],
                             "met": row[default]["speedup_over_fp32"] >= TARGET}
        write_result(out, {"batch": args.batch, "rounds": args.rounds, "num_frames": 17, "size": 64,
                           "device": DEVICE, "gpu": torch.cuda.get_device_name() if gpu else None,
                           "sampling": sampling,
                           "ceilings": {"runs": ceilings, "gflops": gflops}, "pipelines": rows,
                           "target": {"bf16_speedup_at_least": TARGET, "by_pipeline": targets}}, threads=args.threads,
                     weights=[shipped_folder(name, ROOT / "pretrained") for name in rows],
                     precision="per row: " + ", ".join(PRECISIONS))
        print(f"wrote {out}")
    finally:
        torch.set_num_threads(threads)
    return 0


def readme_table(results: dict) -> str:
    """The README table (``<!-- table:pipelines -->``) from ``docs/results/bench_pipelines.json``."""
    lines = ["| pipeline | fp32 s / video | bf16 s / video | bf16 + compile s / video | compile time | default "
             "(`dtype=\"auto\"`) vs fp32 |", "|---|---|---|---|---|---|"]

    def cell(r):
        if r is None:
            return "–"
        return (f"{r['seconds_per_video']:.3f} (**{r['speedup_over_fp32']:.2f}x**, "
                f"{r['fraction_of_ceiling']:.0%} of ceiling)")
    dev = results.get("device", "cpu")
    for name, row in results["pipelines"].items():
        compiled = row.get("bf16+compile")
        lines.append(f"| {name} | {row['fp32']['seconds_per_video']:.3f} ({row['fp32']['fraction_of_ceiling']:.0%} "
                     f"of ceiling) | {cell(row.get('bf16'))} | {cell(compiled)} | "
                     f"{'%.0f s' % compiled['compile_s'] if compiled else '–'} | {default_precision(name, dev)}: "
                     f"{row[default_precision(name, dev)]['speedup_over_fp32']:.2f}x |")
    g = results["ceilings"]["gflops"]
    lines += ["", f"Batch {results['batch']} of 17x64x64 videos, end to end (prompts, sampling, decoding), shipped "
              f"sampling settings; median of {results['rounds']} alternating rounds; "
              f"{results.get('gpu') or str(results['threads']) + ' threads'}, "
              f"{results['date'][:10]}. In brackets: speed-up over fp32, and the transformer's achieved GFLOP/s as "
              f"a fraction of the same-dtype {8192 if results.get('gpu') else 2048}³ GEMM ceiling measured in the run "
              f"(fp32 {g['fp32']:.0f}, bf16 "
              f"{g['bf16']:.0f} GFLOP/s). Target: the default precision ≥ "
              f"{results['target']['bf16_speedup_at_least']}x fp32; `auto` keeps the autoregressive pipeline in fp32 "
              "on the CPU because bf16 measured slower for it."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

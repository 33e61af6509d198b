"""Does bf16 sampling keep the shipped pipelines' prompt adherence? fp32 vs bf16 on the tuning prompts.

Each shipped pipeline samples the tuning prompt set (``tuning_prompts(n, seed=1)``: seen colour x motion pairs only,
no caption of the evaluation set) with its shipped sampling settings (the folder's ``sampling_config.json``),
once with fp32 weights and once with bf16 weights (``dtype=``), the same seed per video. The project's scorer reads colour and motion; the target is that bf16's colour+motion
adherence stays within one standard error of fp32's (binomial, ``sqrt(p (1 - p) / n)`` of the fp32 rate). Also
reported: how many videos get the same detected attributes in both precisions, and the largest pixel difference.

    python eval/bf16_sampling_parity.py                  # 192 prompts -> docs/results/bf16_sampling_parity.json
    python eval/bf16_sampling_parity.py --prompts 16 --pipelines masked --out /tmp/p.json    # smoke run
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

from vidgen.demo.prompts import tuning_prompts
from vidgen.demo.run import PIPELINES, generate, load_pipelines, score
from vidgen.metrics.adherence import AttributeScorer
from vidgen.precision import cpu_bf16_units, cpu_has_fast_bf16

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

ATTRIBUTES = ("color", "motion", "shape")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--prompts", type=int, default=192)
    parser.add_argument("--seed", type=int, default=1, help="tuning set seed")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pretrained", default="pretrained")
    parser.add_argument("--out", default="docs/results/bf16_sampling_parity.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prompts, scorer = tuning_prompts(args.prompts, seed=args.seed), AttributeScorer()
    results, sampling = {}, {}
    for name in args.pipelines:
        row, videos, detected = {}, {}, {}
        for precision in ("fp32", "bf16"):
            pipe = load_pipelines(Path(args.pretrained), [name], precision)[name]
            sampling[name] = pipe.sampling_config.to_dict()
            videos[precision], seconds = generate(pipe, prompts, args.batch)
            detected[precision], adherence = score(scorer, videos[precision], prompts)
            row[precision] = {"adherence": adherence, "seconds_per_video": seconds}
        n = len(prompts)
        p32, p16 = (row[k]["adherence"]["all"]["color_motion"] for k in ("fp32", "bf16"))
        se = math.sqrt(max(p32 * (1 - p32), 1 / n) / n)  # floor: a rate of 0 or 1 still has sampling error
        row.update(color_motion_fp32=p32, color_motion_bf16=p16, standard_error=se, difference=p16 - p32,
                   within_one_standard_error=abs(p16 - p32) <= se,
                   same_detection=sum(all(a[k] == b[k] for k in ATTRIBUTES)
                                      for a, b in zip(detected["fp32"], detected["bf16"])) / n,
                   max_abs_pixel_difference=(videos["fp32"] - videos["bf16"]).abs().max().item(),
                   mean_abs_pixel_difference=(videos["fp32"] - videos["bf16"]).abs().mean().item())
        results[name] = row
        print(f"{name}: colour+motion fp32 {p32:.1%}, bf16 {p16:.1%} (difference {p16 - p32:+.1%}, one standard "
              f"error {se:.1%}: {'within' if row['within_one_standard_error'] else 'NOT within'}); same detection "
              f"{row['same_detection']:.0%}; s/video fp32 {row['fp32']['seconds_per_video']:.2f}, bf16 "
              f"{row['bf16']['seconds_per_video']:.2f}", flush=True)
    write_result(args.out, {"prompts": args.prompts, "prompt_seed": args.seed, "prompt_set": "tuning_prompts",
                            "cpu_has_fast_bf16": cpu_has_fast_bf16(), "cpu": cpu_model(), "sampling": sampling,
                            "pipelines": results}, threads=args.threads,
                 weights=[Path(args.pretrained) / PIPELINES[name] for name in args.pipelines],
                 precision="fp32 and bf16, side by side")
    print(f"wrote {args.out}")
    return 0


def cpu_model() -> str:
    """The CPU's model name and its bf16 units, from ``/proc/cpuinfo`` (Linux; else the platform's name)."""
    import platform
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    return f"{name} ({', '.join(cpu_bf16_units()) or 'no bf16 units'})"


def readme_table(results: dict) -> str:
    """The README table (``<!-- table:bf16_sampling -->``) from ``docs/results/bf16_sampling_parity.json``."""
    lines = ["| pipeline | colour+motion fp32 | bf16 | difference | one standard error | within it | shape fp32 / bf16 "
             "| same attributes detected | s / video fp32 / bf16 |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["pipelines"].items():
        shape = " / ".join(f"{r[k]['adherence']['all']['shape']:.1%}" for k in ("fp32", "bf16"))
        lines.append(f"| {name} | {r['color_motion_fp32']:.1%} | {r['color_motion_bf16']:.1%} | "
                     f"{100 * r['difference']:+.1f} points | {100 * r['standard_error']:.1f} points | "
                     f"{'yes' if r['within_one_standard_error'] else '**no**'} | {shape} | {r['same_detection']:.0%} | "
                     f"{r['fp32']['seconds_per_video']:.2f} / {r['bf16']['seconds_per_video']:.2f} |")
    prompt_set = ("tuning prompts (seen pairs, no caption of the evaluation set)"
                  if results.get("prompt_set") == "tuning_prompts" else "tuning prompts (`demo_prompts`, seed "
                  f"{results['prompt_seed']}, which shared captions with the evaluation)")
    lines += ["", f"{results['prompts']} {prompt_set}, shipped sampling settings, the same seed per video in both "
              f"precisions; {results['threads']} threads, {results.get('cpu', 'CPU not recorded')}, "
              f"{results['date'][:10]}; `{results['command']}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""A distilled pipeline against its teacher on the full evaluation: adherence, FVD and seconds per video, one run.

The prompts are the full evaluation's (``demo_prompts(128, 0)``: half seen colour x motion pairs, half held-out
ones), as ``python -m vidgen.demo --full`` scores them. For the teacher at its shipped settings and the student at
each step count it was trained for:

1. every prompt's video at batch 8 (one seeded generator per video), as the full evaluation makes them;
2. colour+motion on seen and held-out pairs and shape (``vidgen.demo.run.score``), FVD against real clips of the same
   prompts, with the real-vs-real floor (``vidgen.demo.run.fvd_against``);
3. seconds per video at batch 1 and at batch 4 on the first ``--timing-prompts`` prompts, over ``--rounds`` rounds
   (at least 5): each round times every setting on those prompts in turn after one untimed call each, odd rounds in
   reverse order, so a change of load hits all of them alike. Every round is recorded. The teacher's time is this
   run's ceiling: every speed claim is the ratio, taken within each round, and judged on the median of the rounds'
   ratios with the smallest beside it. A negative time is an error;
4. the targets against the teacher: >= 10x faster at batch 1 (median of the rounds), colour+motion and shape no more
   than 2 points below, FVD no more than 10 % above; each met, or missed by how much.

Run it alone: a training on the same cores would distort the times.

    python eval/bench_few_step.py --teacher pretrained/shapes-flow --student pretrained/shapes-flow-distilled
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import (alternate, checked_seconds, paired_ratios, require_rounds, rounds_summary,  # noqa: E402
                     weights_digest, write_result)

from vidgen.demo.prompts import EVALUATION_PROMPTS, EVALUATION_SEED, demo_prompts, real_clip  # noqa: E402
from vidgen.demo.run import NUM_FRAMES, SIZE, fvd_against, generate, score  # noqa: E402
from vidgen.metrics.adherence import AttributeScorer  # noqa: E402

#: the issue's targets for the shipped student, against the teacher's defaults in the same run
MIN_SPEEDUP, MAX_POINTS_BELOW, MAX_FVD_RATIO = 10.0, 2.0, 1.10


def evaluations(config) -> int:
    """Transformer evaluations per video: one per step, two under classifier-free guidance."""
    return config.num_inference_steps * (2 if config.guidance_scale != 1 else 1)


def targets(row: dict, teacher: dict) -> dict:
    """Each target as ``{"met": bool, "value", "limit"}`` for ``row`` against ``teacher``."""
    def points(key):
        return 100 * (teacher["adherence"]["all"][key] - row["adherence"]["all"][key])
    checks = {"speedup_batch_1": (row["speedup_batch_1"], MIN_SPEEDUP, row["speedup_batch_1"] >= MIN_SPEEDUP)}
    extra = {"speedup_batch_1": {"judged_on": "median", "minimum": row["speedup_batch_1_rounds"]["min"],
                                 "rounds": row["speedup_batch_1_rounds"]["n"]}} if "speedup_batch_1_rounds" in row else {}
    for key in ("color_motion", "shape"):
        below = points(key)
        checks[f"{key}_points_below_teacher"] = (below, MAX_POINTS_BELOW, below <= MAX_POINTS_BELOW)
    if "fvd" in row:
        ratio = row["fvd"]["value"] / teacher["fvd"]["value"]
        checks["fvd_ratio_to_teacher"] = (ratio, MAX_FVD_RATIO, ratio <= MAX_FVD_RATIO)
    return {k: {"value": v, "limit": lim, "met": bool(ok), **extra.get(k, {})} for k, (v, lim, ok) in checks.items()}


def time_rounds(pipes: list, prompts, batch: int, rounds: int) -> list[list[float]]:
    """Seconds per video at ``batch`` for each ``(pipe, settings)``, one figure per round: each round makes every
    setting's videos of ``prompts`` in turn (odd rounds in reverse order), after one untimed call of each."""
    def call(pipe, settings, part):
        pipe(prompt=[p.caption for p in part], num_frames=NUM_FRAMES, height=SIZE, width=SIZE, output_type="pt",
             generator=[torch.Generator().manual_seed(p.seed) for p in part], **settings)
    parts = [prompts[s:s + batch] for s in range(0, len(prompts), batch)]
    for pipe, settings in pipes:  # warm-up, untimed
        call(pipe, settings, parts[0])
    per_round = [[] for _ in pipes]
    for r in range(rounds):
        for i in alternate(range(len(pipes)), r):
            pipe, settings = pipes[i]
            start = time.perf_counter()
            for part in parts:
                call(pipe, settings, part)
            seconds = checked_seconds(time.perf_counter() - start, f"setting {i}, batch {batch}, round {r}")
            per_round[i].append(seconds / len(prompts))
    return per_round


def readme_table(results: dict) -> str:
    """The docs' table (``eval/readme_tables.py``, marker ``few_step``): steps, evaluations, s/video, speed-up,
    adherence and FVD per setting, then the shipped student's targets."""
    floor = results.get("fvd_floor", {}).get("value")
    lines = ["| | steps | evaluations / video | s / video, batch 1 | batch 4 | speed-up, batch 1 | batch 4 "
             "| colour+motion, seen pairs | held-out pairs | shape | FVD vs real |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        a, sec, k = row["adherence"], row["seconds_per_video"], row["settings"]["num_inference_steps"]
        label = "teacher (guidance " + f"{row['settings']['guidance_scale']:g})" if row["name"] == "teacher" else \
            "student" + (" (shipped)" if k == results["shipped_steps"] else "")
        fvd = f"{row['fvd']['value']:.0f}" if "fvd" in row else "–"
        lines.append(f"| {label} | {k} | {row['evaluations_per_video']} | {sec['batch_1']:.3f} | {sec['batch_4']:.3f} "
                     f"| {row['speedup_batch_1']:.1f}x | {row['speedup_batch_4']:.1f}x | "
                     f"{100 * a['seen']['color_motion']:.1f} % | {100 * a['held_out']['color_motion']:.1f} % | "
                     f"{100 * a['all']['shape']:.1f} % | {fvd} |")
    shipped = next(r for r in results["rows"][1:] if r["settings"]["num_inference_steps"] == results["shipped_steps"])
    said = {"speedup_batch_1": "speed-up {value:.1f}x (median, smallest round {minimum:.1f}x; target >= {limit:.0f}x)"
                               if "minimum" in shipped["targets"]["speedup_batch_1"] else
                               "speed-up {value:.1f}x (target >= {limit:.0f}x)",
            "color_motion_points_below_teacher": "colour+motion {value:.1f} points below the teacher (target <= "
                                                 "{limit:.0f})",
            "shape_points_below_teacher": "shape {value:.1f} points below (target <= {limit:.0f})",
            "fvd_ratio_to_teacher": "FVD {value:.2f}x the teacher's (target <= {limit:.2f}x)"}
    verdicts = "; ".join(f"{said[k].format(**t)}: {'met' if t['met'] else 'missed'}"
                         for k, t in shipped["targets"].items())
    timing = (f"speed: median of {results['rounds']} alternating rounds on {results['timing_prompts']} prompts, "
              "ratios to the teacher taken within each round" if "rounds" in results else
              f"speed: one pass over {results['timing_prompts']} prompts (a file from before speed was judged over "
              "rounds)")
    lines += ["", f"{results['prompts']} prompts (the full evaluation's), fp32, {results['threads']} threads, "
              f"{results['cpu']}, {results['date'][:10]}; FVD's real-vs-real floor "
              + (f"{floor:.0f}" if floor else "–") + f"; {timing}. The shipped student: {verdicts}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="pretrained/shapes-flow")
    parser.add_argument("--student", default="pretrained/shapes-flow-distilled")
    parser.add_argument("--prompts", type=int, default=EVALUATION_PROMPTS)
    parser.add_argument("--timing-prompts", type=int, default=8, help="prompts each round times")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer than 5 rounds allowed")
    parser.add_argument("--no-fvd", action="store_true", help="skip FVD (the I3D features are the slowest part)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/results/bench_few_step.json")
    args = parser.parse_args(argv)
    require_rounds(args.rounds, args.quick)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = run(args)
    finally:
        torch.set_num_threads(previous)
    write_result(Path(args.out), result, command=" ".join(["python", "eval/bench_few_step.py",
                                                           *(argv if argv is not None else sys.argv[1:])]),
                 threads=args.threads, weights=[args.teacher, args.student], precision="fp32")
    print(f"wrote {args.out}")
    return 0


def judge_speed(rows: list[dict]) -> None:
    """Each row's speed-up over the teacher (``rows[0]``) at batch 1 and 4: the median of per-round ratios (the
    teacher's and the row's time in the same round), the rounds' summary beside it (``speedup_batch_1_rounds``)."""
    base = rows[0]["seconds_per_video_rounds"]
    for row in rows:
        for batch in ("batch_1", "batch_4"):
            ratios = paired_ratios(base[batch], row["seconds_per_video_rounds"][batch])
            row[f"speedup_{batch}"], row[f"speedup_{batch}_rounds"] = ratios["median"], ratios


def run(args) -> dict:
    from vidgen.pipelines import load_pipeline
    prompts, scorer = demo_prompts(args.prompts, EVALUATION_SEED), AttributeScorer()
    teacher = load_pipeline(args.teacher, dtype="fp32")
    student = load_pipeline(args.student, dtype="fp32")
    spec = student.transformer.config.get("distillation")
    if not spec:
        raise SystemExit(f"{args.student}: its transformer is no distilled student (no 'distillation' in its config)")
    for pipe in (teacher, student):
        pipe.set_progress_bar_config(disable=True)
    shipped_steps = student.sampling_config.num_inference_steps
    runs = [("teacher", args.teacher, teacher, {})]
    runs += [(f"student_{k}_steps", args.student, student, {"num_inference_steps": k}) for k in spec["steps"]]
    fvd = None
    result = {"prompts": len(prompts), "prompt_seed": EVALUATION_SEED, "timing_prompts": args.timing_prompts,
              "rounds": args.rounds, "distillation": spec, "shipped_steps": shipped_steps, "rows": []}
    if not args.no_fvd:
        from vidgen.metrics import FrechetVideoDistance
        fvd = FrechetVideoDistance(batch_size=4)
        fvd.update(torch.stack([real_clip(p, NUM_FRAMES, SIZE) for p in prompts]), real=True)
        second = torch.stack([real_clip(p, NUM_FRAMES, SIZE, stream="demo/real-b") for p in prompts])
        result["fvd_floor"] = fvd_against(fvd, second)
    for name, folder, pipe, settings in runs:
        videos, _ = generate(pipe, prompts, 8, **settings)
        _, adherence = score(scorer, videos, prompts)
        config = pipe.sampling_config.replace(**settings)
        row = {"name": name, "folder": folder, "weights_sha256": weights_digest(Path(folder)),
               "settings": config.to_dict(), "evaluations_per_video": evaluations(config),
               "seconds_per_video": {}, "adherence": adherence}
        if fvd is not None:
            row["fvd"] = fvd_against(fvd, videos)
        result["rows"].append(row)
        print(f"{name:16s} c+m {adherence['all']['color_motion']:6.1%} (seen {adherence['seen']['color_motion']:.1%},"
              f" held-out {adherence['held_out']['color_motion']:.1%})  shape {adherence['all']['shape']:6.1%}  "
              f"FVD {row.get('fvd', {}).get('value', float('nan')):.1f}", flush=True)
    for batch in (1, 4):
        timed = time_rounds([(pipe, settings) for _, _, pipe, settings in runs], prompts[:args.timing_prompts],
                            batch, args.rounds)
        for row, seconds in zip(result["rows"], timed):
            row["seconds_per_video"][f"batch_{batch}"] = rounds_summary(seconds)["median"]
            row.setdefault("seconds_per_video_rounds", {})[f"batch_{batch}"] = seconds
    judge_speed(result["rows"])
    base = result["rows"][0]
    for row in result["rows"]:
        if row is not base:
            row["targets"] = targets(row, base)
            row["all_targets_met"] = all(t["met"] for t in row["targets"].values())
        print(f"{row['name']:16s} s/video b1 {row['seconds_per_video']['batch_1']:.3f}  speed-up b1 "
              f"{row['speedup_batch_1']:.1f}x  s/video b4 {row['seconds_per_video']['batch_4']:.3f}  speed-up b4 "
              f"{row['speedup_batch_4']:.1f}x", flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())

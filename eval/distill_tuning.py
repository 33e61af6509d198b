#!/usr/bin/env python
"""A distilled student against its teacher on the tuning prompts: adherence, and seconds per video side by side.

The prompts are ``tuning_prompts(n, seed=1)`` (seen colour x motion pairs, no caption of the full evaluation), so the
ship rules in ``configs/shapes-flow-distilled/`` and ``experiments/configs/distill/`` read no evaluation number. For
the teacher at its shipped settings and each student at each of its step counts: colour+motion and shape
(``vidgen.demo.run.score``), what each asked-for shape was read as (``shapes_read``), the rotating prompts read as
turning (``turning``), the transformer evaluations per video, and seconds per video at batch 1 and batch 4, measured
on a timing subset in one interleaved run (the teacher's time is this run's ceiling; every speed claim is the ratio).
Run it alone: a training on the same cores would distort the times.

    python eval/distill_tuning.py --teacher pretrained/shapes-flow \\
        --student dmd2=runs/distill_shapes_dmd2/pipeline --student consistency=runs/distill_shapes_consistency/pipeline
    python eval/distill_tuning.py --teacher pretrained/shapes-flow --student causal=runs/causal_pipeline \\
        --grid causal='{"num_inference_steps": [4, 8], "guidance_scale": [1, 3]}'   # any pipeline, at settings
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import weights_digest, write_result  # noqa: E402

from vidgen.demo.prompts import tuning_prompts  # noqa: E402
from vidgen.demo.run import NUM_FRAMES, SIZE, generate, score, shapes_read, turning  # noqa: E402
from vidgen.metrics.adherence import AttributeScorer  # noqa: E402


def evaluations(config, steps: int) -> int:
    """Transformer evaluations per video (a block-causal pipeline's: per chunk): one per step, two under
    classifier-free guidance."""
    return steps * (2 if config.guidance_scale != 1 else 1)


def seconds_per_video(pipe, prompts, batch: int, settings: dict) -> float:
    start = time.perf_counter()
    for s in range(0, len(prompts), batch):
        part = prompts[s:s + batch]
        pipe(prompt=[p.caption for p in part], num_frames=NUM_FRAMES, height=SIZE, width=SIZE,
             generator=[torch.Generator().manual_seed(p.seed) for p in part], output_type="pt", **settings)
    return (time.perf_counter() - start) / len(prompts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="the teacher's pipeline folder")
    parser.add_argument("--student", action="append", default=[], metavar="NAME=FOLDER",
                        help="a student's pipeline folder (pipelines/distill.py writes run_dir/pipeline)")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=JSON",
                        help="read --student NAME at every combination of these settings, e.g. "
                             "causal='{\"num_inference_steps\": [4, 8], \"guidance_scale\": [1, 3]}'")
    parser.add_argument("--prompts", type=int, default=192)
    parser.add_argument("--timing-prompts", type=int, default=16, help="prompts timed at batch 1 and at batch 4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="experiments/results/distill_tuning.json")
    parser.add_argument("--note", default=None, help="kept in the record: what the read is of (step, EMA history)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from vidgen.pipelines import load_pipeline
    prompts, scorer = tuning_prompts(args.prompts, seed=1), AttributeScorer()
    timing = prompts[:args.timing_prompts]
    runs = [("teacher", args.teacher, {})]
    grids = dict(g.split("=", 1) for g in args.grid)
    for item in args.student:
        name, _, folder = item.partition("=")
        spec = getattr(load_pipeline(folder, dtype="fp32").transformer.config, "distillation", None)
        if name in grids:  # a pipeline read at each combination of its settings
            grid = json.loads(grids[name])
            runs += [(name, folder, dict(zip(grid, values))) for values in itertools.product(*grid.values())]
        elif spec is not None:  # a distilled student at each of its step counts
            runs += [(name, folder, {"num_inference_steps": k}) for k in spec["steps"]]
        else:
            runs.append((name, folder, {}))
    rows = []
    for name, folder, settings in runs:
        pipe = load_pipeline(folder, dtype="fp32")
        pipe.set_progress_bar_config(disable=True)
        config = pipe.sampling_config.replace(**settings)
        steps = config.num_inference_steps
        seconds = {f"batch_{b}": seconds_per_video(pipe, timing, b, settings) for b in (1, 4)}
        videos, _ = generate(pipe, prompts, 8, **settings)
        detected, result = score(scorer, videos, prompts)
        row = {"name": name, "folder": folder, "weights_sha256": weights_digest(Path(folder)), "steps": steps,
               "settings": config.to_dict(), "evaluations_per_video": evaluations(config, steps),
               "seconds_per_video": seconds, "color_motion": result["all"]["color_motion"],
               "shape": result["all"]["shape"], "turns": turning(detected, prompts),
               "shapes": shapes_read(detected, prompts)}
        rows.append(row)
        print(f"{name:12s} {settings or 'shipped settings'}  evals {row['evaluations_per_video']:3d}  c+m "
              f"{row['color_motion']:6.1%}  shape {row['shape']:6.1%}  turns {row['turns']['turned']}/"
              f"{row['turns']['n']}  s/video b1 {seconds['batch_1']:.3f} b4 {seconds['batch_4']:.3f}", flush=True)
    teacher = rows[0]
    for row in rows:
        row["speedup_batch_1"] = teacher["seconds_per_video"]["batch_1"] / row["seconds_per_video"]["batch_1"]
        row["speedup_batch_4"] = teacher["seconds_per_video"]["batch_4"] / row["seconds_per_video"]["batch_4"]
    write_result(Path(args.out), {"prompts": args.prompts, "prompt_seed": 1, "timing_prompts": args.timing_prompts,
                                  "precision": "fp32", "rows": rows,
                                  **({"note": args.note} if args.note else {})},
                 command=" ".join(["python", "eval/distill_tuning.py", *(argv or sys.argv[1:])]), threads=args.threads,
                 weights=sorted({folder for _, folder, _ in runs}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

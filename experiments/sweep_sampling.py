"""Choose a shipped pipeline's sampling settings on a tuning prompt set, never on the demo's evaluation set.

The sweep's prompts are ``tuning_prompts(n, seed)`` (``vidgen.demo.prompts``): seen colour x motion pairs only and no
caption of the full evaluation set, so the settings saved in a pipeline's ``sampling_config.json`` (recipe copy:
``configs/shapes-<name>/``) are fitted neither to the numbers the README reports nor to held-out pairs, which only the
final evaluation scores. Sweep the pipeline you ship (``--pretrained`` a freshly assembled folder).
For each setting it prints colour+motion adherence on seen and held-out pairs and seconds per video, and writes
``experiments/results/sampling_sweep_<pipeline>.json``.

    python experiments/sweep_sampling.py masked --grid '{"guidance_scale": [3, 5], "num_inference_steps": [12, 24]}'
    python experiments/sweep_sampling.py flow --grid '{"guidance_scale": [2, 4], "scheduler.shift": [1.0, 3.0]}'
    python experiments/sweep_sampling.py flow --prompts 192 --motions rotate,still \
        --grid '{"num_inference_steps": [25, 50]}'
    python experiments/sweep_sampling.py masked --tokenizer runs/fsq_shapes_edges/final --prompts 192 \
        --grid '{"top_k": [1]}'
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
from pathlib import Path

import torch

from vidgen.data.shapes import MOTIONS
from vidgen.demo.prompts import tuning_prompts
from vidgen.demo.run import NUM_FRAMES, PIPELINES, SIZE, fvd_against, generate, load_pipelines, score
from vidgen.metrics.adherence import AttributeScorer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))  # eval/results.py
from results import weights_digest, write_result  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", choices=list(PIPELINES))
    parser.add_argument("--grid", required=True, help="JSON: sampling argument -> list of values (all combinations)")
    parser.add_argument("--prompts", type=int, default=64, help="tuning prompts (seen pairs, no evaluation caption)")
    parser.add_argument("--seed", type=int, default=1, help="tuning set seed (not the evaluation's, 0)")
    parser.add_argument("--pretrained", default="pretrained")
    parser.add_argument("--out", default=None, help="results file (default "
                        "experiments/results/sampling_sweep_<pipeline>.json)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fvd", action="store_true", help="also FVD of each setting's videos against real clips "
                        "of the same prompts (as the demo's evaluation, on the tuning prompts)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="compute precision (auto: bf16 where the CPU has bf16 units); compare reads in one")
    parser.add_argument("--tokenizer", default="", help="decode with this saved tokenizer instead of the pipeline's "
                        "own (another decoder stage of the same tokenizer: the generator's ids / latents are unchanged)")
    parser.add_argument("--motions", default="", help="keep only prompts with these motions, comma-separated "
                        "(e.g. rotate,still: do rotating prompts turn while still ones stay still?)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = json.loads(args.grid)
    keys = list(grid)
    pipe = load_pipelines(Path(args.pretrained), [args.pipeline], args.precision)[args.pipeline]
    if args.tokenizer:
        from vidgen.tokenizers import load_tokenizer
        tokenizer = load_tokenizer(args.tokenizer)
        pipe.transformer.check_tokenizer(tokenizer)  # same latent / id space, or a clear error
        pipe.register_modules(**{pipe.video_tokenizer_name: tokenizer})
    prompts, scorer = tuning_prompts(args.prompts, seed=args.seed), AttributeScorer()
    motions = [m for m in args.motions.split(",") if m]
    if unknown := sorted(set(motions) - set(MOTIONS)):
        parser.error(f"--motions: unknown {unknown}; choose from {list(MOTIONS)}")
    if motions:
        prompts = [p for p in prompts if p.attributes.motion in motions]
    silhouette_only = scorer.silhouette_only()
    fvd_metric = None
    if args.fvd:
        from vidgen.demo.prompts import real_clip
        from vidgen.metrics import FrechetVideoDistance
        fvd_metric = FrechetVideoDistance(batch_size=4)
        fvd_metric.update(torch.stack([real_clip(p, NUM_FRAMES, SIZE) for p in prompts]), real=True)
    rows = []
    base_scheduler = dict(pipe.scheduler.config) if hasattr(pipe, "scheduler") else {}
    for values in itertools.product(*(grid[k] for k in keys)):
        sampling = {k: (tuple(v) if isinstance(v, list) else v) for k, v in zip(keys, values)}
        call = {k: v for k, v in sampling.items() if not k.startswith("scheduler.")}
        scheduler = {k.split(".", 1)[1]: v for k, v in sampling.items() if k.startswith("scheduler.")}
        if scheduler:  # e.g. "scheduler.shift": a setting of the pipeline's scheduler component, not of the call
            pipe.scheduler = type(pipe.scheduler).from_config({**base_scheduler, **scheduler})
        videos, seconds = generate(pipe, prompts, 8, **call)
        detected, result = score(scorer, videos, prompts)
        _, strict = score(silhouette_only, videos, prompts)
        row = {"sampling": sampling, "seconds_per_video": seconds,
               **{g: {k: result[g][k] for k in ("color_motion", "color", "motion", "shape")} for g in result},
               "silhouette_only": {g: strict[g]["color_motion"] for g in strict},
               "motion_right": motion_right(detected, prompts)}
        if fvd_metric is not None:
            row["fvd"] = fvd_against(fvd_metric, videos)
        rows.append(row)
        groups = "  ".join(f"{g} c+m {row[g]['color_motion']:6.1%}" for g in result)
        right = "  ".join(f"{m} {k}" for m, k in row["motion_right"].items())
        fvd = f"  FVD {row['fvd']['value']:.0f}" if "fvd" in row else ""
        print(f"{json.dumps(sampling):60s} {groups}{fvd}  {seconds:.2f} s/video\n    motion right: {right}", flush=True)
    out = Path(args.out or f"experiments/results/sampling_sweep_{args.pipeline}.json")
    folder = Path(args.pretrained) / PIPELINES[args.pipeline]
    write_result(out, {"pipeline": args.pipeline, "prompts": args.prompts, "prompt_seed": args.seed,
                       "weights_digest": weights_digest(folder),  # the short digest a model card compares
                       "motions": motions or "all",
                       "tokenizer": args.tokenizer or "the pipeline's own", "precision": pipe.precision,
                       "rows": rows},
                 command=" ".join(["python", "experiments/sweep_sampling.py", *(argv or sys.argv[1:])]),
                 weights=[folder])
    print(f"wrote {out}")
    return 0


def motion_right(detected, prompts) -> dict:
    """Per asked-for motion, "right / asked" (how many rotating prompts gave a shape that turns, ...);
    ``detected``: the scorer's dicts."""
    asked, right = collections.Counter(), collections.Counter()
    for d, p in zip(detected, prompts):
        asked[p.attributes.motion] += 1
        right[p.attributes.motion] += d["motion"] == p.attributes.motion
    return {m: f"{right[m]}/{asked[m]}" for m in MOTIONS if asked[m]}


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Would a step cache pay on vidgen's own flow pipeline? An upper bound, read on the uncached trajectory.

First-block caching (diffusers' ``FirstBlockCacheConfig``, TeaCache's idea) skips the blocks after the first at a
step whose first-block residual (its output minus its input) differs from the one at the last fully computed step by
less than ``threshold`` (mean absolute difference over mean absolute value), and reuses their cached residual. This
script samples with the shipped settings, records that residual at every step, and replays the rule for each
threshold: the steps it would skip, and the speed-up of the transformer's work if skipping cost nothing
(``steps / (computed + skipped / depth)``). Read on the exact trajectory, the skip counts are an upper bound: a real
cache follows its own, approximated, trajectory.

The prompts are ``tuning_prompts`` (never the evaluation's).

    python eval/step_cache_probe.py --pipeline pretrained/shapes-flow --prompts 16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import weights_digest, write_result  # noqa: E402

from vidgen.demo.prompts import tuning_prompts  # noqa: E402
from vidgen.demo.run import NUM_FRAMES, SIZE  # noqa: E402

THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3)


def replay(residuals: list[torch.Tensor], threshold: float) -> int:
    """Steps the first-block rule skips on this trajectory (the first step is always computed)."""
    skipped, reference = 0, residuals[0]
    for r in residuals[1:]:
        if (r - reference).abs().mean() / reference.abs().mean() < threshold:
            skipped += 1
        else:
            reference = r
    return skipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="pretrained/shapes-flow")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="experiments/results/step_cache_probe_flow.json")
    args = parser.parse_args(argv)
    from vidgen.pipelines import load_pipeline
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        pipe = load_pipeline(args.pipeline, dtype="fp32")
        pipe.set_progress_bar_config(disable=True)
        first = pipe.transformer.backbone.blocks[0]
        depth = len(pipe.transformer.backbone.blocks)
        residuals: list[torch.Tensor] = []
        hook = first.register_forward_hook(lambda m, a, out: residuals.append((out - a[0]).detach().clone()))
        per_video = []
        try:
            for p in tuning_prompts(args.prompts, seed=1):
                residuals.clear()
                pipe(prompt=p.caption, num_frames=NUM_FRAMES, height=SIZE, width=SIZE, output_type="pt",
                     generator=torch.Generator().manual_seed(p.seed))
                per_video.append({t: replay(residuals, t) for t in THRESHOLDS})
                steps = len(residuals)
        finally:
            hook.remove()
    finally:
        torch.set_num_threads(previous)
    rows = []
    for t in THRESHOLDS:
        skipped = sum(v[t] for v in per_video) / len(per_video)
        rows.append({"threshold": t, "skipped_steps_mean": skipped, "computed_steps_mean": steps - skipped,
                     "transformer_speedup_bound": steps / (steps - skipped + skipped / depth)})
        print(f"threshold {t:<5} skips {skipped:5.2f} of {steps} steps: transformer work at most "
              f"{rows[-1]['transformer_speedup_bound']:.2f}x less", flush=True)
    write_result(Path(args.out), {"pipeline": args.pipeline, "weights_sha256": weights_digest(Path(args.pipeline)),
                                  "prompts": args.prompts, "prompt_seed": 1, "model_calls_per_video": steps,
                                  "depth": depth, "sampling": pipe.sampling_config.to_dict(), "rows": rows},
                 command=" ".join(["python", "eval/step_cache_probe.py", *(argv if argv is not None else sys.argv[1:])]),
                 threads=args.threads)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

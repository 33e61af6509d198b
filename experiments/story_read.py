"""The flow story stage's reads by its ship rule (experiments/configs/generators/flow_shapes_story.yaml, fixed
before its first step): a run's checkpoints at multiples of 250 steps from step 500 (and its final/), EMA weights in
fp32, in step order. A checkpoint ships if both hold:

1. the tuning story (``sweep_context.py``'s: a triangle on gray, 8 segments of 24 frames, seeds 100-103; never the
   long-video benchmark's prompts): at least 50 % of segments follow their prompt at context 1 or 2;
2. single clips (``tuning_prompts(192)``, guidance 3, 25 steps, as ``stage7_read.py`` reads them) within 2 points of
   stage 7's shipped read (``stage7_read.json``, step 5000): shape >= 66.2 %, colour+motion >= 96.4 %, turns >= 24.

The clips are read only where the story passes (the rule needs both). The first checkpoint that passes ships and the
reads stop there. The results file is written after every read and keeps rows read on earlier machines (their steps
are not read again): it is the curve.

    HF_HUB_OFFLINE=1 python experiments/story_read.py runs/flow_shapes_story --steps 1000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from results import weights_digest, write_result  # noqa: E402  (first: the start load)
sys.path.insert(0, str(ROOT / "experiments"))
from stage7_read import checkpoints, read_clips  # noqa: E402
from sweep_context import TUNING_BACKGROUND, TUNING_SHAPE, story_row  # noqa: E402

import torch  # noqa: E402

from vidgen.demo.prompts import tuning_prompts  # noqa: E402
from vidgen.demo.story import story_prompts  # noqa: E402
from vidgen.metrics.adherence import AttributeScorer  # noqa: E402

STAGE7 = ROOT / "experiments" / "results" / "stage7_read.json"
STORY = dict(segments=8, frames_per_segment=24, seeds=4, contexts=[1, 2])  # as JSON keeps it
STORY_AT_LEAST, POINTS, TURNS_BELOW = 0.50, 0.02, 2
SAMPLING = dict(guidance_scale=3.0, num_inference_steps=25)
FIRST, EVERY = 500, 250


def stage7() -> dict:
    """Stage 7's shipped read (step 5000) on the same 192 prompts and sampling."""
    row = next(r for r in json.loads(STAGE7.read_text())["rows"] if r["step"] == 5000)
    return {k: row[k] for k in ("shape", "color_motion", "turned", "rotating")}


def needs(ref: dict) -> dict:
    return {"story": STORY_AT_LEAST, "shape": round(ref["shape"] - POINTS, 4),
            "color_motion": round(ref["color_motion"] - POINTS, 4), "turned": ref["turned"] - TURNS_BELOW}


def due(run: Path, steps: list[int] | None = None) -> list[tuple[int, Path]]:
    """(step, folder) of the checkpoints the rule reads (every 250 steps from 500, and final/), in step order; only
    those in ``steps`` where given."""
    return [(s, f) for s, f in checkpoints(run, EVERY) if s >= FIRST and (not steps or s in steps)]


def judge(row: dict, need: dict) -> dict:
    checks = {"story": max(r["color_motion"] for r in row["story"]) >= need["story"]}
    if "shape" in row:
        checks.update(shape=row["shape"] >= need["shape"], color_motion=row["color_motion"] >= need["color_motion"],
                      turns=row["turned"] >= need["turned"])
    return {**checks, "clips_read": "shape" in row, "ships": all(checks.values()) and "shape" in row}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the story run's folder (its checkpoints/ and final/)")
    parser.add_argument("--steps", type=int, nargs="*", help="read only these checkpoints (default: every one due)")
    parser.add_argument("--prompts", type=int, default=192, help="single clips (192 is the rule's)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "story_read_flow.json")
    args = parser.parse_args(argv)
    from vidgen.generators.flow import FlowVideoTransformer
    from vidgen.pipelines import load_pipeline
    from vidgen.training.checkpoint import load_trained
    torch.set_num_threads(args.threads)
    ref = stage7()
    need, scorer = needs(ref), AttributeScorer()
    attributes = story_prompts(STORY["segments"], TUNING_SHAPE, TUNING_BACKGROUND)
    pipe = load_pipeline(ROOT / "pretrained" / "shapes-flow", dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if old and (old.get("story") != STORY or old.get("prompts") != args.prompts):
        raise SystemExit(f"{args.out}: read with another story or prompt count; pass another --out")
    rows = old.get("rows", [])
    payload = {"rule": need, "stage7": ref, "story": STORY, "prompts": args.prompts, "prompt_seed": 1,
               "sampling": SAMPLING, "rows": rows}
    found = due(args.run, args.steps)
    if not found:
        raise SystemExit(f"{args.run}: no checkpoint to read (multiples of {EVERY} from {FIRST}, or final/)")
    for step, folder in found:
        if any(r["verdict"]["ships"] for r in rows):
            print(f"a read ships ({args.out}): nothing more to read")
            break
        if step in {r["step"] for r in rows}:
            print(f"step {step:5d}: read before ({args.out})", flush=True)
            continue
        start = time.perf_counter()
        pipe.register_modules(transformer=load_trained(FlowVideoTransformer, folder))
        row = {"step": step, "folder": str(folder), "weights_sha256": weights_digest(folder),
               "story": [story_row(pipe, "flow", attributes, c, STORY["frames_per_segment"], STORY["seeds"], scorer)
                         for c in STORY["contexts"]]}
        if judge(row, need)["story"]:
            row.update(read_clips(pipe, scorer, tuning_prompts(args.prompts, seed=1), args.batch, SAMPLING))
        row["verdict"], row["seconds"] = judge(row, need), round(time.perf_counter() - start, 1)
        rows.append(row)
        rows.sort(key=lambda r: r["step"])
        write_result(args.out, payload, threads=args.threads, weights=[folder, ROOT / "pretrained" / "shapes-flow"],
                     precision="fp32")
        story = ", ".join(f"context {r['context_frames']} {r['color_motion']:.1%}" for r in row["story"])
        clips = (f"; shape {row['shape']:.1%}, colour+motion {row['color_motion']:.1%}, turns {row['turned']}"
                 if "shape" in row else "; clips not read (the story fails)")
        print(f"step {step:5d}: story {story}{clips}: {'SHIPS' if row['verdict']['ships'] else 'does not ship'}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

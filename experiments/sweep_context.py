"""Choose each pipeline's default ``context_frames`` (latent frames a chunk of a story is given from before it) on a
tuning story that the evaluation never uses: a triangle on a gray background (``eval/long_video.py`` and the demo use a
square on black), cycling colour and motion over seen pairs. ``--background black`` reads the triangle on the
benchmark's background (refused for its square).

For each setting: colour+motion per segment (the scorer on each segment's last 17 frames), mean flicker (|frame
change|) and seconds per frame. More context keeps more of the past exactly but leaves fewer new latent frames per
chunk (slower); the shipped folder's ``sampling_config.json`` records the choice (``context_frames``), its model
card names the results file.

    python experiments/sweep_context.py masked flow --context 1 2 3 --segments 12
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from results import write_result  # noqa: E402

from vidgen.demo.story import STORY_BACKGROUND, STORY_SHAPE, run_story, story_prompts  # noqa: E402
from vidgen.metrics.adherence import AttributeScorer  # noqa: E402
from vidgen.pipelines import load_pipeline  # noqa: E402
from vidgen.pipelines.registry import shipped_folder  # noqa: E402

TUNING_SHAPE, TUNING_BACKGROUND = "triangle", "gray"


def story_row(pipe, name: str, attributes: list, context: int, frames_per_segment: int, seeds: int, scorer) -> dict:
    """One setting's read: ``seeds`` stories of ``attributes`` (seeds 100, 101, ...) at ``context`` frames, the share
    of segments whose colour and motion follow their prompt, mean flicker and seconds per frame made."""
    segments, start = [], time.perf_counter()
    for seed in range(100, 100 + seeds):
        segments += list(run_story(pipe, attributes, frames_per_segment, len(attributes) * frames_per_segment, seed,
                                   scorer=scorer, context_frames=context))
    seconds = time.perf_counter() - start
    return {"pipeline": name, "context_frames": context, "segments": len(segments),
            "color_motion": sum(s.color_motion for s in segments) / len(segments),
            "flicker": sum(s.flicker for s in segments) / len(segments),
            "seconds_per_frame": seconds / (seeds * len(attributes) * frames_per_segment)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipelines", nargs="+")
    parser.add_argument("--context", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--frames-per-segment", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=2, help="stories per setting (seeds 100, 101, ...)")
    parser.add_argument("--shape", default=TUNING_SHAPE)
    parser.add_argument("--background", default=TUNING_BACKGROUND,
                        help="black reads the story on the benchmark's background with another shape")
    parser.add_argument("--pretrained", default=str(ROOT / "pretrained"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "sweep_context.json"))
    args = parser.parse_args(argv)
    if (args.shape, args.background) == (STORY_SHAPE, STORY_BACKGROUND):
        parser.error(f"a {STORY_SHAPE} on {STORY_BACKGROUND} is the long-video benchmark's story (eval/long_video.py, "
                     "make demo): tune on another shape or background")
    torch.set_num_threads(args.threads)
    attributes = story_prompts(args.segments, args.shape, args.background)
    scorer, rows, folders, precisions = AttributeScorer(), [], [], set()
    for name in args.pipelines:
        folders.append(shipped_folder(name, args.pretrained))
        pipe = load_pipeline(folders[-1])
        precisions.add(pipe.precision)
        pipe.set_progress_bar_config(disable=True)
        for context in args.context:
            if not 0 <= context < pipe.window:
                continue
            row = story_row(pipe, name, attributes, context, args.frames_per_segment, args.seeds, scorer)
            rows.append(row)
            print(f"{name:15s} context {context}: colour+motion {row['color_motion']:.1%}, flicker "
                  f"{row['flicker']:.4f}, {1000 * row['seconds_per_frame']:.0f} ms/frame", flush=True)
    write_result(args.out, {"story": {"shape": args.shape, "background": args.background,
                                      "segments": args.segments, "frames_per_segment": args.frames_per_segment,
                                      "seeds": args.seeds}, "rows": rows}, threads=args.threads,
                 weights=folders, precision=", ".join(sorted(precisions)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

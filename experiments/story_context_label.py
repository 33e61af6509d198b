#!/usr/bin/env python
"""Which ``context_frames`` did the evaluation's stories run with? A check of a mislabelled record.

``vidgen/demo/run.py`` and ``eval/long_video.py`` recorded ``pipe.context_frames`` (the class default) beside each
story, while the stories ran with ``pipe.story_context`` (the folder's ``sampling_config.json`` value, since
2026-11-27). This reruns each pipeline's story of ``docs/results/demo_full.json`` (same prompts, seed, size, threads
and precision) with each candidate value passed explicitly and compares the per-segment detections and flicker with
the recorded ones, so the corrected label rests on a measurement.

    python experiments/story_context_label.py --out experiments/results/story_context_label.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from results import write_result  # noqa: E402

from vidgen.demo.run import STORY_FRAMES_PER_SEGMENT, load_pipelines  # noqa: E402
from vidgen.demo.story import run_story, story_prompts  # noqa: E402
from vidgen.metrics.adherence import AttributeScorer  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "demo_full.json")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    recorded = json.loads(args.results.read_text())
    torch.set_num_threads(recorded["machine"]["threads"])
    seed, scorer, rows = recorded["settings"]["seed"], AttributeScorer(), {}
    for name, story in recorded["stories"].items():
        pipe = load_pipelines(ROOT / "pretrained", [name], recorded["machine"]["precision"][name])[name]
        pipe.set_progress_bar_config(disable=True)
        segments = len(story["segments"])
        want = [(s["detected"], round(s["flicker"], 9)) for s in story["segments"]]
        folder, default = pipe.sampling_config.context_frames, type(pipe).sampling_config_class().context_frames
        row = {"recorded_label": story["context_frames"], "folder": folder, "class": default}
        for value in sorted({folder, default}):
            got = [(s.detected, round(s.flicker, 9)) for s in run_story(
                pipe, story_prompts(segments), STORY_FRAMES_PER_SEGMENT, segments * STORY_FRAMES_PER_SEGMENT, seed,
                recorded["settings"]["size"], scorer=scorer, context_frames=value)]
            row[f"context_{value}_reproduces_the_record"] = got == want
        rows[name] = row
        print(name, row, flush=True)
    write_result(args.out, {"source": str(args.results.relative_to(ROOT)), "pipelines": rows},
                 threads=recorded["machine"]["threads"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

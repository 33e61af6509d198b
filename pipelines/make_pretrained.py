#!/usr/bin/env python
"""Build every shipped model in ``pretrained/`` from its recipe in ``configs/`` (``make pretrained``).

    python pipelines/make_pretrained.py                     # train (resumable) -> assemble -> evaluate -> model cards
    python pipelines/make_pretrained.py --stage assemble     # only re-assemble from runs/ and rewrite the cards
    python pipelines/make_pretrained.py --stage cards        # only rewrite the cards (needs no runs/)
    python pipelines/make_pretrained.py --stage evaluate --pipelines flow-distilled   # one pipeline, merged in
    python pipelines/make_pretrained.py --candidate flow=experiments/configs/generators/flow_shapes_fg.yaml --out /tmp/t

Stages:

1. ``train`` and 2. ``assemble``: ``pretrained_build.py`` (the recipes, ``configs/<artifact>/stageN.yaml``, are read
   by ``pretrained_recipes.py``; a run is finished when its trainer has written its ``complete`` marker).
3. ``evaluate``: ``python -m vidgen.demo --full`` on the assembled pipelines; its ``metrics.json``, with every
   video's expected and detected attributes (not the MP4 paths), goes to ``docs/results/demo_full.json``.
4. ``cards``: a model card (``README.md``) per folder, ``pretrained_cards.py`` from ``templates/model_card.md``, the
   recipes, the run summaries (``pipelines/training_runs.json``, kept in git because runs/ is not) and the results
   files.

A from-scratch ``make pretrained`` records its wall time in ``docs/results/make_pretrained.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
for _folder in ("eval", "pipelines"):  # eval/results.py; the modules below
    if str(ROOT / _folder) not in sys.path:
        sys.path.insert(0, str(ROOT / _folder))

import pretrained_build as build  # noqa: E402
import pretrained_cards as cards  # noqa: E402
import pretrained_recipes as recipes  # noqa: E402
from results import write_result  # noqa: E402

WALL_TIME = ROOT / "docs" / "results" / "make_pretrained.json"  # the last from-scratch rebuild's wall time
RUN_STARTED_DONE: list[str] = []  # runs already finished when this invocation started


def evaluation_record(metrics: dict) -> str:
    """The full evaluation's ``metrics.json`` as the results file keeps it: everything but the paths of the MP4s
    (``outputs/`` is not committed), with every video's prompt, expected and detected attributes, one line per video,
    so any error breakdown quoted from it can be recounted (``tests/scripts/test_recipes.py`` recounts the adherence)."""
    videos = [{k: v for k, v in video.items() if k != "files"} for video in metrics.get("videos", [])]
    rest = json.dumps({k: v for k, v in metrics.items() if k != "videos"}, indent=2)
    lines = ",\n    ".join(json.dumps(v, separators=(", ", ": ")) for v in videos)
    return rest[:-2] + f',\n  "videos": [\n    {lines}\n  ]\n}}\n'


def evaluate(out: Path, names: list[str] | None = None) -> None:
    """The full evaluation of every pipeline into ``docs/results/demo_full.json``; with ``names``, of those only,
    merged into the existing file (:func:`merge_evaluation`)."""
    eval_dir = ROOT / "outputs" / "pretrained-eval"
    subprocess.run([sys.executable, "-m", "vidgen.demo", "--full", "--pretrained", str(out), "--out", str(eval_dir),
                    *(["--pipelines", *names] if names else [])], cwd=ROOT, check=True)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    if names:
        metrics = merge_evaluation(json.loads(recipes.RESULTS.read_text()), metrics)
    recipes.RESULTS.parent.mkdir(parents=True, exist_ok=True)
    recipes.RESULTS.write_text(evaluation_record(metrics))
    print(f"  results: {recipes.RESULTS.relative_to(ROOT)}", flush=True)


def merge_evaluation(record: dict, new: dict) -> dict:
    """``record`` (the committed full evaluation) with ``new``'s pipelines added or replaced: their entries, stories
    and per-video detections. The prompts must be the same ones; each merged entry keeps the ``created``, command and
    machine of the run that measured it (``evaluated_by``)."""
    if [v["prompt"] for v in record["videos"]] != [v["prompt"] for v in new["videos"]]:
        raise recipes.fail("the new evaluation's prompts differ from docs/results/demo_full.json's; evaluate every "
                           "pipeline (no --pipelines)")
    merged = json.loads(json.dumps(record))
    run = {k: new[k] for k in ("created", "command", "machine")}
    for name, entry in new["pipelines"].items():
        merged["pipelines"][name] = {**entry, "evaluated_by": run}
        if name in new.get("stories", {}):
            merged.setdefault("stories", {})[name] = new["stories"][name]
        for mine, theirs in zip(merged["videos"], new["videos"]):
            mine["detected"][name] = theirs["detected"][name]
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["all", "train", "assemble", "evaluate", "cards"], default="all")
    parser.add_argument("--out", default=str(ROOT / "pretrained"))
    parser.add_argument("--jobs", type=int, default=3, help="generator trainings at a time (1 thread each)")
    parser.add_argument("--candidate", metavar="NAME=CONFIG", help="assemble only pipeline NAME from CONFIG's run "
                        "into --out (not pretrained/), to compare it with the shipped one")
    parser.add_argument("--weights", help="with --candidate: a checkpoints/step_* folder of that run (EMA weights) "
                        "instead of its final/")
    parser.add_argument("--pipelines", nargs="+", choices=sorted(recipes.GENERATORS), help="with --stage assemble or "
                        "evaluate: only these pipelines (the other folders, the general tokenizers and the other "
                        "pipelines' results stay as they are)")
    args = parser.parse_args(argv)
    out, start = Path(args.out).resolve(), time.time()
    if args.weights and not args.candidate:
        parser.error("--weights goes with --candidate")
    if args.pipelines and args.stage not in ("assemble", "evaluate"):
        parser.error("--pipelines goes with --stage assemble or --stage evaluate")
    if args.candidate:
        build.assemble_candidate(args.candidate, out, args.weights)
        return 0
    RUN_STARTED_DONE.extend(str(recipes.run_dir(c).relative_to(ROOT))
                            for a in recipes.ALL_ARTIFACTS for c in recipes.stages(a) if recipes.done(c))
    if args.stage in ("all", "train"):
        build.train(args.jobs)
    if args.stage in ("all", "assemble"):
        build.assemble(out, args.pipelines, stages_of=cards.recipe_stages)
    if args.stage in ("all", "evaluate"):
        evaluate(out, args.pipelines)
    if args.stage in ("all", "assemble", "cards"):
        cards.write_cards(out)
    minutes = (time.time() - start) / 60
    print(f"make_pretrained: done in {minutes:.1f} min", flush=True)
    if args.stage == "all" and out == (ROOT / "pretrained").resolve():
        record_wall_time(minutes, args.jobs)
    return 0


def record_wall_time(minutes: float, jobs: int) -> None:
    """Write this rebuild's wall time (train + assemble + evaluate + cards) with the machine it ran on. A resumed
    rebuild (runs already finished) records only what it ran, and says so."""
    write_result(WALL_TIME, {"wall_time_min": minutes, "jobs": jobs, "from_scratch": not RUN_STARTED_DONE,
                             "already_finished_at_start": RUN_STARTED_DONE})


if __name__ == "__main__":
    sys.exit(main())

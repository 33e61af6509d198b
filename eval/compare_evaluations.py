#!/usr/bin/env python
"""Compare two full evaluations (``python -m vidgen.demo --full --out DIR``) of the same prompts and seeds.

    python eval/compare_evaluations.py outputs/eval-before outputs/eval-after --out docs/results/refactor_parity.json

For each pipeline: whether the adherence results and FVD are equal, the sampling settings each run used, how many
of the written MP4s are byte-identical, and whether its story's MP4 is. A change meant to leave behaviour alone (a refactor) must give 0 different
videos; a retrain reports its before / after numbers side by side.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare(before: Path, after: Path) -> dict:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (before, after))
    if [v["prompt"] for v in ma["videos"]] != [v["prompt"] for v in mb["videos"]]:
        raise SystemExit("compare_evaluations: the two runs used different prompts; rerun with the same --seed / --full")
    out = {"before": str(before), "after": str(after), "precision": [ma["machine"]["precision"],
                                                                      mb["machine"]["precision"]], "pipelines": {}}
    for name in ma["pipelines"].keys() & mb["pipelines"].keys():
        pa, pb = ma["pipelines"][name], mb["pipelines"][name]
        same = sum(_digest(before / va["files"][name]) == _digest(after / vb["files"][name])
                   for va, vb in zip(ma["videos"], mb["videos"]))
        out["pipelines"][name] = {
            "adherence_equal": pa["adherence"] == pb["adherence"],
            "colour_motion_seen": [pa["adherence"]["seen"]["color_motion"], pb["adherence"]["seen"]["color_motion"]],
            "colour_motion_held_out": [pa["adherence"]["held_out"]["color_motion"],
                                       pb["adherence"]["held_out"]["color_motion"]],
            "shape": [pa["adherence"]["all"]["shape"], pb["adherence"]["all"]["shape"]],
            "fvd": [pa.get("fvd", {}).get("value"), pb.get("fvd", {}).get("value")],
            "sampling": [pa["sampling"], pb["sampling"]],
            "videos_identical": same, "videos_different": len(ma["videos"]) - same}
        sa, sb = ma.get("stories", {}).get(name), mb.get("stories", {}).get(name)
        if sa and sb:  # the long story of each pipeline, written as one MP4
            out["pipelines"][name]["story_identical"] = _digest(before / sa["file"]) == _digest(after / sb["file"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, help="write the comparison here as JSON")
    args = parser.parse_args(argv)
    result = compare(args.before, args.after)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

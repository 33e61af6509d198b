#!/usr/bin/env python
"""The error breakdown of the full evaluation, recounted from each video's prompt and detected attributes in
``docs/results/demo_full.json`` (``python -m vidgen.demo --full`` writes it); ``eval/readme_tables.py`` renders it
into docs/results.md, so the breakdown cannot drift from the file.

    python eval/demo_errors.py [docs/results/demo_full.json]   # print the table
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _misses(videos: list, name: str, held_out: bool) -> list:
    """The videos of one pair kind whose detected colour or motion is not the prompt's."""
    return [v for v in videos if v["held_out"] == held_out
            and (v["detected"][name]["color"] != v["color"] or v["detected"][name]["motion"] != v["motion"])]


def _count(videos: list, name: str, asked: str, drawn) -> int:
    return sum(v["motion"] == asked and drawn(v["detected"][name]["motion"]) for v in videos)


def _shape_misses(videos: list, name: str) -> str:
    """Per asked shape, most missed first: "hexagon 21 of 32 (12 star, 7 circle)"."""
    asked = Counter(v["shape"] for v in videos)
    wrong: dict = {}
    for v in videos:
        read = v["detected"][name]["shape"]
        if read != v["shape"]:
            wrong.setdefault(v["shape"], Counter())[read] += 1
    parts = []
    for shape, reads in sorted(wrong.items(), key=lambda item: (-sum(item[1].values()), item[0])):
        top = ", ".join(f"{n} {read}" for read, n in reads.most_common(2))
        parts.append(f"{shape} {sum(reads.values())} of {asked[shape]} ({top})")
    return "; ".join(parts) or "no misses"


def readme_table(results: dict) -> str:
    """Per pipeline: colour+motion misses on seen / held-out pairs, how many of them are a rotating prompt drawn
    standing still and a still prompt drawn moving, the shapes the scorer reads, and the shape misses by asked shape."""
    videos = results["videos"]
    lines = ["| pipeline | colour+motion misses, seen / held-out | of them: rotating drawn still, seen / held-out | "
             "still drawn moving, seen / held-out | shapes as read (of {n}) | shape misses by asked shape |"
             .format(n=len(videos)), "|---|---|---|---|---|---|"]
    for name in results["pipelines"]:
        seen, held = _misses(videos, name, False), _misses(videos, name, True)
        still = [_count(m, name, "rotate", lambda d: d == "still") for m in (seen, held)]
        moving = [_count(m, name, "still", lambda d: d != "still") for m in (seen, held)]
        shapes = Counter(v["detected"][name]["shape"] for v in videos)
        read = ", ".join(f"{shape} {n}" for shape, n in shapes.most_common())
        lines.append(f"| {name} | {len(seen)} / {len(held)} | {still[0]} / {still[1]} | {moving[0]} / {moving[1]} | "
                     f"{read} | {_shape_misses(videos, name)} |")
    lines += ["", f"Recounted from each video's prompt and detected attributes in `docs/results/demo_full.json` "
              f"(`python eval/demo_errors.py`); each pair kind has {len(videos) // 2} prompts. Shape \"none\": no object "
              f"found; \"unknown\": an object whose outline the scorer cannot name."]
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "results" / "demo_full.json"
    print(readme_table(json.loads(path.read_text())))

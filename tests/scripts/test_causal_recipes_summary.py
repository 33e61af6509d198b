"""experiments/causal_recipes_summary.py: the shortfall names the best read of each clause and how far it is from the
rule, and the committed summary follows the committed reads it is derived from."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("experiments/causal_recipes_summary.py")


def _row(name: str, streams: int, stories: int, kept: dict) -> dict:
    by_motion = {m: [] for m in ("left", "right", "up", "down", "shrink", "rotate", "still")} | kept
    return {"file": name, "gated_streams_passing": streams, "gated_streams": 24, "stories_passing": stories,
            "stories": 40, "seeds_passing_by_motion": by_motion}


def test_each_clause_reads_its_best_recipe_and_the_motions_no_recipe_keeps(script):
    rows = [_row("a", 9, 3, {"rotate": [0, 1], "still": [0], "shrink": [2]}),
            _row("b", 4, 19, {"right": [1], "still": [0, 1, 2, 3]})]
    out = script.shortfall(rows)
    assert (out["streams"]["best"], out["streams"]["short_by"], out["streams"]["best_file"]) == (9, 15, "a")
    assert (out["stories"]["best"], out["stories"]["short_by"], out["stories"]["best_file"]) == (19, 21, "b")
    assert out["streams"]["motions_no_recipe_keeps"] == ["down", "left", "up"]  # shrink is not gated
    assert out["colour_motion_seen"]["short_by_points"] > 0 and len(out["why"]) == 4


def test_the_committed_summary_follows_the_committed_reads(script):
    committed = json.loads((ROOT / "experiments/results/causal_recipes_summary.json").read_text())
    rows = [r for p in sorted(script.RESULTS.glob("causal_ship_rule_*.json")) if (r := script.row(p)) is not None]
    assert committed["rows"] == rows, "run python experiments/causal_recipes_summary.py"
    assert committed["shortfall"] == json.loads(json.dumps(script.shortfall(rows))), \
        "run python experiments/causal_recipes_summary.py"

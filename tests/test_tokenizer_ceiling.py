"""eval/tokenizer_ceiling.py on the demo's prompts: real clips score right, groups split seen / held-out, and each
shipped tokenizer's round trip is scored on the same clips."""
from __future__ import annotations

import json


def test_ceiling_on_demo_prompts_scores_real_clips_and_round_trips_per_group(load_script, tmp_path):
    ceiling = load_script("eval/tokenizer_ceiling.py")
    out = tmp_path / "ceiling.json"
    assert ceiling.main(["--demo-prompts", "6", "--prompt-seed", "1", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["clips"] == 6 and "seed 1 (not the evaluation set)" in result["split"]
    rows = result["rows"]
    assert set(rows) == {"real clips", "fsq (masked, autoregressive)", "vae (flow)"}
    real = rows["real clips"]
    assert real["seen"]["n"] == 3 and real["held_out"]["n"] == 3 and real["n"] == 6
    assert real["color_motion"] == 1.0 and real["motion_confusions"] == {}  # the scorer reads real clips right
    assert real["seen"]["turns_kept_by_shape"], "the 6 tuning prompts hold a rotating one"
    for group in ("seen", "held_out"):  # every rotating real clip turns: "k/k" per shape
        assert all(a == b for a, b in (v.split("/") for v in real[group]["turns_kept_by_shape"].values()))
    for row in rows.values():
        # a group's fraction is its own count over its own clips; all clips = the two groups together
        right = row["seen"]["color_motion"] * 3 + row["held_out"]["color_motion"] * 3
        assert round(row["color_motion"] * 6) == round(right)

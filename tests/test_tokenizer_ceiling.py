"""eval/tokenizer_ceiling.py: on tuning prompts (what a tokenizer is chosen on: seen pairs only, no caption of the
evaluation set) real clips score right and each shipped tokenizer's round trip is scored on the same clips; on the
evaluation prompts the groups split seen / held-out."""
from __future__ import annotations

import json

import pytest


def test_ceiling_on_tuning_prompts_scores_real_clips_and_round_trips(load_script, tmp_path):
    ceiling = load_script("eval/tokenizer_ceiling.py")
    out = tmp_path / "ceiling.json"
    assert ceiling.main(["--tuning-prompts", "6", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["clips"] == 6 and "6 tuning prompts" in result["split"]
    rows = result["rows"]
    assert set(rows) == {"real clips", "fsq (masked, autoregressive)", "vae (flow)"}
    real = rows["real clips"]
    assert real["seen"]["n"] == 6 and "held_out" not in real  # tuning never scores a held-out pair
    assert real["color_motion"] == 1.0 and real["motion_confusions"] == {}  # the scorer reads real clips right
    assert real["shape"] == 1.0 and real["shape_confusions"] == {}
    for row in rows.values():
        assert row["seen"]["color_motion"] == row["color_motion"]


def test_ceiling_on_evaluation_prompts_splits_seen_and_held_out(load_script, tmp_path, monkeypatch):
    ceiling = load_script("eval/tokenizer_ceiling.py")
    monkeypatch.setattr(ceiling, "EVALUATION_PROMPTS", 4)  # the evaluation set's first prompts of each group
    out = tmp_path / "ceiling.json"
    assert ceiling.main(["--evaluation-prompts", "--pretrained", "", "--threads", "1", "--out", str(out)]) == 0
    real = json.loads(out.read_text())["rows"]["real clips"]
    assert real["seen"]["n"] == 2 and real["held_out"]["n"] == 2 and real["color_motion"] == 1.0


def test_tuning_and_evaluation_prompts_are_exclusive(load_script, tmp_path):
    with pytest.raises(SystemExit):
        load_script("eval/tokenizer_ceiling.py").main(["--tuning-prompts", "4", "--evaluation-prompts"])

"""eval/tokenizer_ceiling.py: on tuning prompts (what a tokenizer is chosen on: seen pairs only, no caption of the
evaluation set) real clips score right and each shipped tokenizer's round trip is scored on the same clips; on the
evaluation prompts the groups split seen / held-out."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from vidgen.data.shapes import HELD_OUT_PAIRS
from vidgen.demo.prompts import EVALUATION_PROMPTS, demo_prompts


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


def _scored_prompts(ceiling, monkeypatch, evaluation_prompts: bool = False, tuning_prompts: int = 0) -> list:
    """The prompts whose real clips eval/tokenizer_ceiling.py scores for these options (clips are not rendered)."""
    seen = []
    monkeypatch.setattr(ceiling, "real_clip", lambda prompt, *a, **k: seen.append(prompt) or torch.zeros(3, 1, 2, 2))
    ceiling.real_clips(argparse.Namespace(evaluation_prompts=evaluation_prompts, tuning_prompts=tuning_prompts,
                                          clips=0))
    return seen


def _shared(tuning: list, evaluation: list) -> set:
    """What a tuning set shares with the evaluation: captions, held-out prompts, held-out colour x motion pairs."""
    pairs = {(p.attributes.color, p.attributes.motion) for p in tuning}
    return ({p.caption for p in tuning} & {p.caption for p in evaluation}) | {p.caption for p in tuning if p.held_out} \
        | {f"pair {c}+{m}" for c, m in pairs & set(HELD_OUT_PAIRS)}


def test_tuning_and_evaluation_prompts_are_exclusive(load_script, monkeypatch, capsys, tmp_path):
    """The clips scored with --tuning-prompts (what a tokenizer is chosen on, as many as the sweeps use) share no
    caption, held-out prompt or held-out pair with the clips scored with --evaluation-prompts, and asking for both
    at once is refused by name."""
    ceiling = load_script("eval/tokenizer_ceiling.py")
    evaluation = _scored_prompts(ceiling, monkeypatch, evaluation_prompts=True)
    tuning = _scored_prompts(ceiling, monkeypatch, tuning_prompts=192)
    assert len(evaluation) == EVALUATION_PROMPTS and len(tuning) == 192
    assert _shared(tuning, evaluation) == set()
    assert _shared(demo_prompts(192, seed=1), evaluation)  # the check finds the overlap of a set that has one
    with pytest.raises(SystemExit):
        ceiling.main(["--tuning-prompts", "4", "--evaluation-prompts", "--pretrained", "", "--out",
                      str(tmp_path / "both.json")])
    assert "not allowed with argument" in capsys.readouterr().err

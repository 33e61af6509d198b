"""experiments/caption_probe.py: caption variants name every class once, and the probe runs on the shipped flow model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vidgen.data.shapes import MOTIONS, SHAPES, ShapeAttributes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def probe(load_script):
    return load_script("experiments/caption_probe.py")


def test_variants_rewrite_only_the_probed_word(probe):
    clip = ShapeAttributes("square", "orange", "rotate", "gray")
    names, captions = probe.variants(clip, "motion")
    assert names == list(MOTIONS) and len(set(captions)) == len(MOTIONS)
    assert captions[names.index("rotate")] == clip.caption == "an orange square rotating on a gray background"
    assert captions[names.index("still")] == "an orange square standing still on a gray background"
    names, captions = probe.variants(clip, "shape")
    assert "circle" not in names and names == [s for s in SHAPES if s != "circle"]  # no rotating circles exist
    assert captions[names.index("star")] == "an orange star rotating on a gray background"


def test_probe_runs_on_the_shipped_flow_model(probe, tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / "probe.json"
    try:
        assert probe.main(["--pretrained", str(ROOT / "pretrained"), "--attribute", "shape", "--clips-per-class", "1",
                           "--levels", "0.3", "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert sum(sum(row.values()) for row in result["confusion"].values()) == len(SHAPES)  # one clip per class
    assert set(result["accuracy"]) == set(SHAPES) and result["levels"] == [0.3]
    assert all(len(gaps) == 1 for gaps in result["relative_gap_by_level"].values())


def test_bad_levels_are_refused(probe):
    with pytest.raises(SystemExit):
        probe.main(["--levels", "0.5,1.5"])

"""experiments/stage7_read.py: the checkpoints it reads, in order, and its ship rule against stage 6's read."""
from __future__ import annotations

import json


def _folder(path, step=None):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")


def test_it_reads_every_thousandth_checkpoint_and_the_final_in_step_order(load_script, tmp_path):
    read = load_script("experiments/stage7_read.py")
    for step in (250, 1000, 1750, 2000, 3000):
        _folder(tmp_path / "checkpoints" / f"step_{step:08d}")
    assert [s for s, _ in read.checkpoints(tmp_path, 1000)] == [1000, 2000, 3000]
    _folder(tmp_path / "final")
    (tmp_path / "status.json").write_text(json.dumps({"state": "complete", "step": 3000}))
    found = read.checkpoints(tmp_path, 1000)
    assert [s for s, _ in found] == [1000, 2000, 3000] and found[-1][1].name == "final"  # final replaces step 3000


def test_the_rule_needs_shape_colour_motion_and_turns(load_script):
    read = load_script("experiments/stage7_read.py")
    ref = read.reference()  # stage 6's committed read: 95.8 % colour+motion, 35.9 % shape, 20 of 26 turns
    assert (round(ref["color_motion"], 3), round(ref["shape"], 3), ref["turned"], ref["rotating"]) == \
        (0.958, 0.359, 20, 26)
    good = {"shape": 0.60, "color_motion": ref["color_motion"] - 0.019, "turned": 20}
    assert read.judge(good, ref)["ships"]
    for change in ({"shape": 0.59}, {"color_motion": ref["color_motion"] - 0.021}, {"turned": 19}):
        assert not read.judge({**good, **change}, ref)["ships"], change


def test_earlier_reads_are_kept_and_other_settings_refused(load_script, tmp_path):
    import pytest
    read = load_script("experiments/stage7_read.py")
    out, sampling = tmp_path / "read.json", {"guidance_scale": 3.0, "num_inference_steps": 25}
    assert read.earlier_rows(out, 192, sampling) == []
    out.write_text(json.dumps({"prompts": 192, "sampling": sampling, "rows": [{"step": 1000, "shape": 0.2}]}))
    assert read.earlier_rows(out, 192, sampling) == [{"step": 1000, "shape": 0.2}]
    with pytest.raises(SystemExit, match="other prompts or sampling"):
        read.earlier_rows(out, 64, sampling)


def test_plot_only_draws_the_curve_beside_the_file(load_script, tmp_path):
    read = load_script("experiments/stage7_read.py")
    out = tmp_path / "read.json"
    rows = [{"step": 1000, "shape": 0.24, "color_motion": 0.89, "turned": 5},
            {"step": 2000, "shape": 0.44, "color_motion": 0.97, "turned": 21}]
    out.write_text(json.dumps({"rows": rows}))
    assert read.main(["--plot-only", "--out", str(out)]) == 0
    png = tmp_path / "read.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_shapes_read_counts_each_asked_shape_and_what_it_was_read_as(load_script):
    from vidgen.demo.prompts import tuning_prompts
    read = load_script("experiments/stage7_read.py")
    prompts = tuning_prompts(24, seed=1)
    wrong = "hexagon" if prompts[0].attributes.shape != "hexagon" else "circle"
    detected = [{"shape": wrong if i == 0 else p.attributes.shape} for i, p in enumerate(prompts)]
    got = read.shapes_read(detected, prompts)
    first = prompts[0].attributes.shape
    asked = sum(p.attributes.shape == first for p in prompts)
    assert got[first] == {"right": f"{asked - 1}/{asked}", "read_as": {wrong: 1}}
    assert sum(int(v["right"].split("/")[1]) for v in got.values()) == 24
    assert all(v["read_as"] == {} for k, v in got.items() if k != first)


def test_best_read_names_the_highest_shape_and_how_far_each_check_is(load_script):
    read = load_script("experiments/stage7_read.py")
    ref = {"color_motion": 0.958, "shape": 0.359, "turned": 20, "rotating": 26}
    rows = [{"step": 3000, "shape": 0.542, "color_motion": 0.974, "turned": 22},
            {"step": 4000, "shape": 0.536, "color_motion": 0.90, "turned": 18}]
    best = read.best_read(rows, ref)
    assert (best["step"], best["ships"]) == (3000, False)
    assert best["short_by"] == {"shape_points": 5.8, "color_motion_points": 0.0, "turns": 0}
    rows[1]["shape"] = 0.542  # a tie goes to the later read, whose other checks fall short too
    assert read.best_read(rows, ref)["short_by"] == {"shape_points": 5.8, "color_motion_points": 3.8, "turns": 2}
    assert read.best_read([], ref) is None

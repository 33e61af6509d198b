"""experiments/student_read.py: a student's reads judged by the distillation ship rule, in step order."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TEACHER = {"name": "teacher", "steps": 25, "color_motion": 0.96, "shape": 0.50, "speedup_batch_1": 1.0,
           "weights_sha256": "t", "turns": {"n": 26, "turned": 26}}


def _student(k, color_motion, shape, speedup, name="dmd2"):
    return {"name": name, "steps": k, "color_motion": color_motion, "shape": shape, "speedup_batch_1": speedup,
            "weights_sha256": "s", "turns": {"n": 26, "turned": 20}}


def _read(path, *students, prompts=192):
    path.write_text(json.dumps({"commit": "c", "precision": "fp32", "prompts": prompts, "prompt_seed": 1,
                                "rows": [TEACHER, *students]}))
    return path


def test_each_check_is_met_at_two_points_and_the_speed_at_ten_times(load_script):
    read = load_script("experiments/student_read.py")
    assert read.judge(_student(4, 0.94, 0.48, 10.0), TEACHER)["passes"]
    for changed, check in (((0.939, 0.48, 10.0), "color_motion"), ((0.94, 0.479, 10.0), "shape"),
                           ((0.94, 0.48, 9.9), "speed")):
        verdict = read.judge(_student(4, *changed), TEACHER)
        assert not verdict["passes"] and not verdict["checks"][check], (changed, verdict)
        assert verdict["short_by"][{"speed": "speedup"}.get(check, f"{check}_points")] > 0


def test_a_read_ships_at_its_smallest_passing_k_and_the_closest_is_reported(load_script, tmp_path):
    read = load_script("experiments/student_read.py")
    first = _read(tmp_path / "a.json", _student(1, 0.80, 0.30, 30), _student(4, 0.93, 0.45, 12))
    second = _read(tmp_path / "b.json", _student(1, 0.85, 0.35, 30), _student(2, 0.95, 0.49, 20),
                   _student(4, 0.96, 0.50, 9))  # k=4 meets colour and shape but not the speed
    rows = [read.read_row(1000, first, "dmd2"), read.read_row(1900, second, "dmd2")]
    assert [r["ships_at_k"] for r in rows] == [None, 2]
    assert read.closest(rows)["step"] == 1900 and read.closest(rows)["steps"] == 2
    assert read.closest(rows[:1]) == {"step": 1000, "steps": 4, "passes": False,
                                      "short_by": {"speedup": 0.0, "color_motion_points": 1.0, "shape_points": 3.0}}


def test_main_writes_the_curve_and_refuses_reads_on_other_prompts(load_script, tmp_path):
    read = load_script("experiments/student_read.py")
    a = _read(tmp_path / "a.json", _student(4, 0.93, 0.45, 12))
    b = _read(tmp_path / "b.json", _student(4, 0.95, 0.49, 12))
    out = tmp_path / "curve.json"
    assert read.main([f"1900={b}", f"1000={a}", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [r["step"] for r in record["rows"]] == [1000, 1900] and record["ships"] == {"step": 1900, "steps": 4}
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = _read(tmp_path / "c.json", _student(4, 0.95, 0.49, 12), prompts=64)
    with pytest.raises(SystemExit, match="different prompts"):
        read.main([f"1000={a}", f"1900={other}", "--out", str(out)])
    with pytest.raises(SystemExit, match="rows named 'dmd2_ema'"):
        read.main([f"1000={a}", "--student", "dmd2_ema", "--out", str(out)])
    with pytest.raises(SystemExit):  # argparse's error: not STEP=FILE
        read.main([str(a), "--out", str(out)])


def test_the_stage8_step1000_read_misses_by_what_the_log_says(load_script):
    read = load_script("experiments/student_read.py")
    row = read.read_row(1000, ROOT / "experiments/results/distill_tuning_dmd2_stage8_step1000_192.json", "dmd2")
    assert row["ships_at_k"] is None
    assert read.closest([row]) == {"step": 1000, "steps": 4, "passes": False,
                                   "short_by": {"speedup": 0.0, "color_motion_points": 0.6, "shape_points": 4.25}}


def test_the_stage8_step1900_read_says_which_shape_it_loses(load_script):
    """The last read of dmd2_stage8: the closest k is 4, short on shape, and the shape it loses most is the star,
    read as a hexagon more often than the teacher's stars are."""
    read = load_script("experiments/student_read.py")
    row = read.read_row(1900, ROOT / "experiments/results/distill_tuning_dmd2_stage8_step1900_192.json", "dmd2")
    best = read.closest([row])
    assert (best["steps"], best["passes"], best["short_by"]["shape_points"]) == (4, False, 2.69)
    shapes = best["shapes_against_teacher"]
    assert next(iter(shapes)) == "star" and shapes["star"]["difference"] == -8
    assert shapes["star"]["read_as_more_than_teacher"] == {"hexagon": 9, "triangle": 2}
    four = next(k for k in row["k"] if k["steps"] == 4)  # the differences add up to the shape read's
    assert sum(s["difference"] for s in shapes.values()) == round(192 * (four["shape"] - row["teacher"]["shape"]))


def test_no_shape_breakdown_without_per_shape_reads(load_script):
    read = load_script("experiments/student_read.py")
    assert read.shapes_against_teacher({"shape": 0.5}, {"shape": 0.6}) is None


@pytest.mark.usefixtures("one_thread")
def test_a_distill_tuning_read_of_tiny_pipelines_feeds_the_curve(saved_teacher_and_student, load_script, tmp_path):
    """eval/distill_tuning.py end to end on a tiny teacher and its 1/2-step student, then this script on its file:
    every row says what each asked-for shape was read as, and the note is kept."""
    tuning, read = load_script("eval/distill_tuning.py"), load_script("experiments/student_read.py")
    teacher, student = saved_teacher_and_student
    out = tmp_path / "read.json"
    assert tuning.main(["--teacher", str(teacher), "--student", f"dmd2={student}",
                        "--prompts", "6", "--timing-prompts", "1", "--threads", "1", "--out", str(out),
                        "--note", "step 10, EMA"]) == 0
    record = json.loads(out.read_text())
    assert [(r["name"], r["steps"]) for r in record["rows"]] == [("teacher", 3), ("dmd2", 1), ("dmd2", 2)]
    assert record["note"] == "step 10, EMA"
    for row in record["rows"]:
        assert sum(int(v["right"].split("/")[1]) for v in row["shapes"].values()) == 6
    curve = tmp_path / "curve.json"
    assert read.main([f"10={out}", "--out", str(curve)]) == 0
    rows = json.loads(curve.read_text())["rows"]
    assert [k["steps"] for k in rows[0]["k"]] == [1, 2] and all("shapes" in k for k in rows[0]["k"])

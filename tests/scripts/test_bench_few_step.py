"""``eval/bench_few_step.py`` (the few-step student against its teacher on the full evaluation's prompts): it runs
end to end on tiny pipelines and writes a row per setting with the issue's targets judged against the teacher."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_benchmark_compares_a_student_at_each_step_count_with_its_teacher(saved_teacher_and_student, load_script,
                                                                            tmp_path):
    bench = load_script("eval/bench_few_step.py")
    teacher, student = saved_teacher_and_student
    out = tmp_path / "result.json"
    assert bench.main(["--teacher", str(teacher), "--student", str(student), "--prompts",
                       "4", "--timing-prompts", "4", "--rounds", "2", "--quick", "--no-fvd", "--threads", "1",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["name"] for r in result["rows"]] == ["teacher", "student_1_steps", "student_2_steps"]
    assert [r["evaluations_per_video"] for r in result["rows"]] == [6, 1, 2]
    assert result["shipped_steps"] == 2 and result["cpu"] and result["threads"] == 1
    from results import missing_provenance  # eval/ is on sys.path once a bench script is loaded
    assert missing_provenance(result) == [] and result["precision"] == "fp32" and len(result["weights_sha256"]) >= 4
    for row in result["rows"]:  # every round recorded, the speed-up the median of per-round ratios
        assert [len(row["seconds_per_video_rounds"][b]) for b in ("batch_1", "batch_4")] == [2, 2]
        assert row["speedup_batch_1_rounds"]["n"] == 2 and row["speedup_batch_1"] == row["speedup_batch_1_rounds"]["median"]
    for row in result["rows"][1:]:
        assert row["adherence"]["all"]["n"] == 4 and set(row["seconds_per_video"]) == {"batch_1", "batch_4"}
        assert set(row["targets"]) == {"speedup_batch_1", "color_motion_points_below_teacher",
                                       "shape_points_below_teacher"}
        assert row["all_targets_met"] == all(t["met"] for t in row["targets"].values())
    table = bench.readme_table(result)  # the docs' table (eval/readme_tables.py)
    assert "| student (shipped) | 2 | 2 |" in table and "| teacher (guidance 2) | 3 | 6 |" in table


def test_targets_are_judged_against_the_teacher(load_script):
    bench = load_script("eval/bench_few_step.py")
    teacher = {"adherence": {"all": {"color_motion": 0.96, "shape": 0.38}}, "fvd": {"value": 100.0}}
    row = {"adherence": {"all": {"color_motion": 0.93, "shape": 0.37}}, "fvd": {"value": 112.0},
           "speedup_batch_1": 12.0}
    t = bench.targets(row, teacher)
    assert t["speedup_batch_1"]["met"] and t["shape_points_below_teacher"]["met"]
    assert not t["color_motion_points_below_teacher"]["met"] and not t["fvd_ratio_to_teacher"]["met"]
    assert t["color_motion_points_below_teacher"]["value"] == pytest.approx(3.0)
    assert t["fvd_ratio_to_teacher"]["value"] == pytest.approx(1.12)


def test_speed_is_judged_on_the_median_of_per_round_ratios_and_five_rounds_are_required(load_script, monkeypatch):
    """Invented per-round times (nothing timed here): the ratio is taken within each round, judged on the median, and
    the smallest round's ratio is kept beside it; fewer than 5 rounds are refused unless the run is a smoke run; a
    negative time is an error."""
    bench = load_script("eval/bench_few_step.py")
    teacher = {"seconds_per_video_rounds": {"batch_1": [10.0, 12.0, 10.0, 11.0, 10.0], "batch_4": [5.0] * 5}}
    student = {"seconds_per_video_rounds": {"batch_1": [1.0, 1.0, 2.0, 1.0, 0.8], "batch_4": [1.0] * 5},
               "adherence": {"all": {"color_motion": 0.9, "shape": 0.4}}}
    bench.judge_speed([teacher, student])
    assert student["speedup_batch_1_rounds"]["rounds"] == pytest.approx([10.0, 12.0, 5.0, 11.0, 12.5])
    assert student["speedup_batch_1"] == pytest.approx(11.0)  # the median of the ratios, not 10 / 1
    target = bench.targets(student, {"adherence": {"all": {"color_motion": 0.9, "shape": 0.4}}})["speedup_batch_1"]
    assert target["met"] and target["minimum"] == pytest.approx(5.0) and target["rounds"] == 5
    with pytest.raises(SystemExit, match="at least 5"):
        bench.main(["--rounds", "3", "--teacher", "nowhere", "--student", "nowhere"])
    clock = iter([0.0, -1.0])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    from results import NegativeTimeError
    with pytest.raises(NegativeTimeError, match="negative time"):
        bench.time_rounds([(lambda **kw: None, {})], [SimpleNamespace(caption="x", seed=0)], batch=1, rounds=1)

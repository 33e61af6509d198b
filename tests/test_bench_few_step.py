"""``eval/bench_few_step.py`` (the few-step student against its teacher on the full evaluation's prompts): it runs
end to end on tiny pipelines and writes a row per setting with the issue's targets judged against the teacher."""
from __future__ import annotations

import json

import pytest

from vidgen.generators.distillation import distillation_spec, make_student

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_benchmark_compares_a_student_at_each_step_count_with_its_teacher(tiny_pipeline, load_script, tmp_path):
    bench = load_script("eval/bench_few_step.py")
    teacher = tiny_pipeline("flow", max_grid=(5, 16, 16), max_text_tokens=16)
    teacher.sampling_config = {"num_inference_steps": 3, "guidance_scale": 2.0}
    student = teacher.with_student(make_student(teacher.transformer, distillation_spec("dmd2", [1, 2], 2.0)))
    teacher.save_pretrained(tmp_path / "teacher")
    student.save_pretrained(tmp_path / "student")
    out = tmp_path / "result.json"
    assert bench.main(["--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "student"), "--prompts",
                       "4", "--timing-prompts", "4", "--no-fvd", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["name"] for r in result["rows"]] == ["teacher", "student_1_steps", "student_2_steps"]
    assert [r["evaluations_per_video"] for r in result["rows"]] == [6, 1, 2]
    assert result["shipped_steps"] == 2 and result["cpu"] and result["threads"] == 1
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

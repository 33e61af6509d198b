"""Fixtures shared by the tests of eval/ and experiments/ scripts."""
from __future__ import annotations

import pytest


@pytest.fixture
def saved_teacher_and_student(tiny_pipeline, tmp_path):
    """(teacher folder, student folder): a tiny flow pipeline sampling at 3 steps and guidance 2, and its DMD2
    student at 1 and 2 steps, both saved under ``tmp_path``."""
    from vidgen.distillation.losses import distillation_spec, make_student
    teacher = tiny_pipeline("flow", max_grid=(5, 16, 16), max_text_tokens=16)
    teacher.sampling_config = {"num_inference_steps": 3, "guidance_scale": 2.0}
    student = teacher.with_student(make_student(teacher.transformer, distillation_spec("dmd2", [1, 2], 2.0)))
    teacher.save_pretrained(tmp_path / "teacher")
    student.save_pretrained(tmp_path / "student")
    return tmp_path / "teacher", tmp_path / "student"

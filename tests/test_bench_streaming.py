"""eval/bench_streaming.py's reading of its numbers: how far a missed target is off, and the table that shows a
frame's time split into latents and decoding (decoding within noise shown as such)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("eval/bench_streaming.py")


def test_missed_targets_say_by_how_much(script):
    causal = {"first_frame_s": 0.45, "steady_fps": 18.0, "vs_autoregressive": 2.5, "vs_flow": 4.0}
    met = {"first_frame_s": False, "steady_fps": False, "vs_autoregressive": True, "vs_flow": False}
    assert script.missed_by(causal, met) == pytest.approx({"first_frame_s": 0.5, "steady_fps": 0.25, "vs_flow": 0.2})


def test_the_table_splits_a_frames_time_and_names_the_misses(script):
    row = {"sampling": {"num_inference_steps": 4}, "first_frame_s": 0.1, "steady_fps": 50.0,
           "generate_ms_per_frame": 15.0, "decode_ms_per_frame": 5.0}
    flow = {"sampling": {"num_inference_steps": 25}, "first_frame_s": 1.0, "steady_fps": 12.5,
            "generate_ms_per_frame": 80.0, "decode_ms_per_frame": -0.2}
    results = {"pipelines": {"causal": row, "flow": flow}, "decoder_ceiling_fps": 500.0, "frames": 100, "size": 64,
               "rounds": 3, "precision": "fp32", "threads": 2, "cpu": "test CPU", "date": "2026-01-01",
               "targets": script.TARGETS,
               "causal": {"first_frame_s": 0.1, "steady_fps": 50.0, "vs_flow": 4.0,
                          "met": {"first_frame_s": True, "steady_fps": True, "vs_flow": False},
                          "missed_by": {"vs_flow": 0.2}}}
    table = script.readme_table(results)
    assert "| 15.0 / 5.0 |" in table and "| 80.0 / < 0.1 |" in table
    assert "4.0x the flow pipeline's (target >= 5x): missed by 20 %" in table and "first frame in 0.100 s (target <= 0.3 s): met" in table

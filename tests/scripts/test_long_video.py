"""eval/long_video.py's memory check counts the frames a streamed story holds: a story streamed to its file holds a
few windows of frames at any length, and the same story with its frames kept as they are written (a buffering
writer) is seen holding every frame. Peak RSS could not tell the two apart at 64x64."""
from __future__ import annotations

import argparse

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")
LENGTH, SIZE = 96, 16


@pytest.fixture(scope="module")
def pretrained(tiny_pipeline, tmp_path_factory):
    from vidgen.pipelines.registry import shipped_folder
    root = tmp_path_factory.mktemp("pretrained")
    tiny_pipeline("masked").save_pretrained(shipped_folder("masked", root))
    return root


def _story(load_script, pretrained, tmp_path) -> dict:
    script = load_script("eval/long_video.py")
    args = argparse.Namespace(pipelines=["masked"], pretrained=str(pretrained), length=LENGTH, segments=8,
                              frames_per_segment=12, size=SIZE, seed=0, threads=1, precision="fp32",
                              out_dir=str(tmp_path), score=False)
    return script.child(args)


def test_frames_held_counts_frames_once_per_storage(load_script):
    script = load_script("eval/long_video.py")
    before = script.frames_held(SIZE)
    kept = [torch.zeros(3, 10, SIZE, SIZE), torch.zeros(1, 5, 3, SIZE, SIZE, dtype=torch.bfloat16)]
    views = [kept[0][:, :2], kept[0].permute(1, 0, 2, 3)]  # views share their storage: not counted again
    features = torch.zeros(1, 64, 4, SIZE, SIZE)  # decoder features: no axis of 3 channels, not frames
    assert script.frames_held(SIZE) - before == 15
    del kept, views, features
    assert script.frames_held(SIZE) == before


def test_a_streamed_story_holds_a_few_windows_and_a_buffered_one_every_frame(load_script, pretrained, tmp_path,
                                                                             monkeypatch):
    streamed = _story(load_script, pretrained, tmp_path)
    readings = streamed["frames_held"]  # [frames written so far, frames held] at evenly spaced points
    assert len(readings) >= 8 and streamed["seconds"] > 0
    half = len(readings) // 2
    assert streamed["frames_held_max"] < LENGTH // 2, readings  # a few 13-frame windows, not the story
    assert max(n for _, n in readings[half:]) <= max(n for _, n in readings[:half]), readings  # and it does not grow

    from vidgen.io import VideoWriter
    kept, write = [], VideoWriter.write
    monkeypatch.setattr(VideoWriter, "write", lambda self, chunk: (kept.append(chunk), write(self, chunk))[1])
    buffered = _story(load_script, pretrained, tmp_path)
    assert all(held >= written for written, held in buffered["frames_held"]), buffered["frames_held"]


def test_the_shipped_pipelines_stream_their_stories():
    """docs/results/long_video_frames_held.json (eval/long_video.py --memory-only on pretrained/): at 100, 500 and
    1025 frames each shipped pipeline held no more frames at the longest length than at the shortest, and fewer
    than the shortest story has: a buffered story would hold 1025 frames."""
    import json
    from pathlib import Path
    results = json.loads((Path(__file__).resolve().parents[2] / "docs/results/long_video_frames_held.json").read_text())
    assert set(results["summary"]) == {"masked", "flow", "autoregressive"}
    for name, entry in results["summary"].items():
        held, lengths = entry["frames_held_max"], entry["lengths"]
        assert lengths == [100, 500, 1025], name
        assert held[-1] <= 1.15 * held[0] and max(held) < lengths[0], (name, held)


def test_segment_notes_count_colour_motion_both_and_empty_segments(load_script):
    long_video = load_script("eval/long_video.py")

    def seg(colour, motion, found=True):
        detected = {"color": "red" if colour else "blue", "motion": "left" if motion else "still", "found": found}
        return {"expected": {"color": "red", "motion": "left"}, "detected": detected,
                "color_motion": colour and motion}

    runs = [{"pipeline": "flow", "precision": "bf16", "context_frames": 1,
             "segments": [seg(True, True), seg(True, False), seg(False, True), seg(False, False, found=False)]},
            {"pipeline": "flow", "frames": 100}]  # a shorter run without segments adds no line
    assert long_video.segment_notes({"runs": runs}) == (
        "- flow (bf16, context 1): colour in 2 of 4 segments, motion in 2, both in 1; 1 holds no object.")

"""eval/streaming_quality.py: its measures are right on videos whose answer is known (histogram distance 0 for a
frame against itself and 1 for black against white; the seam jump of a hard cut is large and of constant motion 1),
the streamed video is cut into exactly the scored windows while only those frames and the sampled histograms are
kept, story pairs share shape and background, and the script runs end to end on a tiny causal pipeline."""
from __future__ import annotations

import json
import math

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread beats two fighting over shared cores
SIZE = 32


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("eval/streaming_quality.py")


@pytest.fixture(scope="module")
def folder(tiny_pipeline, tmp_path_factory):
    pipe = tiny_pipeline("causal")
    pipe.sampling_config = pipe.sampling_config.replace(num_inference_steps=2)
    path = tmp_path_factory.mktemp("causal") / "tiny-causal"
    pipe.save_pretrained(path)
    return path


def test_histogram_distance_is_zero_for_the_same_frame_and_one_for_black_against_white(script):
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(4, 3, SIZE, SIZE, generator=g)
    h = script.histograms(frames)
    assert h.shape == (4, 3, script.HIST_BINS) and torch.allclose(h.sum(-1), torch.ones(4, 3))
    assert float(script.histogram_distance(h[0], h[0])) == 0.0
    black, white = script.histograms(torch.zeros(1, 3, SIZE, SIZE)), script.histograms(torch.ones(1, 3, SIZE, SIZE))
    assert float(script.histogram_distance(black, white)) == 1.0
    d = script.histogram_distance(h[0], h[1])
    assert 0 < float(d) < 0.2 and float(d) == float(script.histogram_distance(h[1], h[0]))  # same noise: close


def test_the_seam_jump_of_a_hard_cut_is_large_and_of_constant_motion_one(script):
    t, x = torch.arange(24.0)[:, None, None, None], torch.arange(SIZE)[None, None, None, :]
    sliding = ((x - t) % SIZE == 0).float().expand(24, 3, SIZE, SIZE)  # a bar moving one pixel per frame
    assert script.seam_ratio(sliding, 12) == pytest.approx(1.0)
    cut = sliding.clone()
    cut[12:] = 1 - cut[12:]  # the picture inverts at frame 12
    assert script.seam_ratio(cut, 12) > 10
    assert script.seam_ratio(cut, 12, among=[4, 8, 16, 20]) > 10  # against the other chunk boundaries alike
    ramp = t.expand(24, 3, SIZE, SIZE) / 24  # brightness rising evenly
    assert script.seam_ratio(ramp, 5) == pytest.approx(1.0, rel=1e-4)


def test_windows_and_frame_pairs_lie_inside_the_video(script):
    assert script.window_starts(1025, 8) == [0, 144, 288, 432, 576, 720, 864, 1008]  # the last one ends the video
    assert script.window_starts(10, 3) == [0]  # a video shorter than a window: one window, the whole video
    for d in script.DISTANCES:
        starts = script.pair_starts(1025, d)
        assert len(starts) == min(64, 1025 - d) and starts[0] == 0 and starts[-1] + d == 1024
    assert script.pair_starts(33, 64) == []
    assert len(script.needed_frames(1025, script.DISTANCES)) < 1025 // 2  # the histograms of a sample of frames


class _CountingPipe:
    """A stream of chunks (1, then 4 frames) whose pixels are their frame index / 1024."""

    def stream(self, prompt, num_frames, height, width, output_type, generator):
        starts = [0, *range(1, num_frames, 4)]
        for s, e in zip(starts, [*starts[1:], num_frames]):
            yield (torch.arange(s, e, dtype=torch.float32) / 1024)[None, :, None, None, None].expand(1, -1, 3, 4, 4)


def test_the_stream_is_cut_into_exactly_the_scored_windows_and_sampled_frames(script):
    from vidgen.demo.prompts import tuning_prompts
    prompt, starts, keep = tuning_prompts(1)[0], [0, 7, 23], {0, 5, 38}
    detected, hists = script.drift_video(_CountingPipe(), prompt, 40, starts, keep, lambda clip: clip[0, :, 0, 0],
                                         SIZE)
    for s, clip in zip(starts, detected):  # the scorer saw frames s .. s + 16, in [-1, 1]
        assert torch.equal(((clip + 1) / 2 * 1024).round(), torch.arange(s, s + 17, dtype=torch.float32))
    assert sorted(hists) == sorted(keep) and hists[5].shape == (3, script.HIST_BINS)


def test_story_pairs_share_shape_and_background_and_change_colour_and_motion(script):
    from vidgen.demo.prompts import tuning_prompts
    pairs = script.story_pairs(tuning_prompts(64, seed=1), 4)
    assert len(pairs) == 4 and len({p.caption for pair in pairs for p in pair}) == 8
    for a, b in pairs:
        x, y = a.attributes, b.attributes
        assert (x.shape, x.background) == (y.shape, y.background) and x.color != y.color and x.motion != y.motion


@pytest.mark.filterwarnings("ignore:prompt. 1 prompt.s. longer than max_text_tokens")  # the tiny model's 8 tokens
def test_main_writes_drift_and_seams_for_each_pipeline(script, folder, tmp_path):
    out = tmp_path / "streaming_quality.json"
    assert script.main(["--pipeline", f"a={folder}", "--frames", "33", "--prompts", "2", "--segments", "3",
                        "--stories", "1", "--story-frames", "33", "--size", str(SIZE), "--threads", "1",
                        "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"command", "threads", "date", "config", "real_reference", "pipelines"} <= set(result)
    assert result["config"]["distances"] == [1, 4, 16] and result["config"]["window_starts"] == [0, 8, 16]
    assert list(result["real_reference"]["histogram_distance"]) == ["1", "4", "16"]
    row = result["pipelines"]["a"]
    drift, seams, summary = row["drift"], row["seams"], row["summary"]
    assert [w["start"] for w in drift["windows"]] == [0, 8, 16] and all(w["n"] == 2 for w in drift["windows"])
    assert list(drift["histogram_distance"]) == ["1", "4", "16"]
    assert all(0 <= v <= 1 for v in drift["histogram_distance"].values())
    assert drift["drop_points"] == pytest.approx(100 * (drift["first_third"]["color_motion"]
                                                        - drift["last_third"]["color_motion"]))
    assert seams["switch_frame"] == 17  # the chunk boundary nearest the middle: latent frame 5 starts at frame 17
    for mode in ("recache", "reset"):
        assert seams[mode]["seam_ratio"] > 0 and math.isfinite(seams[mode]["seam_ratio"])
        assert seams[mode]["after_switch"]["n"] == 1
    # the frames before the switch are the first prompt's in both modes (causality): the same detection
    assert seams["recache"]["stories"][0]["before"] == seams["reset"]["stories"][0]["before"]
    assert seams["recache"]["stories"][0]["seam_ratio"] != seams["reset"]["stories"][0]["seam_ratio"]
    assert set(summary) == {"first_third_color_motion", "last_third_color_motion", "drop_points",
                            "histogram_distance_d", "histogram_distance", "seam_ratio_recache", "seam_ratio_reset",
                            "after_switch_color_motion_recache", "after_switch_color_motion_reset"}
    assert summary["histogram_distance_d"] == 16
    table = script.readme_table(result).splitlines()  # the docs' table, from the results file
    assert table[2].startswith("| a | ") and "1 / 16 frames apart" in table[0] and len(table) == 5

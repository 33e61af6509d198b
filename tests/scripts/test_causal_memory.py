"""eval/causal_memory.py: what a causal stream holds after every chunk (KV cache, live tensors, frames) stays
bounded over length, on a tiny pipeline; the summary judges the target on live tensor bytes and the table renders."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow  # about 27 s (every chunk walks the live tensors): make test-slow, whose summary records it
def test_held_bytes_and_frames_stay_bounded_over_length(tiny_pipeline, load_script):
    memory = load_script("eval/causal_memory.py")
    pipe = tiny_pipeline("causal")
    pipe.sampling_config = pipe.sampling_config.replace(num_inference_steps=1)
    short, long = (memory.measure_stream(pipe, "a red circle", n, 32, 0) for n in (17, 41))
    for run in (short, long):
        assert run["streams"] == 1 and run["chunks"] == len(run["readings"]) > 1
        assert all(r["cache_bytes"] <= r["live_tensor_bytes"] for r in run["readings"][1:])
        assert run["cache_bytes_max"] > 0 and run["frames_held_max"] >= 0
        assert sum(w["frames"][1] - w["frames"][0] + 1 for w in run["foreground_windows"]) == run["frames"]
    assert long["frames"] == 41 and long["chunks"] > short["chunks"]
    assert long["cache_bytes_max"] == short["cache_bytes_max"]  # the window was full by 17 frames: the same chunks
    assert long["frames_held_max"] <= short["frames_held_max"] + 4  # a chunk's frames, not the video
    summary = memory.summarize([long, short])
    assert summary["lengths"] == [17, 41] and summary["cache_bytes_ratio"] == 1.0
    assert summary["target"]["result"] == ("met" if summary["live_tensor_bytes_ratio"] <= memory.TARGET
                                           and long["frames_held_max"] <= short["frames_held_max"] else
                                           summary["target"]["result"])


def test_the_table_says_whether_the_stream_kept_its_object(load_script):
    memory = load_script("eval/causal_memory.py")

    def run(frames, kept):
        window = {"frames": [0, frames - 1], "foreground": 0.05 if kept else 0.0, "share_with_object": float(kept)}
        return {"frames": frames, "cache_bytes_max": 2 ** 20, "live_tensor_bytes_max": 2 ** 21,
                "frames_held_max": 5, "rss_mib_max": 900.0, "peak_rss_mib": 950.0, "foreground_windows": [window],
                "kept_its_object": kept}
    for kept in (True, False):
        runs = [run(100, kept), run(1025, kept)]
        results = {"summary": memory.summarize(runs), "runs": runs, "size": 64, "prompt": "p", "precision": "fp32",
                   "threads": 2, "loadavg_start": [0.5, 0.5, 0.5], "cpu": "cpu (no bf16 units)",
                   "date": "2026-11-29T00:00:00", "command": "python eval/causal_memory.py"}
        table = memory.readme_table(results)
        assert "target <= 1.05x on live tensors: met" in table
        assert ("did not keep their object" in table) != kept

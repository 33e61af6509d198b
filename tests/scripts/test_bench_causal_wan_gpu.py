"""eval/bench_causal_wan_gpu.py never rots: its ``--quick`` mode (a tiny Wan, block-causal, on the CPU) streams its
chunks through the one chunk loop and writes the GPU run's figures; the device script runs it and names its results file."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a few seconds: the make-test budget keeps it in make test-slow
def test_quick_run_streams_every_chunk(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_causal_wan_gpu", ROOT / "eval" / "bench_causal_wan_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.random.fork_rng():
        assert module.main(["--quick", "--out", str(tmp_path / "q.json")]) == 0
    result = json.loads((tmp_path / "q.json").read_text())
    assert len(result["chunk_s"]) == result["chunks"] == 4 and all(s > 0 for s in result["chunk_s"])
    assert result["first_chunk_s"] == result["chunk_s"][0]  # later chunks' times include the cache pass before them
    assert result["steady_fps"] == result["chunk_frames"] * 4 / result["steady_chunk_s"]
    script = (ROOT / "experiments" / "device" / "causal_wan_gpu.sh").read_text()
    assert "eval/bench_causal_wan_gpu.py" in script and "bench_causal_wan_gpu.json" in script

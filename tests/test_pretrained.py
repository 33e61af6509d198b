"""The shipped pipelines in pretrained/: each loads offline and generates a video of exactly the requested shape,
identical for the same seed (also in a fresh process) and different for another; the folder stays within its size
budget and holds only safetensors weights; every folder has a model card."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidgen.demo import PIPELINES
from vidgen.pipelines import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "pretrained"
PROMPT = "a green square moving right on a black background"


@pytest.fixture(scope="module", params=list(PIPELINES))
def shipped(request):
    folder = PRETRAINED / PIPELINES[request.param]
    pipe = load_pipeline(folder)
    pipe.set_progress_bar_config(disable=True)
    return request.param, folder, pipe


def _generate(pipe, seed: int, num_frames: int = 9) -> np.ndarray:
    return pipe(PROMPT, num_frames=num_frames, height=64, width=64, generator=torch.Generator().manual_seed(seed),
                output_type="np").frames


def test_generates_exact_shape_deterministically(shipped):
    name, _, pipe = shipped
    first = _generate(pipe, seed=1)
    assert first.shape == (1, 9, 64, 64, 3) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(first, _generate(pipe, seed=1))
    assert np.abs(first - _generate(pipe, seed=2)).max() > 0.05, f"{name}: another seed gave the same video"


def test_same_video_in_a_fresh_process(shipped, tmp_path):
    name, folder, pipe = shipped
    here = _generate(pipe, seed=5, num_frames=5)
    code = ("import sys, numpy as np, torch; from vidgen.pipelines import load_pipeline; "
            f"p = load_pipeline({str(folder)!r}); p.set_progress_bar_config(disable=True); "
            f"np.save(sys.argv[1], p({PROMPT!r}, num_frames=5, height=64, width=64, "
            "generator=torch.Generator().manual_seed(5), output_type='np').frames)")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.npy")], check=True, cwd=tmp_path, env=env)
    np.testing.assert_array_equal(here, np.load(tmp_path / "v.npy"))


def test_folders_are_safetensors_with_cards_and_within_budget():
    total = 0
    for name, sub in PIPELINES.items():
        folder = PRETRAINED / sub
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == {"masked": "MaskedVideoPipeline", "flow": "FlowVideoPipeline",
                                        "autoregressive": "AutoregressiveVideoPipeline"}[name]
        files = [f for f in folder.rglob("*") if f.is_file()]
        weights = [f for f in files if f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")]
        assert weights and all(f.suffix == ".safetensors" for f in weights), weights
        card = (folder / "README.md").read_text()
        for must in ("Data", "steps", "wall time", "Held-out"):
            assert must in card, f"{sub}/README.md lacks {must!r}"
        total += sum(f.stat().st_size for f in files)
    assert total < 80 * 2**20, f"pretrained/ holds {total / 2**20:.1f} MiB (budget 80)"

"""Kill -9 the generator trainer at several points and resume each time: the final weights are bit-identical to an
uninterrupted run of the same length (atomic checkpoints, seeded (seed, rank, step) randomness, sampler position)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from vidgen.testing import perturb_weights
from vidgen.tokenizers import CausalVQVAE

SCRIPT = Path(__file__).resolve().parents[1] / "pipelines" / "train_generator.py"
STEPS = 30


def _command(run_dir, tokenizer, cache):
    return [sys.executable, str(SCRIPT), f"run_dir={run_dir}", f"tokenizer={tokenizer}", "model.generator=masked",
            "model.preset=tiny", "model.overrides={max_grid: [4, 4, 4]}", "data.conditioning=none",
            "data.num_clips=8", "data.num_frames=10", "data.size=32", "data.batch=4", f"data.cache_dir={cache}",
            f"steps={STEPS}", "log_every=1", "sample_every=0", "ckpt_every=1", "keep_checkpoints=2",
            "optim.warmup_steps=0", "optim.lr=2e-3"]


def _latest_step(run_dir: Path) -> int:
    latest = run_dir / "checkpoints" / "latest"
    try:
        return int(latest.read_text().strip().split("_")[-1])
    except (OSError, ValueError):
        return 0


def test_kill9_three_times_then_resume_is_bit_identical(tmp_path):
    torch.manual_seed(0)
    tok = perturb_weights(CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4)), scale=0.02)
    tok.save_pretrained(tmp_path / "tok")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    straight, killed, cache = tmp_path / "straight", tmp_path / "killed", tmp_path / "cache"
    subprocess.run(_command(straight, tmp_path / "tok", cache), check=True, env=env, capture_output=True, timeout=300)

    rng = random.Random(0)
    kill_after = sorted(rng.sample(range(2, STEPS - 2), 3))  # kill once the latest checkpoint reaches these steps
    for target in kill_after:
        proc = subprocess.Popen(_command(killed, tmp_path / "tok", cache), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while _latest_step(killed) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # a real kill -9, possibly in the middle of writing a checkpoint
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        assert not (killed / "final").exists()
    subprocess.run(_command(killed, tmp_path / "tok", cache), check=True, env=env, capture_output=True, timeout=300)

    log = (killed / "log.jsonl").read_text()
    assert log.count("resumed from") >= 3
    a = load_file(str(straight / "final" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(killed / "final" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

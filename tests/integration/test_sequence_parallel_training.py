"""Sequence parallelism in the trainer: ``sp_size=2`` under ``accelerate launch`` with 2 processes (one SP group,
gloo on CPU) trains the weights one process trains with the same batch, step by step (and the EMA), within fp32
rounding; a run killed with kill -9 and resumed under sequence parallelism still ends at those weights. Every case
launches processes, so all are in the opt-in slow set; tests/integration/test_sequence_parallel.py keeps a fast gloo case in
make test."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_distributed_equivalence import COMMON, STEPS, _check_equivalent, _run
from vidgen.testing import accelerate_launch, perturb_weights

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "pipelines" / "train_generator.py"
# 16 text-free class-conditioned latent frames of 4x4 tokens (+ padding to the SP size with odd grids below)
GENERATORS = {
    "flow": ["model.generator=flow", "model.overrides={max_grid: [4, 8, 8], layout: window, window: [3, 3, 3]}",
             "data.num_frames=9"],
    "masked": ["model.generator=masked", "model.overrides={max_grid: [4, 8, 8], layout: frame_causal}",
               "data.num_frames=9"],
    "autoregressive": ["model.generator=autoregressive", "model.overrides={max_grid: [4, 8, 8]}",
                       "data.num_frames=9"],
}
DATA = ["model.preset=tiny", "data.conditioning=class", "data.num_clips=8", "data.size=32", "data.batch=2",
        "sample_every=0", "optim.lr=2e-3", "ema_decay=0.9"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict:
    from vidgen.tokenizers import CausalVAE, CausalVQVAE
    root = tmp_path_factory.mktemp("tok")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        perturb_weights(CausalVAE.from_preset("tiny"), scale=0.02).save_pretrained(root / "vae")
        perturb_weights(CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4)),
                        scale=0.02).save_pretrained(root / "fsq")
    return {"flow": root / "vae", "masked": root / "fsq", "autoregressive": root / "fsq"}


def _args(kind, run_dir, tokenizers, cache, extra=()):
    return [*GENERATORS[kind], *DATA, *COMMON, f"run_dir={run_dir}", f"video_tokenizer={tokenizers[kind]}",
            f"data.cache_dir={cache}", *extra]


@pytest.mark.parametrize("kind", ["flow", "masked", "autoregressive"])
def test_sp2_trains_like_one_process(kind, tmp_path, tokenizers):
    _run(SCRIPT, _args(kind, tmp_path / "one", tokenizers, tmp_path / "cache"), 1)
    _run(SCRIPT, _args(kind, tmp_path / "sp", tokenizers, tmp_path / "cache", ["sp_size=2"]), 2)
    _check_equivalent(tmp_path / "one", tmp_path / "sp")
    log = (tmp_path / "sp" / "log.jsonl").read_text()
    assert "sequence parallel: 2 processes per clip, 1 data-parallel groups" in log


def _latest_step(run_dir: Path) -> int:
    try:
        return int((run_dir / "checkpoints" / "latest").read_text().strip().split("_")[-1])
    except (OSError, ValueError):
        return 0


def test_sp2_killed_and_resumed_trains_like_one_process(tmp_path, tokenizers):
    """kill -9 of the launcher and both workers once a checkpoint exists, then a resumed SP run to the end."""
    kind, cache = "flow", tmp_path / "cache"
    _run(SCRIPT, _args(kind, tmp_path / "one", tokenizers, cache), 1)
    killed = tmp_path / "killed"
    args = _args(kind, killed, tokenizers, cache, ["sp_size=2", "resume=auto"])
    launch = accelerate_launch(SCRIPT, args, 2, popen=True)
    deadline = time.time() + 300
    while _latest_step(killed) < 1 and launch.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(launch.pid, signal.SIGKILL)  # the launcher's whole session: a real kill -9 of every process
    launch.wait()
    assert launch.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "final").exists() and _latest_step(killed) < STEPS
    _run(SCRIPT, args, 2)
    assert "resumed from" in (killed / "log.jsonl").read_text()
    _check_equivalent(tmp_path / "one", killed)


def test_vidgen_generate_sp2_under_torchrun_writes_the_one_process_video(tmp_path):
    """``torchrun --nproc_per_node 2 -m vidgen generate ... --sp 2``: rank 0 writes the video one process writes."""
    import socket

    from diffusers import FlowMatchEulerDiscreteScheduler

    from vidgen.generators import FlowVideoTransformer
    from vidgen.pipelines import FlowVideoPipeline
    from vidgen.tokenizers import CausalVAE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = CausalVAE.from_preset("tiny")
        gen = FlowVideoTransformer.from_preset("tiny", in_channels=vae.config.latent_channels, num_classes=3,
                                               max_grid=(4, 8, 8))
        perturb_weights(vae, gen)
    FlowVideoPipeline(vae, gen, FlowMatchEulerDiscreteScheduler()).save_pretrained(tmp_path / "pipe")
    args = ["generate", "--pipeline", str(tmp_path / "pipe"), "--class", "1", "--seed", "0", "--steps", "2",
            "--num-frames", "9", "--height", "40", "--width", "48", "--precision", "fp32"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "vidgen", *args, "--out", str(tmp_path / "one" / "v.mp4")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), "-m", "vidgen", *args, "--sp", "2", "--out", str(tmp_path / "sp" / "v.mp4")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "sp").iterdir()) == ["v.mp4", "v.png"]  # written once, by rank 0
    assert two.stdout.count("video: ") == 1
    assert (tmp_path / "sp" / "v.mp4").read_bytes() == (tmp_path / "one" / "v.mp4").read_bytes()


def test_sp2_on_shards_with_text_trains_like_one_process(tmp_path):
    """Shard datasets over two buckets, captions as a text prefix: the SP group draws one clip stream (the data-parallel
    rank and size), the same buckets step by step, and trains the 1-process weights."""
    from helpers.shards import save_tiny_tokenizers, write_captioned_clips
    from vidgen.cli import main as cli
    write_captioned_clips(tmp_path / "src", {f"{i}.mp4": (10, 32, 32 if i % 2 else 48, f"caption {i % 4}")
                                             for i in range(6)})
    save_tiny_tokenizers(tmp_path, ["vae"])
    assert cli(["data", "encode", str(tmp_path / "src"), "--tokenizer", str(tmp_path / "vae"), "--out",
                str(tmp_path / "shards"), "--buckets", "9x32x32,9x32x48", "--max-text-tokens", "8", "--dtype",
                "float32", "--chunk-size", "3", "--workers", "0", "--threads", "1"]) == 0
    args = [f"video_tokenizer={tmp_path / 'vae'}", "model.generator=flow", "model.preset=tiny",
            "model.overrides={max_grid: [4, 4, 6], layout: frame_causal}", "data.dataset=shards",
            f"data.root={tmp_path / 'shards'}", "data.max_text_tokens=8", "sample_every=0", "optim.lr=2e-3",
            "data.buckets=[{shape: 9x32x32, batch: 2}, {shape: 9x32x48, batch: 1}]", *COMMON]
    _run(SCRIPT, [*args, f"run_dir={tmp_path / 'one'}"], 1)
    _run(SCRIPT, [*args, f"run_dir={tmp_path / 'sp'}", "sp_size=2"], 2)
    drawn = [[json.loads(line).get("bucket") for line in (tmp_path / r / "log.jsonl").read_text().splitlines()
              if '"loss"' in line] for r in ("one", "sp")]
    assert drawn[0] == drawn[1] and len(drawn[0]) == STEPS
    _check_equivalent(tmp_path / "one", tmp_path / "sp")

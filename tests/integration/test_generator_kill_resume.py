"""Kill -9 a trainer at three random checkpoints and resume each time: the final weights are bit-identical to an
uninterrupted run of the same length (atomic checkpoints, seeded (seed, rank, step) randomness, sampler position,
optimizer / scheduler / EMA / discriminator / codebook state), for the generator trainer, the tokenizer trainer with
the perceptual loss, random crops, GAN and EMA, a VQ tokenizer (codebook buffers), and DMD2 distillation with its
critic and GAN head, and the block-causal generator's two stages (diffusion forcing, Self-Forcing). All in the slow set (`make
test-slow`, whose summary records them); `make test` kills and resumes once each in test_shard_training (the generator
trainer on shards), test_shard_encode and test_diffusers_finetune_processes."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import differences
from vidgen.testing import perturb_weights
from vidgen.generators import CausalFlowVideoTransformer, FlowVideoTransformer
from vidgen.tokenizers import CausalVAE, CausalVQVAE
from vidgen.training.encode_cache import shapes_class_names

ROOT = Path(__file__).resolve().parents[2]
STEPS = 30
COMMON = [f"steps={STEPS}", "log_every=1", "ckpt_every=1", "keep_checkpoints=2", "optim.warmup_steps=0"]
TOKENIZER = ["model.preset=tiny", "data.num_frames=5", "data.size=48", "data.crop=32", "data.num_clips=6",
             "data.video_batch=2", "data.image_batch=2", "data.eval_clips=2", "data.eval_frames=5",
             "loss.perceptual=0.1", "loss.perceptual_frames=1", "loss.gan=0.1", "loss.gan_start=1",
             "loss.disc_channels=8", "loss.disc_layers=2", "ema_decay=0.9", "eval_every=1000", "sample_every=1000",
             "stats_clips=2"]
TRAINERS = {
    "generator": lambda run, tok, cache: [
        str(ROOT / "pipelines" / "train_generator.py"), f"run_dir={run}", f"video_tokenizer={tok}",
        "model.generator=masked", "model.preset=tiny", "model.overrides={max_grid: [4, 4, 4]}",
        "data.conditioning=none", "data.num_clips=8", "data.num_frames=10", "data.size=32", "data.batch=4",
        f"data.cache_dir={cache}", "sample_every=0", "optim.lr=2e-3", *COMMON],
    "vae_perceptual_crops_gan": lambda run, tok, cache: [
        str(ROOT / "tokenizers" / "train_tokenizer.py"), f"run_dir={run}", "model.kind=vae", *TOKENIZER, *COMMON],
    # DMD2 with its GAN term: the critic, its head and their optimizer state travel in the checkpoint
    "distill_dmd2_gan": lambda run, tok, cache: [
        str(ROOT / "pipelines" / "distill.py"), f"run_dir={run}", f"video_tokenizer={tok}",
        f"distill.teacher={tok.parent / 'teacher'}", "distill.gan_weight=0.1", "distill.student_every=2",
        "data.conditioning=class", "data.num_clips=8", "data.num_frames=5", "data.size=32", "data.batch=4",
        f"data.cache_dir={cache}", "sample_every=0", "optim.lr=1e-3", "ema_decay=0.9", *COMMON],
    # stage 1 of the block-causal generator: a noise level per chunk (diffusion forcing), class conditioning
    "causal_diffusion_forcing": lambda run, tok, cache: [
        str(ROOT / "pipelines" / "train_generator.py"), f"run_dir={run}", f"video_tokenizer={tok}",
        "model.generator=causal", "model.preset=tiny",
        "model.overrides={max_grid: [4, 8, 8], chunk_frames: 1, window_chunks: 2, sink_chunks: 1}",
        "data.conditioning=class", "data.num_clips=8", "data.num_frames=9", "data.size=32", "data.batch=4",
        f"data.cache_dir={cache}", "sample_every=0", "optim.lr=2e-3", "ema_decay=0.9", *COMMON],
    # stage 2: Self-Forcing, the causal student rolled out on its own chunks against a flow teacher (DMD2 + critic)
    "causal_self_forcing": lambda run, tok, cache: [
        str(ROOT / "pipelines" / "distill.py"), f"run_dir={run}", f"video_tokenizer={tok}",
        f"distill.teacher={tok.parent / 'teacher'}", f"distill.student={tok.parent / 'stage1'}",
        "distill.steps=[1, 2]", "distill.student_every=2", "data.conditioning=class", "data.num_clips=8",
        "data.num_frames=9", "data.size=32", "data.batch=4", f"data.cache_dir={cache}", "sample_every=0",
        "optim.lr=1e-3", "ema_decay=0.9", *COMMON],
    "vq_codebook": lambda run, tok, cache: [
        str(ROOT / "tokenizers" / "train_tokenizer.py"), f"run_dir={run}", "model.kind=vqvae",
        "model.overrides={quantizer: vq, codebook_size: 64, codebook_dim: 4}", *TOKENIZER, *COMMON],
}


def _latest_step(run_dir: Path) -> int:
    latest = run_dir / "checkpoints" / "latest"
    try:
        return int(latest.read_text().strip().split("_")[-1])
    except (OSError, ValueError):
        return 0


@pytest.mark.parametrize("trainer", [
    pytest.param("generator", marks=pytest.mark.slow),
    pytest.param("vae_perceptual_crops_gan", marks=pytest.mark.slow),
    pytest.param("vq_codebook", marks=pytest.mark.slow),
    pytest.param("distill_dmd2_gan", marks=pytest.mark.slow),
    pytest.param("causal_diffusion_forcing", marks=pytest.mark.slow),
    pytest.param("causal_self_forcing", marks=pytest.mark.slow),
])
def test_kill9_three_times_then_resume_is_bit_identical(trainer, tmp_path):
    torch.manual_seed(0)
    if trainer.startswith(("distill", "causal")):  # latents of a VAE (and a flow teacher for distillation)
        perturb_weights(CausalVAE.from_preset("tiny"), scale=0.02).save_pretrained(tmp_path / "tok")
        teacher = FlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=[4, 4, 4],
                                                   num_classes=len(shapes_class_names()))
        perturb_weights(teacher, scale=0.05).save_pretrained(tmp_path / "teacher")
        stage1 = CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=[4, 4, 4], chunk_frames=1,
                                                        window_chunks=2, sink_chunks=1,
                                                        num_classes=len(shapes_class_names()))
        perturb_weights(stage1, scale=0.05).save_pretrained(tmp_path / "stage1")
    else:
        tok = perturb_weights(CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4)), scale=0.02)
        tok.save_pretrained(tmp_path / "tok")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    straight, killed, cache = tmp_path / "straight", tmp_path / "killed", tmp_path / "cache"

    def _command(run_dir, tokenizer, cache):
        return [sys.executable, *TRAINERS[trainer](run_dir, tokenizer, cache)]

    subprocess.run(_command(straight, tmp_path / "tok", cache), check=True, env=env, capture_output=True, timeout=300)

    rng = random.Random(0)
    kill_after = sorted(rng.sample(range(2, STEPS - 2), 3))  # kill once the latest checkpoint reaches these steps
    for target in kill_after:
        proc = subprocess.Popen(_command(killed, tmp_path / "tok", cache), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while _latest_step(killed) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # a real kill -9, possibly in the middle of writing a checkpoint
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, \
            f"the run ended (exit status {proc.returncode}) at step {_latest_step(killed)}, before it could be killed"
        assert not (killed / "final").exists()
    subprocess.run(_command(killed, tmp_path / "tok", cache), check=True, env=env, capture_output=True, timeout=300)

    log = (killed / "log.jsonl").read_text()
    assert log.count("resumed from") >= 3
    steps = [entry["step"] for entry in map(json.loads, log.splitlines()) if "step" in entry]
    assert steps and steps == sorted(steps)  # the steps logged after a checkpoint were moved aside
    a = load_file(str(straight / "final" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(killed / "final" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    differences.record("killed 3x and resumed vs straight (weights)",
                       max((a[k].float() - b[k].float()).abs().max().item() for k in a), 0)
    assert all(torch.equal(a[k], b[k]) for k in a)

"""Data parallelism changes nothing but speed: 2 processes (``accelerate launch``, gloo DDP on CPU) with batch b
train the same weights, step by step, as 1 process with batch 2b over the same data order, within fp32 reduction
tolerance. Holds because every random draw is made per sample of the global batch (``vidgen.rng.RowGenerator``),
losses are per-sample means, and the adaptive GAN weight uses the all-reduced gradients. Also: pre-encoding a
dataset sharded over 2 processes writes the same cache as 1 process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import differences
from vidgen.testing import accelerate_launch, perturb_weights

ROOT = Path(__file__).resolve().parents[2]
STEPS = 3
# fp32: the claim is agreement to fp32 reduction order (bf16 rounds the two batch splits differently)
COMMON = [f"steps={STEPS}", "log_every=1", "ckpt_every=1", f"keep_checkpoints={STEPS}", "resume=", "threads=1",
          "optim.warmup_steps=1", "precision=fp32"]
VAE = ["model.kind=vae", "model.preset=tiny", "data.num_frames=5", "data.size=48", "data.crop=32", "data.num_clips=8",
       "data.eval_clips=2", "data.eval_frames=5", "loss.perceptual=0.1", "loss.perceptual_frames=1", "loss.gan=0.1",
       "loss.gan_start=1", "loss.adaptive_gan=true", "loss.disc_channels=8", "loss.disc_layers=2", "ema_decay=0.9",
       "eval_every=1000", "sample_every=1000", "stats_clips=2"]
FLOW = ["model.generator=flow", "model.preset=tiny", "model.overrides={max_grid: [4, 8, 8]}",
        "data.conditioning=class", "data.num_clips=8", "data.num_frames=5", "data.size=32", "sample_every=0",
        "optim.lr=2e-3", "ema_decay=0.9"]
# fp32, a few Adam steps: the 2-process gradients are sums in another order, so agreement is to rounding, not bits
ATOL, RTOL = 2e-5, 1e-4


def _run(script: Path, args: list[str], processes: int) -> None:
    if processes == 1:  # the plain script, no launcher: what a one-machine user runs
        done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    else:
        done = accelerate_launch(script, args, processes)
    assert done.returncode == 0, done.stderr[-3000:]


def _weights(run_dir: Path, step: int | None = None) -> dict:
    folder = run_dir / "final" if step is None else run_dir / "checkpoints" / f"step_{step:08d}"
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def _assert_close(a: dict, b: dict, what: str) -> float:
    assert a.keys() == b.keys()
    worst, worst_excess = 0.0, float("-inf")
    for name in a:
        diff = (a[name].float() - b[name].float()).abs()
        excess = (diff - RTOL * b[name].float().abs()).max().item()
        assert excess <= ATOL, f"{what}: {name} differs by {diff.max().item():.3g}"
        worst, worst_excess = max(worst, diff.max().item()), max(worst_excess, excess)
    return differences.record(what.split(",")[0] + " (weights)", worst, ATOL, rtol=RTOL, excess=worst_excess)


def _movement(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _check_equivalent(one: Path, two: Path) -> None:
    worst = 0.0
    for step in range(1, STEPS + 1):  # every optimizer step, not only the end
        worst = max(worst, _assert_close(_weights(two, step), _weights(one, step), f"2 processes vs 1, step {step}"))
    _assert_close(_weights(two), _weights(one), "2 processes vs 1, final (EMA) weights")
    # not vacuous: the steps moved the weights by far more than the tolerance and the observed difference
    moved = _movement(_weights(one, STEPS), _weights(one, 1))
    assert moved > 10 * ATOL and moved > 50 * worst, (moved, worst)


@pytest.mark.slow  # make test runs the tokenizer script under 2 processes in test_training_loop
def test_vae_trainer_two_processes_equal_one_with_double_batch(tmp_path):
    """Perceptual loss, random crops and flips, posterior sampling, GAN with the adaptive weight, EMA."""
    script = ROOT / "tokenizers" / "train_tokenizer.py"
    _run(script, [*VAE, *COMMON, f"run_dir={tmp_path / 'one'}", "data.video_batch=4", "data.image_batch=4"], 1)
    _run(script, [*VAE, *COMMON, f"run_dir={tmp_path / 'two'}", "data.video_batch=2", "data.image_batch=2"], 2)
    _check_equivalent(tmp_path / "one", tmp_path / "two")


@pytest.fixture(scope="module")
def live_vae(tmp_path_factory) -> Path:
    from vidgen.tokenizers import CausalVAE
    path = tmp_path_factory.mktemp("vae") / "tok"
    torch.manual_seed(0)
    perturb_weights(CausalVAE.from_preset("tiny"), scale=0.02).save_pretrained(path)
    return path


@pytest.mark.slow  # 45 s: make test runs the tokenizer trainer under 2 processes in test_training_loop
def test_flow_trainer_two_processes_equal_one_with_double_batch_and_sharded_cache(tmp_path, live_vae):
    """Noise, logit-normal timesteps, conditioning-frame tasks and CFG dropout; the pre-encoded cache too."""
    script = ROOT / "pipelines" / "train_generator.py"
    runs = {}
    for processes, batch in ((1, 4), (2, 2)):
        run_dir, cache = tmp_path / f"run{processes}", tmp_path / f"cache{processes}"
        _run(script, [*FLOW, *COMMON, f"run_dir={run_dir}", f"video_tokenizer={live_vae}", f"data.batch={batch}",
                      f"data.cache_dir={cache}"], processes)
        runs[processes] = run_dir, cache
    _check_equivalent(runs[1][0], runs[2][0])
    caches = [sorted(runs[p][1].glob("*.safetensors")) for p in (1, 2)]
    assert len(caches[0]) == len(caches[1]) == 1 and caches[0][0].name == caches[1][0].name  # same cache key
    one, two = (load_file(str(c[0])) for c in caches)
    assert one.keys() == two.keys() and one["x"].shape[0] == 8
    for name in one:  # the sharded encode joins the shares back into dataset order
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-6, msg=f"sharded cache {name}")


@pytest.mark.slow  # a script run and an accelerate launch
def test_causal_diffusion_forcing_two_processes_equal_one_with_double_batch(tmp_path, live_vae):
    """Stage 1 of the block-causal generator: a noise level per chunk of every clip, under teacher forcing."""
    script = ROOT / "pipelines" / "train_generator.py"
    causal = ["model.generator=causal", "model.preset=tiny",
              "model.overrides={max_grid: [4, 8, 8], chunk_frames: 1, window_chunks: 2, sink_chunks: 1}",
              *FLOW[3:]]
    for processes, batch in ((1, 4), (2, 2)):
        _run(script, [*causal, *COMMON, f"run_dir={tmp_path / f'run{processes}'}", f"video_tokenizer={live_vae}",
                      f"data.batch={batch}", f"data.cache_dir={tmp_path / 'cache'}"], processes)
    _check_equivalent(tmp_path / "run1", tmp_path / "run2")


@pytest.mark.slow  # two script runs and two accelerate launches
@pytest.mark.parametrize("method", ["dmd2", "consistency", "self_forcing"])
def test_distillation_two_processes_equal_one_with_double_batch(method, tmp_path, live_vae):
    """DMD2 (backward simulation, critic, GAN head), consistency distillation and Self-Forcing (a block-causal
    student rolled out on its own chunks, DMD2 against the flow teacher): the student 2 processes train equals the
    one 1 process trains, at every step."""
    from vidgen.generators import CausalFlowVideoTransformer, FlowVideoTransformer
    from vidgen.training.encode_cache import shapes_class_names
    torch.manual_seed(0)
    teacher = FlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=[4, 8, 8],
                                               num_classes=len(shapes_class_names()))
    perturb_weights(teacher, scale=0.05).save_pretrained(tmp_path / "teacher")
    script = ROOT / "pipelines" / "distill.py"
    extra = {"dmd2": ["distill.gan_weight=0.1"], "consistency": []}.get(method)
    if method == "self_forcing":
        student = CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=[4, 8, 8], chunk_frames=1,
                                                         window_chunks=2, sink_chunks=1,
                                                         num_classes=len(shapes_class_names()))
        perturb_weights(student, scale=0.05).save_pretrained(tmp_path / "stage1")
        method, extra = "dmd2", [f"distill.student={tmp_path / 'stage1'}", "distill.steps=[1, 2]", "data.num_frames=9"]
    args = [f"distill.teacher={tmp_path / 'teacher'}", f"distill.method={method}", "data.num_frames=5", *extra,
            f"video_tokenizer={live_vae}", "data.conditioning=class", "data.num_clips=8", "data.size=32",
            "sample_every=0", "optim.lr=1e-3", "ema_decay=0.9", f"data.cache_dir={tmp_path / 'cache'}", *COMMON]
    _run(script, [*args, f"run_dir={tmp_path / 'one'}", "data.batch=4"], 1)
    _run(script, [*args, f"run_dir={tmp_path / 'two'}", "data.batch=2"], 2)
    _check_equivalent(tmp_path / "one", tmp_path / "two")

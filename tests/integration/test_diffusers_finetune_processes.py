"""Fine-tuning a diffusers model across processes: a run killed with SIGKILL and started again ends with the weights
of an unbroken run, and 2 processes under ``accelerate launch`` (gloo DDP) train the LoRA adapter 1 process trains
with twice the batch."""
from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers import differences
from helpers.shards import kill9_at_first_checkpoint, write_captioned_clips
from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
from vidgen.testing import accelerate_launch
from vidgen.training import encode_dataset, load_config
from vidgen.training.finetune import FineTuneConfig, finetune

ATOL, RTOL = 2e-5, 1e-4  # fp32 Adam steps: the 2-process gradients are sums in another order
STEPS = 3


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune-processes")
    src = write_captioned_clips(root / "src", {f"{i}.mp4": (9, 32, 32, f"caption {i % 3}") for i in range(4)})
    tiny_native_pipeline("wan").save_pretrained(root / "wan")
    encode_dataset(src, root / "wan" / "vae", root / "shards", buckets="9x32x32", text_encoder=str(root / "wan"),
                   max_text_tokens=16, num_workers=0, show_progress=False, dtype="float32")
    return root


def _args(root, run_dir, *extra) -> list[str]:
    return [f"pipeline={root / 'wan'}", f"data.root={root / 'shards'}", "data.max_text_tokens=16", f"run_dir={run_dir}",
            "lora.rank=4", "log_every=1", "ckpt_every=1", f"keep_checkpoints={STEPS + 3}", "optim.warmup_steps=0",
            "optim.lr=5e-2", "precision=fp32", "threads=1", *extra]


def _weights(run_dir, step: int) -> dict:
    return load_file(str(run_dir / "checkpoints" / f"step_{step:08d}" / "diffusion_pytorch_model.safetensors"))


# 18 s: make test keeps this trainer's in-process resume (test_diffusers_finetune) and its SIGKILL case on shards
# (test_shard_training)
@pytest.mark.slow
def test_kill9_then_resume_is_bit_identical(wan, tmp_path):
    args = _args(wan, tmp_path / "killed", "steps=6", "data.batch=2")
    kill9_at_first_checkpoint([sys.executable, "-m", "vidgen.training.finetune", *args], tmp_path / "killed")
    assert not (tmp_path / "killed" / "final").exists()
    finetune(load_config(None, args, schema=FineTuneConfig))  # resumes from the latest checkpoint
    finetune(load_config(None, [*args, f"run_dir={tmp_path / 'straight'}"], schema=FineTuneConfig))
    a, b = _weights(tmp_path / "straight", 6), _weights(tmp_path / "killed", 6)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "resumed from" in (tmp_path / "killed" / "log.jsonl").read_text()
    lora = [load_file(str(tmp_path / r / "final" / "pytorch_lora_weights.safetensors")) for r in ("straight", "killed")]
    assert all(torch.equal(lora[0][k], lora[1][k]) for k in lora[0])


@pytest.mark.slow
def test_two_processes_train_the_adapter_one_process_trains(wan, tmp_path):
    # a small learning rate: Adam's first steps move every weight by about lr, whatever its gradient's size, so
    # gradients near Adam's eps (summed in another order on 2 processes) differ by a fraction of lr
    same = (f"steps={STEPS}", "optim.lr=1e-3")
    finetune(load_config(None, _args(wan, tmp_path / "one", *same, "data.batch=2"), schema=FineTuneConfig))
    done = accelerate_launch("-m", ["vidgen.training.finetune", *_args(wan, tmp_path / "two", *same, "data.batch=1")],
                             2)
    assert done.returncode == 0, done.stderr[-3000:]
    first = _weights(tmp_path / "one", 1)
    for step in range(1, STEPS + 1):
        a, b = _weights(tmp_path / "one", step), _weights(tmp_path / "two", step)
        for k in a:
            diff = (a[k] - b[k]).abs()
            excess = (diff - RTOL * a[k].abs()).max().item()
            differences.record("2 processes vs 1 (adapter weights)", diff.max().item(), ATOL, rtol=RTOL, excess=excess)
            assert excess <= ATOL, f"step {step}: {k} differs by {diff.max():.3g}"
    assert max((a[k] - first[k]).abs().max().item() for k in a) > 10 * ATOL  # the adapter moved: not vacuous

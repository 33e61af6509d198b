"""Shards under ``accelerate launch`` (gloo on CPU): 2 processes encode the same dataset as 1 (each writes its own
work units, the main process merges), and 2 processes with batch b per bucket train the same weights, step by step,
as 1 process with batch 2b, over two buckets (every process draws the same bucket at each step)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidgen.data.shards import ShardDataset
from helpers.shards import save_tiny_tokenizers, write_captioned_clips
from vidgen.testing import accelerate_launch

ROOT = Path(__file__).resolve().parents[2]
BUCKETS = "9x32x32,9x32x48"
STEPS = 4
ATOL, RTOL = 2e-5, 1e-4  # fp32 Adam steps: the 2-process gradients are sums in another order


def _ok(done) -> None:
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard-ddp")
    write_captioned_clips(root / "src", {f"{i}.mp4": (10, 32, 32 if i % 2 else 48, f"caption {i % 4}")
                                         for i in range(10)})
    save_tiny_tokenizers(root, ["vae"])
    return root


def _encode_args(root: Path, out: Path) -> list[str]:
    return ["data", "encode", str(root / "src"), "--tokenizer", str(root / "vae"), "--out", str(out), "--buckets",
            BUCKETS, "--max-text-tokens", "8", "--dtype", "float32", "--chunk-size", "3", "--workers", "0",
            "--threads", "1"]


@pytest.mark.slow  # in make test-slow, whose summary records it (two accelerate launches)
def test_two_processes_encode_what_one_encodes_then_train_the_same_weights(source, tmp_path):
    from vidgen.cli import main as cli
    assert cli(_encode_args(source, tmp_path / "one")) == 0  # 1 process: in this one
    _ok(accelerate_launch("-m", ["vidgen", *_encode_args(source, tmp_path / "two")], 2))  # accelerate launch -m vidgen
    one, two = ShardDataset(tmp_path / "one"), ShardDataset(tmp_path / "two")
    assert one.counts == two.counts == {"9x32x32": 5, "9x32x48": 5}
    for name in one.names:
        a, b = one.clips(name, range(one.counts[name])), two.clips(name, range(two.counts[name]))
        assert a[2] == b[2] and a[1] == b[1]  # same clips in the same order, same captions
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)
        assert all(torch.equal(x, y) for x, y in zip(one.text(a[1]), two.text(b[1])))  # every caption's embedding
    assert one.info["skipped"] == two.info["skipped"] == []

    script = ROOT / "pipelines" / "train_generator.py"
    common = [f"video_tokenizer={source / 'vae'}", "model.generator=flow", "model.preset=tiny",
              "model.overrides={max_grid: [4, 4, 6]}", "data.dataset=shards", f"data.root={tmp_path / 'one'}",
              "data.max_text_tokens=8", f"steps={STEPS}", "log_every=1", "ckpt_every=1", f"keep_checkpoints={STEPS}",
              "sample_every=0", "optim.warmup_steps=1", "optim.lr=2e-3", "precision=fp32", "threads=1", "resume="]
    buckets = "data.buckets=[{{shape: 9x32x32, batch: {}}}, {{shape: 9x32x48, batch: {}}}]"
    from vidgen.training import GeneratorTrainConfig, load_config, train_generator
    train_generator(load_config(None, [*common, f"run_dir={tmp_path / 'run1'}", buckets.format(4, 2)],
                                schema=GeneratorTrainConfig))
    _ok(accelerate_launch(script, [*common, f"run_dir={tmp_path / 'run2'}", buckets.format(2, 1)], 2))
    logs = [[json.loads(line) for line in (tmp_path / r / "log.jsonl").read_text().splitlines()]
            for r in ("run1", "run2")]
    drawn = [[m["bucket"] for m in log if "loss" in m] for log in logs]
    assert drawn[0] == drawn[1] and set(drawn[0]) == {"9x32x32", "9x32x48"}
    worst = 0.0
    for step in range(1, STEPS + 1):
        a, b = (load_file(str(tmp_path / r / "checkpoints" / f"step_{step:08d}" /
                              "diffusion_pytorch_model.safetensors")) for r in ("run1", "run2"))
        for k in a:
            diff = (a[k] - b[k]).abs()
            assert (diff - RTOL * a[k].abs()).max().item() <= ATOL, f"step {step}: {k} differs by {diff.max():.3g}"
            worst = max(worst, diff.max().item())
    first = load_file(str(tmp_path / "run1" / "checkpoints" / "step_00000001" / "diffusion_pytorch_model.safetensors"))
    moved = max((a[k] - first[k]).abs().max().item() for k in a)
    assert moved > 10 * ATOL and moved > 50 * worst, (moved, worst)  # not vacuous

"""Generators train on a shard dataset over two buckets (two token grids in one run) for all three kinds and sample
at each trained shape; the batches read through the prefetch thread equal the plain reads; a resumed run is
bit-identical, also after kill -9; a run refuses shards of another tokenizer or of the wrong kind."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidgen.data.shards import ShardBatches, ShardDataset
from vidgen.errors import ShardError
from vidgen.generators import Conditioning, generator_class
from helpers.shards import kill9_at_first_checkpoint, save_tiny_tokenizers, write_captioned_clips
from vidgen.testing import perturb_weights
from vidgen.tokenizers import CausalVQVAE
from vidgen.training import GeneratorTrainConfig, encode_dataset, load_config, train_generator

ROOT = Path(__file__).resolve().parents[2]
BUCKETS = "9x32x32,9x32x48"  # token grids (3, 4, 4) and (3, 4, 6) through the tiny tokenizers
KINDS = {"masked": "fsq", "flow": "vae", "autoregressive": "fsq"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard-train")
    captions = ["a red circle", "a blue square", "a green star"]
    src = write_captioned_clips(root / "src", {f"{i}.mp4": (10, 32, 32 if i % 2 else 48, captions[i % 3])
                                               for i in range(8)})
    save_tiny_tokenizers(root)
    for tok in ("vae", "fsq"):
        encode_dataset(src, root / tok, root / f"shards-{tok}", buckets=BUCKETS, max_text_tokens=8, num_workers=0,
                       show_progress=False)
    return root


def _config(run_dir, root, generator, *extra) -> GeneratorTrainConfig:
    tok = KINDS[generator]
    return load_config(None, [
        f"run_dir={run_dir}", f"video_tokenizer={root / tok}", f"model.generator={generator}", "model.preset=tiny",
        "model.overrides={max_grid: [4, 4, 6]}", "data.dataset=shards", f"data.root={root / f'shards-{tok}'}",
        "data.batch=2", "data.max_text_tokens=8", "steps=6", "log_every=1", "sample_every=0", "ckpt_every=2", "keep_checkpoints=3",
        "optim.warmup_steps=0", "optim.lr=2e-3", "threads=1", *extra], schema=GeneratorTrainConfig)


@pytest.mark.parametrize("generator", sorted(KINDS))
def test_trains_on_two_buckets_and_samples_at_each(generator, shards, tmp_path):
    extra = ["sample_every=6", "sample.num_inference_steps=2"] if generator == "flow" else []
    metrics = train_generator(_config(tmp_path / "run", shards, generator, *extra))
    assert metrics["step"] == 6 and torch.isfinite(torch.tensor(metrics["loss"]))
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [m for m in logs if "loss" in m]
    assert {m["bucket"] for m in steps} == {"9x32x32", "9x32x48"}  # both shapes in one run
    if extra:  # the periodic samples decode at the most common bucket's shape (a tie: the larger name)
        from vidgen.io import read_video
        video, _ = read_video(tmp_path / "run" / "samples" / "step_00000006.mp4")
        assert video.shape == (3, 9, 32, 2 * 48)  # two prompts side by side
    model = generator_class(generator).from_pretrained(tmp_path / "run" / "final").eval()
    cond = Conditioning(torch.randn(1, 8, 384), torch.ones(1, 8, dtype=torch.bool), torch.randn(1, 384))
    kw = {} if generator == "autoregressive" else {"num_inference_steps": 2}
    for grid in ((3, 4, 4), (3, 4, 6)):
        x = model.sample(grid, 1, cond, generator=torch.Generator().manual_seed(0), **kw)
        assert tuple(x.shape[-3:]) == grid


def test_prefetched_batches_equal_plain_reads(shards):
    ds = ShardDataset(shards / "shards-vae")
    batches = {"9x32x32": 2, "9x32x48": 1}
    fast = ShardBatches(ds, batches, seed=5, condition=Conditioning)
    plain = ShardBatches(ds, batches, seed=5, condition=Conditioning)
    for _ in range(7):
        name, x, cond = fast.take_batch()
        pname, idx = plain.sampler.take()
        px, pcond = plain.fetch(pname, idx)
        assert name == pname and torch.equal(x, px) and torch.equal(cond.text, pcond.text)
        assert fast.state_dict() == plain.state_dict()
    fast.close()


def test_resume_is_bit_identical(shards, tmp_path):
    train_generator(_config(tmp_path / "straight", shards, "masked"))
    step2 = tmp_path / "straight" / "checkpoints" / "step_00000002"
    train_generator(_config(tmp_path / "resumed", shards, "masked", f"resume={step2}"))
    a = load_file(str(tmp_path / "straight" / "final" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    import threading
    assert not [t for t in threading.enumerate() if t.name == "vidgen-shard-prefetch"]  # the reader has stopped


def test_kill9_then_resume_is_bit_identical(shards, tmp_path):
    args = [
        f"run_dir={tmp_path / 'killed'}", f"video_tokenizer={shards / 'vae'}", "model.generator=flow",
        "model.preset=tiny", "model.overrides={max_grid: [4, 4, 6]}", "data.dataset=shards",
        f"data.root={shards / 'shards-vae'}", "data.batch=2", "data.max_text_tokens=8", "steps=8", "log_every=1",
        "sample_every=0", "ckpt_every=1", "optim.warmup_steps=0", "optim.lr=2e-3", "threads=1"]
    cmd = [sys.executable, str(ROOT / "pipelines" / "train_generator.py"), *args]
    kill9_at_first_checkpoint(cmd, tmp_path / "killed")
    assert not (tmp_path / "killed" / "final").exists()
    train_generator(load_config(None, args, schema=GeneratorTrainConfig))  # resumes from the latest checkpoint
    train_generator(load_config(None, [*args, f"run_dir={tmp_path / 'straight'}"], schema=GeneratorTrainConfig))
    a = load_file(str(tmp_path / "straight" / "final" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "final" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "resumed from" in (tmp_path / "killed" / "log.jsonl").read_text()


def test_refuses_another_tokenizer_and_the_wrong_kind(shards, tmp_path):
    with pytest.raises(ShardError, match=r"shards-fsq: holds ids, but this generator trains on latents|fingerprint"):
        train_generator(_config(tmp_path / "a", shards, "flow", f"data.root={shards / 'shards-fsq'}"))
    torch.manual_seed(1)
    other = tmp_path / "other-fsq"
    perturb_weights(CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4)),
                    scale=0.03).save_pretrained(other)
    with pytest.raises(ShardError, match=r"shards-fsq: encoded with another tokenizer"):
        train_generator(_config(tmp_path / "b", shards, "masked", f"video_tokenizer={other}"))

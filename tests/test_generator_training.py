"""End to end: train tiny generators of all three kinds with the training entry point on built-in captioned clips
through real (tiny) tokenizers and the offline text encoder, then sample and decode videos of a frame count that
is not 4k+1; resume is bit-identical; the pre-encoded cache is keyed by the tokenizer's weights."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators import Conditioning, generator_class
from vidgen.tokenizers import CausalVAE, CausalVQVAE, load_tokenizer
from vidgen.training import GeneratorTrainConfig, load_config, train_generator
from vidgen.training.encode_cache import cache_key

NUM_FRAMES, SIZE = 10, 32  # 10 is not 4k+1: latent grid (4, 4, 4)
KINDS = {"masked": "fsq", "diffusion": "vae", "autoregressive": "fsq"}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    torch.manual_seed(0)
    vae = CausalVAE.from_preset("tiny")
    fsq = CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4))
    for model in (vae, fsq):  # live weights: the residual branches start at zero
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    vae.save_pretrained(root / "vae")
    fsq.save_pretrained(root / "fsq")
    return root


def _config(run_dir, tokenizer, generator, cache_dir, *extra) -> GeneratorTrainConfig:
    return load_config(None, [
        f"run_dir={run_dir}", f"tokenizer={tokenizer}", f"model.generator={generator}", "model.preset=tiny",
        "model.overrides={max_grid: [4, 4, 4]}", "data.num_clips=8", f"data.num_frames={NUM_FRAMES}",
        f"data.size={SIZE}", "data.batch=4", "data.max_text_tokens=8", f"data.cache_dir={cache_dir}",
        "steps=4", "log_every=1", "sample_every=0", "ckpt_every=2", "optim.warmup_steps=0", "optim.lr=2e-3",
        *extra], schema=GeneratorTrainConfig)


@pytest.mark.parametrize("generator", sorted(KINDS))
def test_train_sample_decode(generator, tokenizers, tmp_path):
    cfg = _config(tmp_path / "run", tokenizers / KINDS[generator], generator, tmp_path / "cache")
    metrics = train_generator(cfg)
    assert metrics["step"] == 4 and torch.isfinite(torch.tensor(metrics["loss"]))
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logs if "loss" in m] == [1, 2, 3, 4]
    model = generator_class(generator).from_pretrained(tmp_path / "run" / "final").eval()
    tokenizer = load_tokenizer(tokenizers / KINDS[generator])
    from vidgen.text import encode_prompts, load_text_encoder
    emb = encode_prompts(*load_text_encoder(), ["a red circle moving left on a black background"], 8)
    cond = Conditioning(emb.hidden, emb.mask, emb.pooled)
    steps = {} if generator == "autoregressive" else {"num_inference_steps": 2}
    x = model.sample((4, 4, 4), 1, cond, guidance_scale=2.0, generator=torch.Generator().manual_seed(0), **steps)
    video = model.decode_videos(tokenizer, x, NUM_FRAMES, SIZE, SIZE)
    assert video.shape == (1, 3, NUM_FRAMES, SIZE, SIZE) and torch.isfinite(video).all()


def test_resume_is_bit_identical(tokenizers, tmp_path):
    tok = tokenizers / "fsq"
    train_generator(_config(tmp_path / "straight", tok, "masked", tmp_path / "cache"))
    # as if killed after step 2: a new run resumes from the step-2 checkpoint and trains steps 3-4
    step2 = tmp_path / "straight" / "checkpoints" / "step_00000002"
    train_generator(_config(tmp_path / "resumed", tok, "masked", tmp_path / "cache", f"resume={step2}"))
    a = load_file(str(tmp_path / "straight" / "final" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "resumed from" in (tmp_path / "resumed" / "log.jsonl").read_text()


def test_init_from_continues_a_saved_generator(tokenizers, tmp_path):
    """init_from: a new run (fresh optimizer and schedule) starts from a saved generator's weights, e.g. a shipped
    pipeline's transformer, with other training-only settings (label smoothing); another architecture is refused
    by name."""
    tok = tokenizers / "fsq"
    train_generator(_config(tmp_path / "first", tok, "masked", tmp_path / "cache", "steps=2", "ema_decay=0"))
    start = load_file(str(tmp_path / "first" / "final" / "diffusion_pytorch_model.safetensors"))
    train_generator(_config(tmp_path / "second", tok, "masked", tmp_path / "cache", "steps=1", "ema_decay=0",
                            "optim.lr=1e-9", "model.overrides.label_smoothing=0.0",
                            f"init_from={tmp_path / 'first' / 'final'}"))
    assert json.loads((tmp_path / "second" / "final" / "config.json").read_text())["label_smoothing"] == 0.0
    after = load_file(str(tmp_path / "second" / "final" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.allclose(after[k], start[k], atol=1e-6) for k in start)
    assert "initialised from" in (tmp_path / "second" / "log.jsonl").read_text()
    with pytest.raises(ConfigError, match="init_from.*differs"):
        train_generator(_config(tmp_path / "third", tok, "masked", tmp_path / "cache", "steps=1",
                                "model.overrides={max_grid: [4, 4, 4], depth: 3}",
                                f"init_from={tmp_path / 'first' / 'final'}"))


def test_cache_key_follows_tokenizer_weights(tokenizers, tmp_path):
    cfg = _config(tmp_path / "r", tokenizers / "fsq", "masked", tmp_path / "cache")
    tok = load_tokenizer(tokenizers / "fsq")
    model = generator_class("masked").from_preset("tiny", vocab_size=tok.vocab_size)
    key = cache_key(model, tok, cfg.data)
    assert cache_key(model, tok, cfg.data) == key
    with torch.no_grad():
        next(tok.parameters()).add_(1e-3)
    assert cache_key(model, tok, cfg.data) != key
    cfg.data.num_frames = 6
    assert cache_key(model, load_tokenizer(tokenizers / "fsq"), cfg.data) != key


def test_wrong_tokenizer_and_generator_names(tokenizers, tmp_path):
    with pytest.raises(InvalidInputError, match="tokenizer"):
        train_generator(_config(tmp_path / "a", tokenizers / "vae", "masked", tmp_path / "cache"))
    with pytest.raises(InvalidInputError, match="tokenizer"):
        train_generator(_config(tmp_path / "b", tokenizers / "fsq", "diffusion", tmp_path / "cache"))
    with pytest.raises(ConfigError, match="generator"):
        train_generator(_config(tmp_path / "c", tokenizers / "fsq", "gan", tmp_path / "cache"))
    with pytest.raises(ConfigError, match="conditioning"):
        train_generator(_config(tmp_path / "d", tokenizers / "fsq", "masked", tmp_path / "cache",
                                "data.conditioning=audio"))


def test_script_entry_point_reports_errors(tmp_path):
    script = Path(__file__).resolve().parents[1] / "pipelines" / "train_generator.py"
    proc = subprocess.run([sys.executable, str(script), f"run_dir={tmp_path}", "tokenizer="],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "tokenizer" in proc.stderr


def test_caption_repeats_oversample_by_caption_word(tokenizers, tmp_path):
    from vidgen.training.data import repeat_by_caption
    captions = ["a red square rotating", "a blue star moving up", "a red star rotating", "a cyan circle growing"]
    assert repeat_by_caption(captions, {"rotating": 3, "red": 2}) == [0, 0, 0, 1, 2, 2, 2, 3]
    with pytest.raises(ConfigError, match="no training caption contains the word 'spinning'"):
        repeat_by_caption(captions, {"spinning": 2})
    with pytest.raises(ConfigError, match="caption_repeats"):
        _config(tmp_path / "bad", tokenizers / "vae", "diffusion", tmp_path / "cache", "data.caption_repeats={up: 0}")
    # in a run: every shapes caption ends in "background", so each of the 8 clips is drawn 3 times per epoch
    train_generator(_config(tmp_path / "run", tokenizers / "vae", "diffusion", tmp_path / "cache", "steps=2",
                            "data.caption_repeats={background: 3}"))
    assert "24 draws per epoch of 8 clips" in (tmp_path / "run" / "log.jsonl").read_text()
    with pytest.raises(ConfigError, match="no training caption contains the word 'zebra'"):
        train_generator(_config(tmp_path / "run2", tokenizers / "vae", "diffusion", tmp_path / "cache", "steps=1",
                                "data.caption_repeats={zebra: 2}"))


def test_latent_footprint_follows_the_causal_frame_groups():
    from vidgen.training.encode_cache import latent_footprint
    coverage = torch.zeros(4, 17, 64, 64)  # 17 frames -> 5 latent frames: {0}, {1-4}, {5-8}, {9-12}, {13-16}
    for clip, (frame, y, x) in enumerate([(0, 0, 0), (4, 9, 0), (5, 63, 63), (16, 8, 40)]):
        coverage[clip, frame, y, x] = 0.3  # an antialiased edge pixel counts
    foot = latent_footprint(coverage, (5, 8, 8))
    assert foot.shape == (4, 5, 8, 8) and foot.dtype == torch.bool
    assert foot.sum().item() == 4
    assert [tuple(torch.nonzero(f)[0].tolist()) for f in foot] == [(0, 0, 0), (1, 1, 0), (2, 7, 7), (4, 1, 5)]
    assert latent_footprint(torch.zeros(1, 9, 32, 32), (3, 4, 4)).shape == (1, 3, 4, 4)  # non-causal 9 = 3 x 3 too
    with pytest.raises(ConfigError, match="latent grid"):
        latent_footprint(coverage, (5, 7, 8))


def test_foreground_weight_trains_on_cached_footprints(tokenizers, tmp_path):
    cfg = _config(tmp_path / "run", tokenizers / "vae", "diffusion", tmp_path / "cache", "steps=2",
                  "data.foreground_weight=3")
    tok = load_tokenizer(tokenizers / "vae")
    model = generator_class("diffusion").from_preset("tiny", in_channels=tok.config.latent_channels)
    plain = _config(tmp_path / "p", tokenizers / "vae", "diffusion", tmp_path / "cache")
    assert cache_key(model, tok, cfg.data) != cache_key(model, tok, plain.data)  # and unweighted keys are unchanged
    metrics = train_generator(cfg)
    assert metrics["step"] == 2 and torch.isfinite(torch.tensor(metrics["loss"]))
    cached = load_file(str(next((tmp_path / "cache").glob("*.safetensors"))))
    foot = cached["foreground"]
    plain.steps = 1
    train_generator(plain)

    def first_loss(run):
        return next(json.loads(line)["loss"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()
                    if '"loss"' in line)
    assert abs(first_loss("run") - first_loss("p")) > 1e-5  # same seed, clips and noise: only the weights differ
    assert foot.shape == (8, 4, 4, 4) and foot.dtype == torch.bool
    assert 0.05 < foot.float().mean() < 0.8  # the object touches some latent positions, not all
    for bad in ("data.foreground_weight=-1", "data.foreground_weight=true"):
        with pytest.raises(ConfigError, match="foreground_weight"):
            _config(tmp_path / "bad", tokenizers / "vae", "diffusion", tmp_path / "cache", bad)
    with pytest.raises(ConfigError, match="shapes dataset"):
        _config(tmp_path / "bad", tokenizers / "vae", "diffusion", tmp_path / "cache", "data.foreground_weight=2",
                "data.dataset=folder", f"data.root={tmp_path}")

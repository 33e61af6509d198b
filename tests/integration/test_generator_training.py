"""End to end: train tiny generators of all three kinds with the training entry point on built-in captioned clips
through real (tiny) tokenizers and the offline text encoder, then sample and decode videos of a frame count that
is not 4k+1; resume is bit-identical; the pre-encoded cache is keyed by the tokenizer's weights."""
from __future__ import annotations

import json
import runpy
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
KINDS = {"masked": "fsq", "flow": "vae", "autoregressive": "fsq"}


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
        f"run_dir={run_dir}", f"video_tokenizer={tokenizer}", f"model.generator={generator}", "model.preset=tiny",
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


def test_a_folder_cache_follows_the_folder_and_a_folder_run_needs_its_root_and_captions(tokenizers, tmp_path):
    """A folder's encoded clips are keyed by what it holds: new videos or new captions are encoded again. A folder
    run without data.root, or a text-conditioned one without captions, is refused before any encoding."""
    import os

    from vidgen.io import write_video
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "a.mp4", torch.zeros(3, 9, 32, 32), fps=8)
    (folder / "metadata.jsonl").write_text('{"file_name": "a.mp4", "text": "a red circle"}\n')
    cfg = _config(tmp_path / "r", tokenizers / "fsq", "masked", tmp_path / "cache", "data.dataset=folder",
                  f"data.root={folder}")
    tok = load_tokenizer(tokenizers / "fsq")
    model = generator_class("masked").from_preset("tiny", vocab_size=tok.vocab_size)
    key = cache_key(model, tok, cfg.data)
    assert cache_key(model, tok, cfg.data) == key
    (folder / "metadata.jsonl").write_text('{"file_name": "a.mp4", "text": "a blue square"}\n')
    assert cache_key(model, tok, cfg.data) != key
    key = cache_key(model, tok, cfg.data)
    write_video(folder / "b.mp4", torch.zeros(3, 9, 32, 32), fps=8)
    os.remove(folder / "metadata.jsonl")
    assert cache_key(model, tok, cfg.data) != key
    with pytest.raises(ConfigError, match=r"no captions for data.conditioning='text'.*metadata.jsonl.*"
                                          r"data.conditioning=none"):
        train_generator(cfg)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    with pytest.raises(ConfigError, match="data.root, which is not set: give data.root=FOLDER"):
        train_generator(_config(tmp_path / "r2", tokenizers / "fsq", "masked", tmp_path / "cache",
                                "data.dataset=folder"))


def test_cache_key_ignores_where_the_tokenizer_was_loaded_from(tokenizers, tmp_path):
    """The same weights copied to a second folder (each shipped pipeline carries its own) share one cache."""
    import shutil
    copy = shutil.copytree(tokenizers / "fsq", tmp_path / "elsewhere" / "vqvae")
    cfg = _config(tmp_path / "r", tokenizers / "fsq", "masked", tmp_path / "cache")
    tok, tok_copy = load_tokenizer(tokenizers / "fsq"), load_tokenizer(copy)
    assert tok.config["_name_or_path"] != tok_copy.config["_name_or_path"]
    model = generator_class("masked").from_preset("tiny", vocab_size=tok.vocab_size)
    assert cache_key(model, tok, cfg.data) == cache_key(model, tok_copy, cfg.data)


def test_wrong_tokenizer_and_generator_names(tokenizers, tmp_path):
    with pytest.raises(InvalidInputError, match="tokenizer"):
        train_generator(_config(tmp_path / "a", tokenizers / "vae", "masked", tmp_path / "cache"))
    with pytest.raises(InvalidInputError, match="tokenizer"):
        train_generator(_config(tmp_path / "b", tokenizers / "fsq", "flow", tmp_path / "cache"))
    with pytest.raises(ConfigError, match="generator"):
        train_generator(_config(tmp_path / "c", tokenizers / "fsq", "gan", tmp_path / "cache"))
    with pytest.raises(ConfigError, match="conditioning"):
        train_generator(_config(tmp_path / "d", tokenizers / "fsq", "masked", tmp_path / "cache",
                                "data.conditioning=audio"))


def test_script_entry_point_reports_errors(tmp_path, capsys):
    """The script's ``main`` (what ``python pipelines/train_generator.py`` exits with) turns a bad config into exit
    status 2 and a message naming the key."""
    script = Path(__file__).resolve().parents[2] / "pipelines" / "train_generator.py"
    main = runpy.run_path(str(script), run_name="train_generator")["main"]
    assert main([f"run_dir={tmp_path}", "video_tokenizer="]) == 2
    assert "video_tokenizer" in capsys.readouterr().err


def test_old_generator_name_and_tokenizer_key_still_load(tmp_path):
    """Older configs: ``generator: diffusion`` is the flow generator and ``tokenizer:`` the video tokenizer, each
    with a FutureWarning naming the new spelling and the version that removes the old one; both spellings at once
    are refused."""
    with pytest.warns(FutureWarning, match="model.generator='diffusion' is deprecated.*model.generator: flow"):
        cfg = load_config(None, ["model.generator=diffusion"], schema=GeneratorTrainConfig)
    assert cfg.model.generator == "flow" and generator_class("flow").__name__ == "FlowVideoTransformer"
    with pytest.warns(FutureWarning, match=r"'tokenizer' is deprecated, write video_tokenizer .*vidgen 0\.3"):
        cfg = load_config(None, [f"tokenizer={tmp_path}"], schema=GeneratorTrainConfig)
    assert cfg.video_tokenizer == str(tmp_path) and "tokenizer" not in cfg.to_dict()
    with pytest.raises(ConfigError, match="'tokenizer' \\(deprecated\\) and 'video_tokenizer' are both set"):
        load_config(None, [f"tokenizer={tmp_path}", f"video_tokenizer={tmp_path}"], schema=GeneratorTrainConfig)
    with pytest.raises(ConfigError, match=r"model.generator='gan' is unknown; choose from "
                                          r"\['autoregressive', 'causal', 'flow', 'masked'\]"):
        load_config(None, ["model.generator=gan"], schema=GeneratorTrainConfig)


@pytest.mark.parametrize("key", ["data.caption_repeats={rotating: 3}", "data.foreground_weight=2"])
def test_removed_experiment_flags_are_named(key, tmp_path):
    """Flags only unshipped experiments used have left the library; an old config names the key and where the
    experiment went, instead of the generic unknown-key error."""
    with pytest.raises(ConfigError, match=rf"'{key.split('=')[0]}': it was an experiment flag, removed from the "
                                          r"library \(see experiments/README.md\)"):
        load_config(None, [key], schema=GeneratorTrainConfig)

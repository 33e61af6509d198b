"""Representation alignment (REPA) as a generator-training option (vidgen.training.repa): off by default and then the
step is the generator's own; on, the loss is the generator loss plus weight x the alignment term, computed here again
directly; the term's gradients reach the projector and the blocks up to ``repa.depth`` only; the encoder is frozen;
a resumed run restores the projector and is bit-identical; bad settings are refused by name. Tiny models: a tiny
VAE, a 2-block flow generator on 10x32x32 clips (4x4x4 latents), no text encoder."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vidgen.errors import ConfigError, MissingWeightsError, UnsupportedError
from vidgen.generators import FlowVideoTransformer, MaskedVideoTransformer
from vidgen.metrics.perceptual import PerceptualDistance
from vidgen.metrics.weights import package_file
from vidgen.testing import perturb_weights
from vidgen.tokenizers import CausalVAE, load_tokenizer
from vidgen.tokenizers.tokens import tokens_to_video
from vidgen.training import GeneratorTrainConfig, load_config, train_generator
from vidgen.training.checkpoint import load_state
from vidgen.training.data import step_generator
from vidgen.training.generator_task import GeneratorTask, _LossModule
from vidgen.training.repa import STATE_KEY, FrozenEncoder, RepaConfig, check_repa, representative_frames
from vidgen.training.runtime import make_accelerator

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_FRAMES, SIZE = 10, 32  # latents (4, 4, 4) under the tiny VAE (4x temporal, 8x spatial)


def _weights_present() -> bool:
    try:
        package_file("stlpips_pytorch", "weights/vST0.0/vgg_shift_tolerant.pth")
        return True
    except MissingWeightsError:
        return False


@pytest.fixture(autouse=True)
def _encoder(monkeypatch):
    """The real ST-LPIPS trunk when its package is installed; else the same architecture with random weights, so the
    plumbing is tested on any machine (the real weights have their own test, which skips then)."""
    if not _weights_present():
        import vidgen.metrics.perceptual as perceptual
        monkeypatch.setattr(perceptual, "load_perceptual", lambda kind, net: PerceptualDistance(net, True))


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("repa")
    torch.manual_seed(0)
    perturb_weights(CausalVAE.from_preset("tiny"), scale=0.02).save_pretrained(root / "vae")
    return root / "vae"


def _config(tmp_path, vae_folder, *extra) -> GeneratorTrainConfig:
    return load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"video_tokenizer={vae_folder}", "model.generator=flow", "model.preset=tiny",
        "model.overrides={max_grid: [4, 4, 4], patch_size: [1, 1, 1]}", "data.conditioning=none",
        "data.num_clips=8", f"data.num_frames={NUM_FRAMES}", f"data.size={SIZE}", "data.batch=4",
        f"data.cache_dir={tmp_path.parent / 'repa-cache'}", "precision=fp32", "steps=4", "log_every=1",
        "sample_every=0", "ckpt_every=2", "optim.warmup_steps=0", "optim.lr=2e-3", *extra], schema=GeneratorTrainConfig)


def _task(cfg) -> GeneratorTask:
    acc, _ = make_accelerator(cfg.precision)
    return GeneratorTask(cfg, acc, lambda msg: None)


def _batch(task: GeneratorTask, seed: int = 0):
    """The first step's clean latents, as the task's sampler draws them."""
    sampler = task.make_sampler(seed, 0, 1)
    return task.data.x[torch.tensor(sampler.take(task.cfg.data.batch))]


def test_off_by_default_builds_nothing_and_the_step_is_the_generators_loss(tmp_path, vae_folder):
    cfg = _config(tmp_path, vae_folder)
    assert cfg.repa == RepaConfig() and cfg.repa.weight == 0.0 and not cfg.repa.enabled
    task = _task(cfg)
    assert task.repa is None and type(task.module) is _LossModule and STATE_KEY not in task.extra_state
    assert [id(p) for p in task.params] == [id(p) for p in task.model.parameters()]
    assert not task.model.backbone.blocks[0]._forward_hooks
    out = task.step(task.module, task.make_sampler(cfg.seed, 0, 1), 0, step_generator(cfg.seed, 0))
    loss, logs = task.model.loss(_batch(task, cfg.seed), None, step_generator(cfg.seed, 0))
    assert torch.equal(out.loss, loss) and set(out.logs) == set(logs)


def _direct_target(task, x):
    """The target features computed without the module: decode, the representative frames, the trunk, pooled."""
    tok = task.video_tokenizer
    video = tokens_to_video(tok, x, NUM_FRAMES, SIZE, SIZE)
    frames = representative_frames(x.shape[2], 4, NUM_FRAMES)
    assert frames == [0, 2, 6, 9]  # latent frame k >= 1 covers pixel frames 4k-3..4k; 10 frames end at 9
    enc = task.repa.encoder
    feats = torch.stack([enc(video[:, :, f]) for f in frames], dim=2)  # (B, C, t, h_f, w_f)
    return torch.stack([F.adaptive_avg_pool2d(feats[:, :, i], x.shape[-2:]) for i in range(x.shape[2])], dim=2)


def test_the_loss_is_the_generator_loss_plus_weight_times_the_alignment(tmp_path, vae_folder):
    cfg = _config(tmp_path, vae_folder, "repa.weight=0.5", "repa.depth=1", "repa.projector_dim=32")
    task = _task(cfg)
    perturb_weights(task.model)  # live residual branches: the zero-initialised gates pass no gradient
    x = _batch(task, cfg.seed)
    out = task.step(task.module, task.make_sampler(cfg.seed, 0, 1), 0, step_generator(cfg.seed, 0))
    assert not task.model.backbone.blocks[0]._forward_hooks  # the hook lives for one loss call
    # the generator's loss, unchanged by the hook
    loss, _ = task.model.loss(x, None, step_generator(cfg.seed, 0))
    assert torch.equal(out.logs["generator_loss"], loss.detach())
    # the alignment term, computed directly: block 0's output tokens, the projector, the target features
    seen = []
    handle = task.model.backbone.blocks[0].register_forward_hook(lambda m, a, o: seen.append(o))
    task.model.loss(x, None, step_generator(cfg.seed, 0))
    handle.remove()
    target = _direct_target(task, x)
    assert target.shape == (4, task.repa.encoder.channels, 4, 4, 4)
    with torch.no_grad():
        cos = F.cosine_similarity(task.repa.projector(seen[0]), target.flatten(2).transpose(1, 2), dim=-1)
    torch.testing.assert_close(out.logs["repa"], -cos.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, loss + 0.5 * out.logs["repa"], rtol=0, atol=1e-6)


def test_the_terms_gradients_reach_the_projector_and_the_blocks_up_to_depth_only(tmp_path, vae_folder):
    cfg = _config(tmp_path, vae_folder, "repa.weight=0.5", "repa.depth=1", "repa.projector_dim=32")
    task = _task(cfg)
    perturb_weights(task.model)
    x = _batch(task, cfg.seed)
    target = task.repa.target(x, task.clip_pixels(""))
    assert not target.requires_grad

    def grads(fn):
        task.model.zero_grad(set_to_none=True)
        task.repa.projector.zero_grad(set_to_none=True)
        fn().backward()
        named = list(task.model.named_parameters()) + [(f"projector.{n}", p)
                                                       for n, p in task.repa.projector.named_parameters()]
        return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in named}

    total = grads(lambda: task.module(x, None, step_generator(cfg.seed, 0), repa_target=target)[0])
    alone = grads(lambda: task.model.loss(x, None, step_generator(cfg.seed, 0))[0])
    term = {n: total[n] - alone[n] for n in total}  # the alignment term's share
    changed = {n for n, g in term.items() if g.abs().max() > 0}
    assert {n for n in changed if n.startswith("projector.")} == {f"projector.{n}" for n, _ in
                                                                  task.repa.projector.named_parameters()}
    assert any(n.startswith("backbone.blocks.0.") for n in changed)
    assert not any(n.startswith(("backbone.blocks.1.", "backbone.final_", "head.")) for n in changed), changed
    assert all(alone[n].abs().max() == 0 for n in alone if n.startswith("projector."))
    # the encoder is frozen: no parameter takes a gradient and it stays in eval mode
    task.module.train()
    task.repa.encoder.train()
    assert not task.repa.encoder.training and not any(p.requires_grad for p in task.repa.encoder.parameters())
    assert all(p.grad is None for p in task.repa.encoder.parameters())


def test_the_gradient_clip_and_the_logged_norm_cover_the_projector(tmp_path, vae_folder):
    """The trainer clips the model's and the projector's gradients as one vector and logs that vector's norm."""
    from vidgen.training.trainer import optimizer_step
    cfg = _config(tmp_path, vae_folder, "repa.weight=0.5", "repa.depth=1", "repa.projector_dim=32")
    task = _task(cfg)
    perturb_weights(task.model)
    assert [id(p) for p in task.clipped_params] == [id(p) for p in task.repa.projector.parameters()]
    opt = torch.optim.SGD(task.params, lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    out = task.step(task.module, task.make_sampler(cfg.seed, 0, 1), 0, step_generator(cfg.seed, 0))
    clip = 1e-4  # far below the norm: every gradient is scaled by clip / norm
    gnorm = float(optimizer_step(task.acc, out.loss, task.model, opt, sched, clip, None, task.clipped_params))
    norm = lambda params: torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    projector = list(task.repa.projector.parameters())
    assert gnorm > 100 * clip and norm(projector) > 0
    torch.testing.assert_close(float(norm([*task.model.parameters(), *projector])), clip * gnorm / (gnorm + 1e-6),
                               rtol=1e-4, atol=0)
    assert float(norm(projector)) <= clip * (1 + 1e-4)  # clipped with the model's, not left at its own size


def test_resume_restores_the_projector_and_is_bit_identical(tmp_path, vae_folder):
    extra = ("repa.weight=0.5", "repa.depth=1", "repa.projector_dim=16")
    straight = _config(tmp_path / "a", vae_folder, *extra)
    train_generator(straight)
    step2 = tmp_path / "a" / "run" / "checkpoints" / "step_00000002"
    train_generator(_config(tmp_path / "b", vae_folder, *extra, f"resume={step2}"))
    a = load_file(str(tmp_path / "a" / "run" / "final" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "final" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any("projector" in k for k in a)  # the shipped model has no projector ...
    FlowVideoTransformer.from_pretrained(tmp_path / "a" / "run" / "final")  # ... and loads without it
    start = load_state(step2)[STATE_KEY]
    pa = load_state(tmp_path / "a" / "run" / "checkpoints" / "step_00000004")[STATE_KEY]
    pb = load_state(tmp_path / "b" / "run" / "checkpoints" / "step_00000004")[STATE_KEY]
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], start[k]) for k in pa)  # trained between the checkpoints
    assert "resumed from" in (tmp_path / "b" / "run" / "log.jsonl").read_text()


def test_the_real_encoder_loads_offline_frozen_and_pools_to_the_token_grid(monkeypatch):
    monkeypatch.undo()
    try:
        enc = FrozenEncoder("stlpips-vgg", 3)
    except MissingWeightsError as err:
        pytest.skip(f"the stlpips-pytorch package (its ST-LPIPS VGG weights) is not installed: {err}")
    assert len(enc.weights_sha256["trunk+linear"]) == 64 and enc.channels == 256
    assert enc.map_size(64, 64) == (17, 17)  # pools to the 16x16 token grid of a 64x64 clip (4x VAE, 1x1x1 patches)
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    frames = torch.rand(2, 3, 64, 64, requires_grad=True) * 2 - 1
    feats = enc(frames)
    assert feats.shape == (2, 256, 17, 17) and torch.isfinite(feats).all() and feats.abs().sum() > 0


def test_bad_settings_are_refused_by_name(tmp_path, vae_folder):
    with pytest.raises(ConfigError, match=r"repa\.weight must be a number >= 0, got -1"):
        load_config(None, ["repa.weight=-1"], schema=GeneratorTrainConfig)
    with pytest.raises(ConfigError, match=r"repa\.encoder='i3d' is FVD's feature network"):
        load_config(None, ["repa.encoder=i3d"], schema=GeneratorTrainConfig)
    with pytest.raises(ConfigError, match=r"repa\.encoder='dino' is unknown; choose one of"):
        load_config(None, ["repa.encoder=dino"], schema=GeneratorTrainConfig)
    with pytest.raises(ConfigError, match=r"repa\.layer must be a whole number >= 1 and <= 5, got 6"):
        load_config(None, ["repa.layer=6"], schema=GeneratorTrainConfig)
    flow = FlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=(4, 4, 4))
    with pytest.raises(ConfigError, match=r"repa\.depth=3: this flow model has 2 transformer blocks; set repa\.depth "
                                          r"to 1\.\.2"):
        check_repa(RepaConfig(weight=1.0, depth=3), "flow", flow)
    masked = MaskedVideoTransformer.from_preset("tiny", vocab_size=64, max_grid=(4, 4, 4))
    with pytest.raises(UnsupportedError, match=r"repa: model\.generator='masked' has no continuous latent tokens"):
        check_repa(RepaConfig(weight=1.0), "masked", masked)
    with pytest.raises(UnsupportedError, match=r"repa: sp_size=2 splits each clip's tokens"):
        check_repa(RepaConfig(weight=1.0, depth=1), "flow", flow, sp_size=2)
    with pytest.raises(UnsupportedError, match=r"repa: DistillTask replaces the generator's loss"):
        check_repa(RepaConfig(weight=1.0, depth=1), "flow", flow, task="DistillTask")
    routing = types.SimpleNamespace(ratio=0.5, span=lambda depth: (0, 1))
    with pytest.raises(UnsupportedError, match=r"repa\.depth=1: block 0 is in the routed span \[0, 1\)"):
        check_repa(RepaConfig(weight=1.0, depth=1), "flow", flow, routing=routing)
    check_repa(RepaConfig(weight=1.0, depth=2), "flow", flow, routing=routing)  # after the span: every token
    with pytest.raises(ConfigError, match=r"repa\.layer=5: stlpips-vgg's map of 32x32 frames is \d+x\d+, smaller "
                                          r"than the 4x4 token grid; choose an earlier layer"):
        _task(_config(tmp_path, vae_folder, "repa.weight=1", "repa.depth=1", "repa.layer=5"))


@pytest.mark.slow  # a shard dataset and a training run
def test_on_shards_of_two_buckets_with_text_prefix_tokens(tmp_path):
    """The shard path: each batch's bucket gives the pixel size its targets are decoded at; the text prompt's prefix
    tokens are left out of the aligned tokens."""
    import json

    from helpers.shards import save_tiny_tokenizers, write_captioned_clips
    from vidgen.training import encode_dataset
    src = write_captioned_clips(tmp_path / "src", {f"{i}.mp4": (10, 32, 32 if i % 2 else 48, "a red circle")
                                                   for i in range(4)})
    save_tiny_tokenizers(tmp_path)
    encode_dataset(src, tmp_path / "vae", tmp_path / "shards", buckets="9x32x32,9x32x48", max_text_tokens=8,
                   num_workers=0, show_progress=False)
    train_generator(load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"video_tokenizer={tmp_path / 'vae'}", "model.generator=flow",
        "model.preset=tiny", "model.overrides={max_grid: [4, 4, 6]}", "data.dataset=shards",
        f"data.root={tmp_path / 'shards'}", "data.batch=2", "data.max_text_tokens=8", "steps=4", "log_every=1",
        "sample_every=0", "ckpt_every=4", "optim.warmup_steps=0", "precision=fp32", "repa.weight=0.5", "repa.depth=1",
        "repa.projector_dim=16"], schema=GeneratorTrainConfig))
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [m for m in steps if "loss" in m]
    assert {m["bucket"] for m in steps} == {"9x32x32", "9x32x48"}
    assert all(abs(m["loss"] - m["generator_loss"] - 0.5 * m["repa"]) < 1e-5 and -1 <= m["repa"] <= 1 for m in steps)

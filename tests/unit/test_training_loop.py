"""Tokenizer training loop: smoke run with GAN + EMA, exact resume, config handling, loss pieces."""
import json

import pytest
import torch
from safetensors.torch import load_file

from vidgen.errors import ConfigError, VidgenError
from vidgen.training import load_config, run_status, train
from vidgen.training.checkpoint import load_state
from vidgen.training.data import CachedClips, EpochSampler
from vidgen.training.losses import (PerceptualLoss, adaptive_gan_weight, hinge_d_loss, reconstruction_loss,
                                   spatial_difference_loss, temporal_difference_loss)

TINY = [
    "model.preset=tiny", "data.num_frames=5", "data.size=16", "data.num_clips=6", "data.video_batch=2",
    "data.image_batch=2", "data.eval_clips=2", "data.eval_frames=5", "loss.perceptual=0", "loss.gan=0.1",
    "loss.gan_start=1", "loss.disc_channels=8", "loss.disc_layers=2", "optim.warmup_steps=1", "ema_decay=0.9",
    "log_every=1", "eval_every=100", "sample_every=100", "stats_clips=2", "keep_checkpoints=5", "ckpt_every=1",
]


def _tensors_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_two_steps_then_resume_matches_uninterrupted(tmp_path):
    run_a = tmp_path / "a"
    train(load_config(None, TINY + [f"run_dir={run_a}", "steps=2", "resume="]))
    ckpts = run_a / "checkpoints"
    assert (ckpts / "latest").read_text() == "step_00000002"
    assert (run_a / "final" / "config.json").exists() and (run_a / "samples" / "step_00000002.mp4").exists()
    final_cfg = json.loads((run_a / "final" / "config.json").read_text())
    assert final_cfg["scaling_factor"] > 0 and final_cfg["scaling_factor"] != 1.0
    # the end of a run is an explicit marker, written after final/ (what make_pretrained waits for)
    assert run_status(run_a) == "complete" and json.loads((run_a / "status.json").read_text())["step"] == 2
    assert run_status(tmp_path / "never") is None

    # resume a second run from the step-1 checkpoint: it must reach exactly the same step-2 state
    run_b = tmp_path / "b"
    train(load_config(None, TINY + [f"run_dir={run_b}", "steps=2", f"resume={ckpts / 'step_00000001'}"]))
    a2, b2 = ckpts / "step_00000002", run_b / "checkpoints" / "step_00000002"
    wa = load_file(str(a2 / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(b2 / "diffusion_pytorch_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = load_state(a2), load_state(b2)
    for key in ("step", "opt", "sched", "sampler", "disc", "opt_d", "ema"):
        assert _tensors_equal(sa[key], sb[key]), key
    assert sa["disc"] is not None and sa["ema"] is not None
    logs = [json.loads(line) for line in (run_a / "log.jsonl").read_text().splitlines()]
    assert any(entry.get("d_loss", 0) > 0 for entry in logs)  # the discriminator ran (gan_start=1)


def test_a_resume_moves_the_steps_logged_after_its_checkpoint_aside(tmp_path):
    from vidgen.training.checkpoint import RunLog
    earlier = [{"info": "precision: fp32"}, *({"step": s, "loss": 1.0 / s} for s in range(1, 6))]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in earlier) + '{"step": 6, "lo')
    log = RunLog(tmp_path, is_main=True)
    log("precision: bf16")  # this run's own line, logged before it finds the checkpoint
    assert log.rewind(3) == 3  # steps 4 and 5, and the line a kill tore
    kept = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e.get("step") for e in kept] == [None, 1, 2, 3, None] and kept[-1]["info"] == "precision: bf16"
    moved = (tmp_path / "log.rewound.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in moved[:2]] == [4, 5] and moved[2] == '{"step": 6, "lo'
    log({"step": 4, "loss": 0.25})
    assert log.rewind(4) == 0  # nothing after step 4 but this run's own lines
    steps = [json.loads(line).get("step") for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [s for s in steps if s is not None] == [1, 2, 3, 4]
    assert RunLog(tmp_path / "new", is_main=True).rewind(0) == 0  # a first run: nothing to move


def test_a_resume_that_would_change_the_run_is_refused_before_anything_is_written(tmp_path):
    """A checkpoint goes on with the settings that wrote it: another learning rate, steps below its step, or a fresh
    start (resume='') over its checkpoints is refused by name, and run_dir is left as it was; a longer run, or one
    that only changes how it runs (log cadence, threads), resumes."""
    run = tmp_path / "r"
    train(load_config(None, TINY + [f"run_dir={run}", "steps=2"]))
    before = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    written = (run / "config.yaml").read_text()
    for extra, match in ((["steps=3", "optim.lr=0.5"], r"this run changes what it trains: optim\.lr \(0\.0005 in the "
                                                       r"checkpoint, 0\.5 in this run\)"),
                         (["steps=1"], r"steps=1 is below the step of the checkpoint it resumes from \(2, "),
                         (["steps=2", "resume="], r"holds an earlier run's checkpoints \(the newest step_00000002\); "
                                                  r"resume='' would mix.*resume=auto")):
        with pytest.raises(ConfigError, match=match):
            train(load_config(None, TINY + [f"run_dir={run}", *extra]))
    assert (run / "config.yaml").read_text() == written
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == before
    train(load_config(None, TINY + [f"run_dir={run}", "steps=3", "log_every=2", "threads=1"]))
    assert load_state(run / "checkpoints" / "step_00000003")["step"] == 3


def test_status_follows_the_logged_steps_and_says_when_a_run_failed(tmp_path, monkeypatch):
    from vidgen.training import trainer
    written, write = [], trainer.write_run_status

    def recording(run_dir, state, **info):
        written.append((state, info.get("step")))
        write(run_dir, state, **info)

    monkeypatch.setattr(trainer, "write_run_status", recording)
    run = tmp_path / "r"
    train(load_config(None, TINY + [f"run_dir={run}", "steps=3", "log_every=1"]))
    assert written == [("preparing", None), ("training", 0), ("training", 1), ("training", 2), ("training", 3),
                       ("complete", 3)]
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    failed = tmp_path / "failed"
    with pytest.raises(VidgenError, match="nowhere"):
        train(load_config(None, TINY + [f"run_dir={failed}", "data.dataset=folder", f"data.root={tmp_path / 'nowhere'}"]))
    status = json.loads((failed / "status.json").read_text())
    assert run_status(failed) == "failed" and "nowhere" in status["error"]


def test_second_stage_starts_from_a_saved_tokenizer(tmp_path):
    """init_from: the GAN stage starts from the PSNR stage's weights (fresh optimizer); a tokenizer of another
    architecture is refused by name; colour augmentation runs in the loop; clips can be rendered up front."""
    first = tmp_path / "psnr"
    train(load_config(None, TINY + [f"run_dir={first}", "steps=1", "resume=", "loss.gan=0", "ema_decay=0",
                                    "data.render_workers=2"]))
    assert "rendered 6 clips in 2 processes" in (first / "log.jsonl").read_text()  # rendered up front
    start = load_file(str(first / "final" / "diffusion_pytorch_model.safetensors"))
    second = tmp_path / "gan"
    train(load_config(None, TINY + [f"run_dir={second}", "steps=1", "resume=", f"init_from={first / 'final'}",
                                    "data.color_aug=1.0", "optim.lr=1e-9", "ema_decay=0"]))
    after = load_file(str(second / "final" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.allclose(after[k], start[k], atol=1e-6) for k in start)  # a 1e-9 step from the loaded weights
    assert "initialised from" in (second / "log.jsonl").read_text()
    with pytest.raises(ConfigError, match="init_from.*latent_channels"):
        train(load_config(None, TINY + [f"run_dir={tmp_path / 'other'}", "steps=1", "resume=",
                                        f"init_from={first / 'final'}", "model.overrides={latent_channels: 8}"]))


def test_decoder_only_fine_tuning_keeps_encoder_and_statistics(tmp_path):
    """trainable=decoder: the encoder, bottleneck and latent statistics of init_from stay bit-identical (so the
    generators trained on its latents stay valid) while the decoder learns, here with the temporal loss on."""
    first = tmp_path / "stage1"
    train(load_config(None, TINY + [f"run_dir={first}", "steps=1", "resume=", "loss.gan=0", "ema_decay=0"]))
    second = tmp_path / "decoder"
    train(load_config(None, TINY + [f"run_dir={second}", "steps=3", "resume=", f"init_from={first / 'final'}",
                                    "trainable=decoder", "loss.temporal=1.0", "loss.gan=0", "optim.lr=1e-2",
                                    "stats_clips=1"]))
    start = load_file(str(first / "final" / "diffusion_pytorch_model.safetensors"))
    after = load_file(str(second / "final" / "diffusion_pytorch_model.safetensors"))
    decoder = [k for k in start if k.startswith("decoder.")]
    assert decoder and len(decoder) < len(start)
    assert all(torch.equal(after[k], start[k]) for k in start if k not in decoder)
    assert sum(not torch.equal(after[k], start[k]) for k in decoder) > len(decoder) // 2
    cfg1, cfg2 = (json.loads((d / "final" / "config.json").read_text()) for d in (first, second))
    assert (cfg2["scaling_factor"], cfg2["shift_factor"]) == (cfg1["scaling_factor"], cfg1["shift_factor"])
    with pytest.raises(ConfigError, match="init_from"):
        load_config(None, ["trainable=decoder"])
    with pytest.raises(ConfigError, match="trainable"):
        load_config(None, ["trainable=encoder"])


def test_temporal_difference_loss():
    still = torch.randn(2, 3, 1, 8, 8).expand(2, 3, 9, 8, 8)
    flicker = still + 0.1 * (torch.arange(9) % 4 == 0).float()[None, None, :, None, None]
    assert temporal_difference_loss(still, still + 0.3) == 0  # a constant offset is not flicker
    assert temporal_difference_loss(still, flicker) > 0.02
    assert temporal_difference_loss(still[:, :, :1], flicker[:, :, :1]) == 0


def test_spatial_difference_loss_costs_blurred_edges_not_offsets():
    square = torch.zeros(1, 1, 3, 16, 16)
    square[..., 4:12, 4:12] = 1.0
    blurred = torch.nn.functional.avg_pool3d(square, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    assert spatial_difference_loss(square, square + 0.5) == 0  # a constant offset has the same edges
    assert spatial_difference_loss(square, blurred) > 0.02
    # by hand, a one-pixel shift to the right: horizontal differences are wrong at 2 x 2 columns of 8 rows, vertical
    # ones at 2 rows of 2 columns (the square's left and right end columns), each by 1, out of 16 x 15 differences
    shifted = square.roll(1, dims=-1)
    expected = (2 * 2 * 8 / (16 * 15) + 2 * 2 / (15 * 16)) / 2
    torch.testing.assert_close(spatial_difference_loss(square, shifted), torch.tensor(expected))
    plain = reconstruction_loss(square, blurred)
    with_edges = reconstruction_loss(square, blurred, spatial_weight=2.0)
    assert with_edges == plain + 2.0 * spatial_difference_loss(square, blurred)
    images = square[:, :, 0]  # (B, C, H, W) works the same
    assert spatial_difference_loss(images, images.roll(1, dims=-1)) == spatial_difference_loss(square, shifted)


def test_config_errors_and_overrides(tmp_path):
    cfg = load_config(None, ["loss.gan=0", "model.overrides={latent_channels: 8}", "optim.betas=[0.5, 0.9]"])
    assert cfg.loss.gan == 0 and cfg.model.overrides == {"latent_channels": 8}
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(None, ["loss.ganweight=1"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="model.kind"):
        train(load_config(None, TINY + ["model.kind=nope", f"run_dir={tmp_path / 'x'}", "steps=1"]))


def test_a_batch_larger_than_the_clips_trains_and_says_it_repeats_clips(tmp_path):
    train(load_config(None, TINY + ["data.num_clips=2", "data.video_batch=3", "loss.gan=0", "steps=1",
                                    f"run_dir={tmp_path}", "resume="]))
    assert "data: batches of 3 clips from 2 clips per process, so a batch repeats clips" in \
        (tmp_path / "log.jsonl").read_text()


def test_schedule_steps_stops_a_run_part_way_down_its_schedule():
    """A run of 2000 steps on a 2500-step schedule sees exactly the learning rates of the first 2000 steps of the
    2500-step run (what a recipe needs to reproduce a run that was stopped early), and ends above the floor."""
    from vidgen.training.trainer import lr_lambda
    stopped = lr_lambda(load_config(None, ["steps=2000", "optim.schedule_steps=2500", "optim.warmup_steps=150"]))
    whole = lr_lambda(load_config(None, ["steps=2500", "optim.warmup_steps=150"]))
    default = lr_lambda(load_config(None, ["steps=2000", "optim.warmup_steps=150"]))
    assert [stopped(k) for k in range(2000)] == [whole(k) for k in range(2000)]
    assert stopped(1999) > 0.19 and abs(default(1999) - 0.1) < 1e-5  # default: the floor at the last step


def test_max_train_minutes_cuts_the_recipe_at_a_time_budget(tmp_path):
    """A run whose steps exceed max_train_minutes stops after that step, with the checkpoint and final/ of a last
    step, on the LR schedule of its full length: the same weights as that step of the uncut recipe."""
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    train(load_config(None, TINY + [f"run_dir={cut}", "steps=50", "max_train_minutes=1e-9", "resume="]))
    assert (cut / "checkpoints" / "latest").read_text() == "step_00000001" and (cut / "final" / "config.json").exists()
    assert json.loads((cut / "status.json").read_text())["step"] == 1
    assert any("stopped at step 1 of 50" in line for line in (cut / "log.jsonl").read_text().splitlines())
    train(load_config(None, TINY + [f"run_dir={whole}", "steps=2", "optim.schedule_steps=50", "resume="]))
    wa = load_file(str(cut / "checkpoints" / "step_00000001" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(whole / "checkpoints" / "step_00000001" / "diffusion_pytorch_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ConfigError, match="max_train_minutes"):
        load_config(None, ["max_train_minutes=-1"])


def test_sampler_shards_and_resumes():
    a, b = EpochSampler(10, seed=1, rank=0, world=2), EpochSampler(10, seed=1, rank=1, world=2)
    first = a.take(5) + b.take(5)
    assert sorted(first) == list(range(10))  # the two ranks split one epoch
    c = EpochSampler(10, seed=1, rank=0, world=2)
    c.load_state_dict(a.state_dict())
    assert c.take(7) == a.take(7)


def test_prefilled_clips_equal_the_lazily_rendered_ones():
    from vidgen.data.scenes import SceneClips

    scenes = SceneClips("train", num_frames=3, size=24, num_clips=5, seed=3)
    lazy, filled = CachedClips(scenes), CachedClips(scenes)
    lazy[1]  # a clip already cached is kept, not rendered again
    filled.cache[1] = lazy.cache[1]
    lines = []
    filled.prefill(2, lines.append, group=2)
    assert sorted(filled.cache) == list(range(5)) and filled.cache[1] is lazy.cache[1]
    assert all(torch.equal(filled[i], lazy[i]) for i in range(5))
    assert lines and "rendered 4 clips in 2 processes" in lines[0]


def test_loss_pieces():
    class L1Distance(torch.nn.Module):
        def forward(self, x, y):
            return (x - y).abs().flatten(1).mean(1)
    x = torch.rand(2, 3, 4, 8, 8) * 2 - 1
    perc = PerceptualLoss(L1Distance(), frames_per_video=2)
    assert perc(x, x) == 0 and perc(x, -x) > 0
    assert hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0)) == 0
    w = torch.randn(3, 3, requires_grad=True)
    rec, gan = (w * 2).sum(), (w * 4).sum()
    torch.testing.assert_close(adaptive_gan_weight(rec, gan, w), torch.tensor(0.5), atol=1e-3, rtol=0)


def test_removed_experiment_model_kind_is_named():
    """model.kind: cogvideox (a same-recipe anchor experiment) has left the library: an old config says so instead
    of listing the kinds, and the message cites no issue a user cannot read."""
    from vidgen.training import build_model
    cfg = load_config(None, TINY + ["model.kind=cogvideox"])
    with pytest.raises(ConfigError, match=r"model.kind='cogvideox'.*experiment flag, removed .*"
                                          r"experiments/README.md") as error:
        build_model(cfg.model)
    assert "issue" not in str(error.value)
    with pytest.raises(ConfigError, match=r"model.kind='gan' is unknown; choose from \['vae', 'vqvae'\]"):
        build_model(load_config(None, ["model.kind=gan"]).model)


@pytest.mark.slow  # make test launches 2 processes in test_distributed_equivalence (the flow trainer)
def test_accelerate_launch_two_cpu_processes(tmp_path):
    """The shipped script under `accelerate launch --multi_gpu --num_processes 2` on CPU (torchrun + gloo DDP)."""
    from pathlib import Path

    from vidgen.testing import accelerate_launch

    root = Path(__file__).resolve().parents[2]
    run_dir = tmp_path / "ddp"
    done = accelerate_launch(root / "tokenizers" / "train_tokenizer.py",
                             [*TINY, f"run_dir={run_dir}", "steps=2", "resume=", "threads=1"], num_processes=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run_dir / "final" / "config.json").exists()
    logs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logs if "loss" in entry] == [1, 2]  # one log per step: rank 0 only
    assert all(entry["processes"] == 2 for entry in logs if "loss" in entry)
    assert any(entry.get("d_loss", 0) > 0 for entry in logs)

"""The portable checkpoint (vidgen.training.portable): bf16 model + EMA weights and a JSON record under a committed
folder, refused by name when over its size limit, replaced in place; a run with an empty run_dir continues from it
(data position kept, AdamW moments from zero, LR warmed up again) and refuses one written with other settings; a
checkpoint in run_dir still takes precedence and resumes bit-identically."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers.tiny_models import live_tiny_vae
import vidgen.training.portable as portable
import vidgen.training.trainer as trainer
from vidgen.errors import ConfigError
from vidgen.tokenizers import CausalVAE
from vidgen.training import GeneratorTrainConfig, load_config, train_generator

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 6


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    return live_tiny_vae(tmp_path_factory.mktemp("tok") / "vae")


def _config(tmp_path, vae, run="run", *extra) -> GeneratorTrainConfig:
    return load_config(None, [
        f"run_dir={tmp_path / run}", f"video_tokenizer={vae}", "model.generator=flow", "model.preset=tiny",
        "model.overrides={max_grid: [4, 4, 4]}", "data.conditioning=none", "data.num_clips=8", "data.num_frames=10",
        "data.size=32", "data.batch=4", f"data.cache_dir={tmp_path / 'cache'}", f"steps={STEPS}", "log_every=1",
        "sample_every=0", "ckpt_every=3", "optim.warmup_steps=0", "optim.lr=2e-3", "ema_decay=0.9",
        f"portable_dir={tmp_path / 'portable'}", "portable_every=3", "portable_warmup=2", *extra],
        schema=GeneratorTrainConfig)


def _stop_after(monkeypatch, steps: int):
    """Make the run fail at optimizer step ``steps + 1`` (as if the machine went away after ``steps`` steps)."""
    calls, real = [], trainer.optimizer_step

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) > steps:
            raise KeyboardInterrupt("machine gone")
        return real(*args, **kwargs)
    monkeypatch.setattr(trainer, "optimizer_step", step)


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _final(run_dir):
    return load_file(str(run_dir / "final" / "diffusion_pytorch_model.safetensors"))


def test_the_size_rule_refuses_by_name(vae, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = CausalVAE.from_preset("tiny")
    from vidgen.training.ema import EMA
    ema = EMA(model)
    floats = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    assert portable.portable_bytes(model, ema) >= 2 * 2 * floats  # bf16, model and EMA
    assert portable.check_size("x", model, ema, limit=10 ** 9) == portable.portable_bytes(model, ema)
    with pytest.raises(ConfigError, match=r"portable_dir=x: the model \+ EMA weights in bf16 take .* MB, over"):
        portable.check_size("x", model, ema, limit=1000)
    # through the trainer: refused before the first step, nothing written
    monkeypatch.setattr(portable, "MAX_BYTES", 1000)
    with pytest.raises(ConfigError, match="portable_dir=.*over the 0 MB"):
        train_generator(_config(tmp_path, vae))
    assert not (tmp_path / "portable").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_replaced_in_place_with_its_record(vae, tmp_path):
    train_generator(_config(tmp_path, vae, "run", "portable_every=1"))
    folder = tmp_path / "portable"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "state.json", "weights.safetensors"]  # no file
    # per step; the model's config beside its weights
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "FlowVideoTransformer"
    record = json.loads((folder / "state.json").read_text())
    assert record == portable.read_record(folder)  # the JSON is the copy of what the weights file carries
    assert record["step"] == STEPS and record["data"]["sampler"] == {"epoch": 2, "pos": 8}  # 6 x 4 clips of 8
    assert record["config_hash"] == portable.config_hash(_config(tmp_path, vae).to_dict())
    seg = record["segments"][-1]
    assert seg["from_step"] == 0 and seg["to_step"] == STEPS and seg["timed_steps"] == STEPS - 1
    assert seg["seconds_per_step"] > 0 and seg["cpu"] and seg["threads"] == 1 and seg["precision"] in ("fp32", "bf16")
    assert "commit" in record["source"] and record["rewarm"] is None
    tensors = load_file(str(folder / "weights.safetensors"))
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} == {torch.bfloat16}
    final = _final(tmp_path / "run")  # the EMA weights
    assert all(torch.equal(tensors[f"ema/{k}"], v.to(torch.bfloat16)) for k, v in final.items())
    assert (folder / "weights.safetensors").stat().st_size < portable.MAX_BYTES


def test_an_empty_run_dir_continues_from_it(vae, tmp_path, monkeypatch):
    train_generator(_config(tmp_path, vae, "straight", f"portable_dir={tmp_path / 'p_straight'}"))
    with monkeypatch.context() as m:
        _stop_after(m, 3)
        with pytest.raises(KeyboardInterrupt):
            train_generator(_config(tmp_path, vae, "first"))
    assert portable.read_record(tmp_path / "portable")["step"] == 3
    # another machine: no run_dir at all (and a longer warm-up: how a run continues may differ between machines)
    metrics = train_generator(_config(tmp_path, vae, "second", "portable_warmup=3"))
    assert metrics["step"] == STEPS
    log = _log(tmp_path / "second")
    assert any("continued from the portable checkpoint" in m.get("info", "") and "at step 3" in m["info"] for m in log)
    lrs = {m["step"]: m["lr"] for m in log if "lr" in m}
    straight = {m["step"]: m["lr"] for m in _log(tmp_path / "straight") if "lr" in m}
    assert sorted(lrs) == [4, 5, 6]  # steps 4-6 trained here
    # the LR logged after step s is the one step s+1 uses: 1/3, 2/3, then all of the schedule's
    assert lrs[4] == pytest.approx(straight[4] * 2 / 3) and lrs[5] == pytest.approx(straight[5])
    f = trainer.lr_lambda(_config(tmp_path, vae), [3, 3])
    g = trainer.lr_lambda(_config(tmp_path, vae))
    assert f(3) == pytest.approx(g(3) / 3) and f(5) == pytest.approx(g(5)) and f(2) == g(2)
    record = portable.read_record(tmp_path / "portable")
    straight_record = portable.read_record(tmp_path / "p_straight")
    assert record["step"] == STEPS and record["data"] == straight_record["data"]  # the data order continued
    assert record["rewarm"] == [3, 3]
    assert [(s["from_step"], s["to_step"]) for s in record["segments"]] == [(0, 3), (3, STEPS)]
    assert record["segments"][-1]["continued_from"]["step"] == 3
    # the rewarm travels in run_dir's checkpoints, so a resume from run_dir keeps it
    from vidgen.training.checkpoint import load_state
    assert load_state(tmp_path / "second" / "checkpoints" / "step_00000006")["rewarm"] == [3, 3]
    a, b = _final(tmp_path / "straight"), _final(tmp_path / "second")
    assert a.keys() == b.keys() and all(torch.isfinite(v).all() for v in b.values())
    assert any(not torch.equal(a[k], b[k]) for k in a)  # not bit-identical: bf16 weights, fresh moments


def test_run_dir_takes_precedence_and_stays_bit_identical(vae, tmp_path, monkeypatch):
    train_generator(_config(tmp_path, vae, "straight", f"portable_dir={tmp_path / 'p_straight'}"))
    with monkeypatch.context() as m:
        _stop_after(m, 4)  # run_dir holds step 3, the portable checkpoint step 3
        with pytest.raises(KeyboardInterrupt):
            train_generator(_config(tmp_path, vae, "run"))
    train_generator(_config(tmp_path, vae, "run"))
    assert "resumed from" in (tmp_path / "run" / "log.jsonl").read_text()
    a, b = _final(tmp_path / "straight"), _final(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)
    segments = portable.read_record(tmp_path / "portable")["segments"]
    assert [(s["from_step"], s["to_step"]) for s in segments] == [(0, 3), (3, STEPS)]


def test_a_mismatched_config_is_refused(vae, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        _stop_after(m, 3)
        with pytest.raises(KeyboardInterrupt):
            train_generator(_config(tmp_path, vae, "first"))
    with pytest.raises(ConfigError, match=r"portable_dir=.*other settings \(optim.lr: 0.002 there, 0.001 here"):
        train_generator(_config(tmp_path, vae, "second", "optim.lr=1e-3"))
    assert not (tmp_path / "second" / "checkpoints").exists()
    # how a run runs may differ between machines: threads, logging, checkpoint cadence
    metrics = train_generator(_config(tmp_path, vae, "third", "threads=2", "log_every=2", "ckpt_every=6"))
    assert metrics["step"] == STEPS
    (tmp_path / "portable" / "weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="portable_dir=.*weights.safetensors cannot be read"):
        train_generator(_config(tmp_path, vae, "fourth"))


def test_without_the_ema_the_average_restarts_when_continuing(vae, tmp_path, monkeypatch):
    """portable_ema: false, for a model whose weights and EMA would not both fit: the weights alone travel."""
    with monkeypatch.context() as m:
        _stop_after(m, 3)
        with pytest.raises(KeyboardInterrupt):
            train_generator(_config(tmp_path, vae, "first", "portable_ema=false"))
    tensors = load_file(str(tmp_path / "portable" / "weights.safetensors"))
    assert tensors and all(k.startswith("model/") for k in tensors)
    assert portable.read_record(tmp_path / "portable")["not_carried"] == ["ema"]
    train_generator(_config(tmp_path, vae, "second", "portable_ema=false"))
    assert "the EMA restarts from its weights" in (tmp_path / "second" / "log.jsonl").read_text()
    assert portable.read_record(tmp_path / "portable")["segments"][-1]["ema_restarted_at"] == 3
    from vidgen.training.checkpoint import load_state  # the restarted average warms its decay up, and resumes so
    assert load_state(tmp_path / "second" / "checkpoints" / "step_00000006")["ema"]["since_restart"] == 3
    # the size rule names the way out
    monkeypatch.setattr(portable, "MAX_BYTES", portable.portable_bytes(_model := CausalVAE.from_preset("tiny")) + 1)
    from vidgen.training.ema import EMA
    with pytest.raises(ConfigError, match="set portable_ema: false"):
        portable.check_size("x", _model, EMA(_model))


def test_options_at_their_defaults_leave_the_hash_as_it_was():
    """A portable checkpoint written before the optimizer, routing and REPA settings existed still continues: at their
    defaults they are not hashed; set otherwise, they are."""
    default = GeneratorTrainConfig().to_dict()
    settings = portable.hashed_settings(default)
    assert not [k for k in settings if k.startswith(("routing.", "repa.")) or k == "optim.optimizer"]
    assert set(portable.NEUTRAL) <= set(portable._flat(default))
    for override in ("optim.optimizer=muon", "routing.ratio=0.5", "repa.weight=0.5", "optim.muon_lr=0.01",
                     "context_swap=0.25", "data.motion_frames=17"):
        changed = load_config(None, [override], schema=GeneratorTrainConfig).to_dict()
        assert portable.config_hash(changed) != portable.config_hash(default), override


def test_the_recorded_time_per_step_is_the_median(vae, tmp_path):
    """A step during which the process was paused (a read beside the run, SIGSTOP) must not move the record."""
    cfg = _config(tmp_path, vae)
    model = torch.nn.Linear(4, 4)
    ckpt = portable.PortableCheckpoint(cfg, model, None, "fp32", log=lambda *a: None)
    ckpt.start(0)

    class Sampler:
        def state_dict(self):
            return {"epoch": 0, "pos": 0}
    for seconds in (4.1, 4.3, 1440.0, 4.2, 4.4):  # one step paused for 24 minutes
        ckpt.timed(seconds)
    ckpt.save(5, model, None, Sampler())
    seg = portable.read_record(tmp_path / "portable")["segments"][-1]
    assert seg["timed_steps"] == 5 and seg["seconds_per_step"] == 4.3 and seg["seconds_per_step_is"] == "median"


def test_a_refusal_names_a_setting_one_side_does_not_have(vae, tmp_path):
    """A setting present on one side only is named, even when the other side's value would read as None."""
    cfg = _config(tmp_path, vae)
    ckpt = portable.PortableCheckpoint(cfg, torch.nn.Linear(4, 4), None, "fp32", log=lambda *a: None)
    theirs = {**portable.hashed_settings(cfg.to_dict()), "data.some_new_option": None}
    record = {"format": portable.FORMAT, "config_hash": "0" * 16, "settings": theirs}
    with pytest.raises(ConfigError, match=r"data\.some_new_option: None there, '\(unset\)' here"):
        ckpt.check(record)

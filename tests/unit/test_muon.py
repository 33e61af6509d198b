"""``optim.optimizer: muon`` (vidgen.training.optimizers): Muon for the linear weights inside the backbone's blocks,
AdamW for every other parameter, stepped as one optimizer under the run's one LR schedule; checkpoints resume
bit-identically, a portable checkpoint continues with fresh moments, and tasks or modes that cannot use it refuse it."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from helpers.tiny_models import live_tiny_vae
import vidgen.training.trainer as trainer
from vidgen.errors import ConfigError, UnsupportedError
from vidgen.generators import FlowVideoTransformer
from vidgen.training import GeneratorTrainConfig, load_config, train_generator
from vidgen.training.checkpoint import load_state
from vidgen.training.optimizers import MuonAdamW, build_optimizer, hidden_matrices

pytestmark = pytest.mark.usefixtures("one_thread")
HIDDEN = re.compile(r"backbone\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.0|mlp\.2|cross\.q|cross\.kv|cross\.proj)"
                    r"\.weight")


def _muon_config(**optim) -> GeneratorTrainConfig:
    return load_config(None, ["optim.optimizer=muon", *(f"optim.{k}={v}" for k, v in optim.items())],
                       schema=GeneratorTrainConfig)


def _task(model):
    return SimpleNamespace(params=list(model.parameters()), muon_params=lambda: hidden_matrices(model.backbone))


@pytest.mark.parametrize("text", ["prefix", "cross"])
def test_the_hidden_matrices_go_to_muon_everything_else_to_adamw(text):
    torch.manual_seed(0)
    model = FlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=(4, 4, 4), text_dim=8,
                                             text_conditioning=text)
    opt = build_optimizer(_muon_config(), _task(model))
    assert isinstance(opt, MuonAdamW) and isinstance(opt, torch.optim.Optimizer)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in opt.inner["muon"].param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.inner["adamw"].param_groups for p in g["params"]}
    assert muon | adamw == set(names.values()) and not muon & adamw  # every parameter exactly once
    assert muon == {n for n in names.values() if HIDDEN.fullmatch(n)}
    depth = model.backbone_config.depth
    assert len(muon) == depth * (4 + 3 * (text == "cross"))
    for name in ("backbone.blocks.0.table", "backbone.blocks.0.attn.proj.bias", "backbone.blocks.0.mlp.0.bias",
                 "backbone.modulation.1.weight", "backbone.final_modulation.1.weight", "patch.proj.weight",
                 "head.weight"):
        assert name in adamw, name
    assert all(p.ndim == 2 for g in opt.inner["muon"].param_groups for p in g["params"])
    # one list of groups for the scheduler (AdamW's first: the logged lr is AdamW's), shared with the two optimizers
    assert opt.param_groups[0] is opt.inner["adamw"].param_groups[0]
    assert opt.param_groups[1] is opt.inner["muon"].param_groups[0]
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 0.02]


def test_a_few_steps_reduce_the_loss_and_the_schedule_drives_both():
    torch.manual_seed(0)
    model = FlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=(2, 4, 4), cond_dropout=0.0,
                                             task_prob=0.0)
    x = torch.randn(2, 4, 2, 4, 4)
    cfg = _muon_config(lr=3e-3, warmup_steps=2, muon_lr=0.02)
    cfg.steps = 12
    opt = build_optimizer(cfg, _task(model))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, trainer.lr_lambda(cfg))
    f = trainer.lr_lambda(cfg)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([3e-3 * f(0), 0.02 * f(0)])

    def loss():
        return model.loss(x, None, torch.Generator().manual_seed(0))[0]
    with torch.no_grad():
        before = loss().item()
    muon_w = model.backbone.blocks[0].mlp[0].weight
    for step in range(cfg.steps):
        opt.zero_grad()
        model.loss(x, None, torch.Generator().manual_seed(step))[0].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([3e-3 * f(step + 1), 0.02 * f(step + 1)])
    assert "momentum_buffer" in opt.inner["muon"].state[muon_w] and muon_w in opt.state
    with torch.no_grad():
        after = loss().item()
    assert after < 0.9 * before, (before, after)
    # the two states travel together and come back into a new optimizer
    other = build_optimizer(cfg, _task(model))
    other.load_state_dict(opt.state_dict())
    assert torch.equal(other.state[muon_w]["momentum_buffer"], opt.state[muon_w]["momentum_buffer"])
    assert other.param_groups[1] is other.inner["muon"].param_groups[0]  # re-linked after loading
    with pytest.raises(ConfigError, match=r"the checkpoint.s optimizer state is AdamW.s.*optim\.optimizer=muon"):
        other.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


def test_settings_and_tasks_that_refuse_muon():
    with pytest.raises(ConfigError, match=r"optim\.optimizer must be one of \('adamw', 'muon'\), got 'sgd'"):
        load_config(None, ["optim.optimizer=sgd"], schema=GeneratorTrainConfig)
    with pytest.raises(ConfigError, match=r"optim\.muon_adjust_lr must be one of"):
        load_config(None, ["optim.muon_adjust_lr=bigger"], schema=GeneratorTrainConfig)
    with pytest.raises(ConfigError, match=r"optim\.muon_momentum must be a number >= 0 and < 1, got 1"):
        load_config(None, ["optim.muon_momentum=1"], schema=GeneratorTrainConfig)
    model = FlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=(4, 4, 4))
    with pytest.raises(UnsupportedError, match=r"optim\.optimizer=muon: TrainingTask does not train with Muon.*"
                                               r"set optim\.optimizer=adamw"):
        build_optimizer(_muon_config(), trainer.TrainingTask.__new__(trainer.TrainingTask))
    fsdp = SimpleNamespace(distributed_type=SimpleNamespace(name="FSDP"))
    with pytest.raises(UnsupportedError, match=r"optim\.optimizer=muon under FSDP: .* set optim\.optimizer=adamw"):
        build_optimizer(_muon_config(), _task(model), fsdp)
    assert type(build_optimizer(GeneratorTrainConfig(), _task(model))) is torch.optim.AdamW  # the default


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    return live_tiny_vae(tmp_path_factory.mktemp("tok") / "vae")


def _run(tmp_path, vae, run, *extra) -> GeneratorTrainConfig:
    return load_config(None, [
        f"run_dir={tmp_path / run}", f"video_tokenizer={vae}", "model.generator=flow", "model.preset=tiny",
        "model.overrides={max_grid: [4, 4, 4]}", "data.conditioning=none", "data.num_clips=8", "data.num_frames=10",
        "data.size=32", "data.batch=4", f"data.cache_dir={tmp_path / 'cache'}", "steps=4", "log_every=1",
        "sample_every=0", "ckpt_every=2", "keep_checkpoints=5", "optim.warmup_steps=2", "optim.lr=2e-3",
        "ema_decay=0.9", "optim.optimizer=muon", *extra], schema=GeneratorTrainConfig)


def test_a_resumed_muon_run_is_bit_identical(vae, tmp_path):
    train_generator(_run(tmp_path, vae, "a", "resume="))
    ckpts = tmp_path / "a" / "checkpoints"
    assert "optimizer: Muon for the hidden matrices" in (tmp_path / "a" / "log.jsonl").read_text()
    train_generator(_run(tmp_path, vae, "b", f"resume={ckpts / 'step_00000002'}"))
    a, b = ckpts / "step_00000004", tmp_path / "b" / "checkpoints" / "step_00000004"
    wa = load_file(str(a / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(b / "diffusion_pytorch_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    sa, sb = load_state(a), load_state(b)
    assert set(sa["opt"]) == {"adamw", "muon"} and sa["opt"]["muon"]["state"]
    for name in ("adamw", "muon"):
        for key, value in sa["opt"][name]["state"].items():
            assert all(torch.equal(value[k], sb["opt"][name]["state"][key][k]) for k in value)
    assert sa["sched"] == sb["sched"]
    # a checkpoint of one optimizer is not resumed with the other
    with pytest.raises(ConfigError, match=r"changes what it trains: optim\.optimizer \('muon' in the checkpoint, "
                                          r"'adamw' in this run\)"):
        train_generator(_run(tmp_path, vae, "c", f"resume={ckpts / 'step_00000002'}", "optim.optimizer=adamw"))


@pytest.mark.slow  # two training runs; the resume test covers Muon's checkpointed state in make test
def test_a_portable_checkpoint_continues_with_fresh_moments(vae, tmp_path, monkeypatch):
    calls, real = [], trainer.optimizer_step

    def step(*args, **kwargs):  # the machine goes away after 2 steps
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt("machine gone")
        return real(*args, **kwargs)
    extra = (f"portable_dir={tmp_path / 'portable'}", "portable_every=2", "portable_warmup=2")
    with monkeypatch.context() as m:
        m.setattr(trainer, "optimizer_step", step)
        with pytest.raises(KeyboardInterrupt):
            train_generator(_run(tmp_path, vae, "first", *extra))
    metrics = train_generator(_run(tmp_path, vae, "second", *extra))
    assert metrics["step"] == 4
    log = (tmp_path / "second" / "log.jsonl").read_text()
    assert "continued from the portable checkpoint" in log and "optimizer moments from zero" in log
    state = load_state(tmp_path / "second" / "checkpoints" / "step_00000004")
    assert state["rewarm"] == [2, 2] and set(state["opt"]) == {"adamw", "muon"}


def test_the_orthogonalization_and_lr_scaling_are_torch_muons():
    from torch.optim._muon import _adjust_lr, _zeropower_via_newtonschulz

    from vidgen.training.optimizers import _shape_scale, orthogonalize
    g = torch.randn(48, 96, generator=torch.Generator().manual_seed(0))
    coefficients = torch.optim.Muon([torch.nn.Parameter(g)]).param_groups[0]["ns_coefficients"]
    for m in (g, g.T):  # wide and tall
        ours = orthogonalize(m, coefficients, 5, 1e-7, torch.bfloat16)
        assert torch.equal(ours, _zeropower_via_newtonschulz(m, coefficients, 5, 1e-7))  # torch's, in its bf16
        fp32 = orthogonalize(m, coefficients, 5, 1e-7, torch.float32)  # what a CPU step computes
        assert fp32.dtype == torch.float32 and _cosine(fp32, ours.float()) > 0.99
        s = torch.linalg.svdvals(fp32)
        assert 0.5 < s.min() and s.max() < 1.5  # near-orthogonal, as Newton-Schulz leaves it
    for rule in ("original", "match_rms_adamw", "spectral_unclamped"):
        for shape in ((48, 96), (96, 48)):
            assert _shape_scale(rule, shape) == pytest.approx(_adjust_lr(1.0, rule, torch.Size(shape)))


def _cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))

"""Few-step distillation (vidgen.distillation.losses, vidgen.distillation.task): the student's sampler against a
plain loop of its definition, the named refusals (a teacher that is not flow-type, a step count the student was not
trained for, guidance passed to a guidance-distilled student), the losses split over processes as one batch, and the
trainer: a resumed distillation is bit-identical to a straight one, for both families."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators import Conditioning, FlowVideoTransformer, generator_class
from vidgen.distillation.losses import (CriticClassifier, consistency_loss, distillation_spec, dmd2_losses,
                                            make_student, student_sigmas)
from vidgen.generators.flow import generate_latents
from vidgen.rng import RowGenerator
from vidgen.testing import perturb_weights
from vidgen.training import load_config
from vidgen.distillation.task import DistillTrainConfig, distill, load_teacher
from vidgen.training.encode_cache import shapes_class_names

from helpers.loss_split import gradients_reach, halves_make_the_whole
from helpers.shards import save_tiny_tokenizers

pytestmark = pytest.mark.usefixtures("one_thread")
GRID = (2, 4, 4)
SPEC = distillation_spec("dmd2", [1, 2, 4], 3.0)


def _flow(**kw) -> FlowVideoTransformer:
    torch.manual_seed(0)
    model = FlowVideoTransformer.from_preset("tiny", in_channels=4, num_classes=len(shapes_class_names()),
                                             max_grid=[4, 4, 4], **kw)
    return perturb_weights(model, scale=0.05).eval()


def _cond(b: int) -> Conditioning:
    return Conditioning(class_labels=torch.arange(b) % 5)


def test_student_samples_its_levels_as_the_plain_loop_and_refuses_other_calls():
    """k steps at levels 1, 1 - 1/k, ...: the clean estimate x - sigma v, noised afresh to the next level (diffusers'
    FlowMatchEulerDiscreteScheduler with stochastic_sampling); one model call per step at guidance 1."""
    student = _flow(distillation=SPEC)
    assert student.default_scheduler().config.stochastic_sampling
    cond = _cond(2)
    for k in (1, 2, 4):
        got = student.sample(GRID, 2, cond, num_inference_steps=k, guidance_scale=1.0,
                             generator=torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        x = torch.randn(2, 4, *GRID, generator=g)
        levels = student_sigmas(k) + [0.0]
        with torch.no_grad():
            for sigma, nxt in zip(levels[:-1], levels[1:]):
                x0 = x - sigma * student(x, torch.full((2,), sigma * 1000), cond).sample
                x = (1 - nxt) * x0 + nxt * torch.randn(x.shape, generator=g)
        torch.testing.assert_close(got, x, rtol=0, atol=1e-6)
    calls = []
    student.sample(GRID, 1, _cond(1), num_inference_steps=2, guidance_scale=1.0,
                   callback=lambda i, t, kw: calls.append(i))
    assert calls == [0, 1]
    with pytest.raises(InvalidInputError, match=r"num_inference_steps=3: this student was distilled for \[1, 2, 4\]"):
        student.sample(GRID, 1, _cond(1), num_inference_steps=3, guidance_scale=1.0)
    with pytest.raises(InvalidInputError, match=r"guidance_scale=4.0: .*guidance \(3.0\) built in.*guidance_scale=1"):
        generate_latents(student, _cond(1), grid=GRID, batch=1, num_inference_steps=4, guidance_scale=4.0)
    with pytest.raises(ConfigError, match="distill.steps"):
        distillation_spec("dmd2", [3], 3.0)
    with pytest.raises(ConfigError, match="distill.method"):
        distillation_spec("progressive", [1], 3.0)


def test_a_teacher_that_is_not_flow_type_is_refused_by_name(tmp_path):
    masked = generator_class("masked").from_preset("tiny", vocab_size=64, max_grid=[4, 4, 4])
    masked.save_pretrained(tmp_path / "masked")
    with pytest.raises(ConfigError, match="flow-matching teacher.*got MaskedVideoTransformer"):
        load_teacher(str(tmp_path / "masked"))
    _flow(prediction_type="epsilon").save_pretrained(tmp_path / "eps")
    with pytest.raises(ConfigError, match="flow-matching teacher.*prediction_type='epsilon'"):
        load_teacher(str(tmp_path / "eps"))
    _flow(distillation=SPEC).save_pretrained(tmp_path / "student")
    with pytest.raises(ConfigError, match="itself a distilled student"):
        load_teacher(str(tmp_path / "student"))
    with pytest.raises(ConfigError, match="not a folder"):
        load_teacher(str(tmp_path / "missing"))


@pytest.mark.parametrize("method", ["dmd2", "consistency"])
def test_losses_over_two_processes_equal_one_batch(method):
    """Each process draws its rows of the global batch (RowGenerator): the mean of the two halves' losses is the
    whole batch's loss, the condition for 2 processes to train what 1 trains. The gradients reach the student and
    (DMD2) the critic and its GAN head, never the teacher."""
    teacher, student = _flow(), _flow()
    critic = perturb_weights(_flow(), seed=7, scale=0.01).requires_grad_(True)
    teacher.requires_grad_(False)
    disc = CriticClassifier(critic) if method == "dmd2" else None
    x = torch.randn(4, 4, *GRID, generator=torch.Generator().manual_seed(1))
    spec = {**SPEC, "method": method}

    def loss(rows: slice, rank: int, world: int):
        r = RowGenerator(torch.Generator().manual_seed(5), rank, world)
        if method == "consistency":
            return consistency_loss(student, teacher, x[rows], _cond(4).index(rows), spec, r)
        noise = r.randn(x[rows].shape[0], *x.shape[1:])
        return dmd2_losses(student, critic, teacher, noise, _cond(4).index(rows), spec, r, gan_weight=0.5,
                           discriminator=disc, real=x[rows])

    halves_make_the_whole(loss).backward()
    gradients_reach(trained=[student] + ([critic, disc.head] if disc is not None else []), frozen=[teacher])


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    tokenizers = save_tiny_tokenizers(root, ["vae"])
    _flow().save_pretrained(root / "teacher" / "transformer")
    (root / "teacher" / "sampling_config.json").write_text(json.dumps({"guidance_scale": 2.5}))
    return root / "teacher", tokenizers["vae"]


def _config(run_dir, teacher, vae, cache, *extra) -> DistillTrainConfig:
    return load_config(None, [
        f"run_dir={run_dir}", f"distill.teacher={teacher}", f"video_tokenizer={vae}", "data.conditioning=class",
        "data.num_clips=4", "data.num_frames=5", "data.size=32", "data.batch=2", f"data.cache_dir={cache}",
        "steps=4", "log_every=1", "sample_every=0", "ckpt_every=2", "optim.warmup_steps=0", "optim.lr=1e-3",
        "ema_decay=0.9", "precision=fp32", *extra], schema=DistillTrainConfig)


@pytest.mark.parametrize("method", ["dmd2", "consistency"])
def test_resumed_distillation_is_bit_identical(method, teacher_folder, tmp_path):
    """Straight 4 steps against 2 steps, a new process-like run from the step-2 checkpoint, 2 more: the same
    student (and, DMD2, the same critic and GAN head, which the checkpoint carries)."""
    teacher, vae = teacher_folder
    extra = [f"distill.method={method}"] + (["distill.gan_weight=0.1", "distill.student_every=2"]
                                            if method == "dmd2" else [])
    distill(_config(tmp_path / "straight", teacher, vae, tmp_path / "cache", *extra))
    step2 = tmp_path / "straight" / "checkpoints" / "step_00000002"
    distill(_config(tmp_path / "resumed", teacher, vae, tmp_path / "cache", f"resume={step2}", *extra))
    a, b = (load_file(str(tmp_path / run / "final" / "diffusion_pytorch_model.safetensors"))
            for run in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(str(teacher / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 1e-5  # it trained
    config = json.loads((tmp_path / "straight" / "final" / "config.json").read_text())
    assert config["distillation"] == {"method": method, "steps": [1, 2, 4], "guidance_scale": 2.5}
    if method == "dmd2":
        states = [torch.load(tmp_path / run / "checkpoints" / "step_00000004" / "state.pt", weights_only=True)
                  for run in ("straight", "resumed")]
        for key in ("critic", "gan_head"):
            assert all(torch.equal(states[0][key][k], states[1][key][k]) for k in states[0][key])
    student = FlowVideoTransformer.from_pretrained(tmp_path / "straight" / "final").eval()
    x = student.sample(GRID, 1, _cond(1), num_inference_steps=2, guidance_scale=1.0,
                       generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()


def test_init_from_continues_a_students_weights_and_its_critic(teacher_folder, tmp_path):
    """``init_from`` an earlier DMD2 checkpoint (e.g. to add the GAN term): the run starts from that student's raw
    weights and that critic, not from the teacher; a checkpoint of other step counts is refused by name."""
    teacher, vae = teacher_folder
    distill(_config(tmp_path / "a", teacher, vae, tmp_path / "cache", "steps=2", "distill.student_every=2"))
    step2 = tmp_path / "a" / "checkpoints" / "step_00000002"
    # lr 1e-30 (a learning rate must be above 0): each step moves a weight by at most ~1e-30, below the rounding
    # of any weight not exactly 0, so the continued run's checkpoint shows where init_from put the weights
    distill(_config(tmp_path / "b", teacher, vae, tmp_path / "cache", "steps=2", f"init_from={step2}",
                    "distill.gan_weight=0.1", "optim.lr=1e-30"))
    a = load_file(str(step2 / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000002" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(str(teacher / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 1e-5  # not the teacher's weights
    ca, cb = (torch.load(d / "state.pt", weights_only=True)["critic"]
              for d in (step2, tmp_path / "b" / "checkpoints" / "step_00000002"))
    assert all(torch.equal(ca[k], cb[k]) for k in ca)
    assert max((ca[k] - start[k]).abs().max().item() for k in ca if k in start) > 1e-5
    with pytest.raises(ConfigError, match="distillation"):
        distill(_config(tmp_path / "c", teacher, vae, tmp_path / "cache", "steps=1", f"init_from={step2}",
                        "distill.steps=[1,2]"))


def test_a_critic_only_step_leaves_the_student_out_of_the_graph():
    """distill.student_every > 1: on the critic's own steps the student gets no gradient at all (not a zero one,
    which AdamW's momentum and weight decay would still turn into a step)."""
    teacher, student, critic = _flow().requires_grad_(False), _flow(), _flow()
    r = RowGenerator(torch.Generator().manual_seed(0))
    loss, logs = dmd2_losses(student, critic, teacher, torch.randn(2, 4, *GRID), _cond(2), SPEC, r, student_weight=0)
    loss.backward()
    assert all(p.grad is None for p in student.parameters()) and "dm" in logs
    assert any(p.grad is not None for p in critic.parameters())


def test_a_student_pipeline_saves_loads_and_samples_at_its_settings(tiny_pipeline, tmp_path):
    """``pipe.with_student(student)``: the teacher pipeline's components with the student, its stochastic scheduler
    and sampling settings at its largest step count, guidance 1; saved and loaded, the same video."""
    from vidgen.pipelines import load_pipeline
    pipe = tiny_pipeline("flow")
    spipe = pipe.with_student(make_student(pipe.transformer, SPEC))
    assert spipe.sampling_config.num_inference_steps == 4 and spipe.sampling_config.guidance_scale == 1.0
    spipe.save_pretrained(tmp_path / "student")
    loaded = load_pipeline(tmp_path / "student", dtype=spipe.precision)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.scheduler.config.stochastic_sampling and loaded.transformer.config.distillation == SPEC
    calls = []
    kw = dict(num_frames=5, height=32, width=32, output_type="np")
    video = loaded("a red circle", generator=torch.Generator().manual_seed(0),
                   callback_on_step_end=lambda p, i, t, k: calls.append(i) or {}, **kw).frames
    assert calls == [0, 1, 2, 3] and video.shape == (1, 5, 32, 32, 3)
    # the in-memory pipeline to fp32 rounding (weights read from a file can take another GEMM path), a second
    # load to the bit
    np.testing.assert_allclose(spipe("a red circle", generator=torch.Generator().manual_seed(0), **kw).frames, video,
                               rtol=0, atol=1e-5)
    again = load_pipeline(tmp_path / "student", dtype=spipe.precision)
    again.set_progress_bar_config(disable=True)
    assert (again("a red circle", generator=torch.Generator().manual_seed(0), **kw).frames == video).all()


def test_the_script_distils_a_pipeline_folder_into_a_student_pipeline(tiny_pipeline, tmp_path, capsys):
    """``pipelines/distill.py`` on a text-to-video pipeline folder: the student's pipeline folder beside the run,
    sampling at the student's largest step count; ``--assemble`` writes the same from a checkpoint."""
    import runpy
    from pathlib import Path

    from vidgen.pipelines import load_pipeline
    tiny_pipeline("flow").save_pretrained(tmp_path / "teacher")
    main = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pipelines" / "distill.py"),
                          run_name="distill")["main"]
    run = tmp_path / "run"
    assert main([f"distill.teacher={tmp_path / 'teacher'}", f"run_dir={run}", "distill.steps=[1, 2]",
                 "data.num_clips=4", "data.num_frames=5", "data.size=32", "data.batch=2", "data.max_text_tokens=8",
                 f"data.cache_dir={tmp_path / 'cache'}", "steps=2", "ckpt_every=1", "sample_every=2",
                 "precision=fp32", "ema_decay=0.5"]) == 0
    assert (run / "samples" / "step_00000002.png").is_file()  # at the student's 2 steps, guidance 1
    pipe = load_pipeline(run / "pipeline", dtype="fp32")
    assert pipe.sampling_config.num_inference_steps == 2 and pipe.transformer.config.distillation["steps"] == [1, 2]
    pipe.set_progress_bar_config(disable=True)
    video = pipe("a red circle", num_frames=5, height=32, width=32, output_type="np").frames
    assert video.shape == (1, 5, 32, 32, 3) and np.isfinite(video).all()
    assert main(["--assemble", str(tmp_path / "teacher"), str(run / "checkpoints" / "step_00000001"),
                 str(tmp_path / "from-checkpoint")]) == 0
    assert load_pipeline(tmp_path / "from-checkpoint").transformer.config.distillation["steps"] == [1, 2]
    # --ema: the last checkpoint's EMA weights are those final/ holds; the raw ones differ
    assert main(["--ema", "--assemble", str(tmp_path / "teacher"), str(run / "checkpoints" / "step_00000002"),
                 str(tmp_path / "ema")]) == 0
    final = pipe.transformer.state_dict()
    ema = load_pipeline(tmp_path / "ema", dtype="fp32").transformer.state_dict()
    assert all(torch.equal(ema[k], final[k]) for k in final)
    main(["--assemble", str(tmp_path / "teacher"), str(run / "checkpoints" / "step_00000002"), str(tmp_path / "raw")])
    raw = load_pipeline(tmp_path / "raw", dtype="fp32").transformer.state_dict()
    assert not all(torch.equal(raw[k], final[k]) for k in final)
    assert main(["--assemble", str(tmp_path / "teacher"), str(tmp_path / "teacher" / "transformer"),
                 str(tmp_path / "bad")]) == 2
    assert "student: not a distilled FlowVideoTransformer" in capsys.readouterr().err


def _moments_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Squared distance between the per-channel means and standard deviations of two batches of latents."""
    return ((x.mean((0, 2, 3, 4)) - y.mean((0, 2, 3, 4))).pow(2).sum()
            + (x.std((0, 2, 3, 4)) - y.std((0, 2, 3, 4))).pow(2).sum()).item()


@pytest.mark.parametrize("method", ["consistency", "dmd2"])
def test_distillation_brings_the_one_step_student_to_the_teacher(method):
    """A few dozen steps on a tiny teacher (class-conditioned, guidance 3): the student's one-step samples move
    toward the teacher's 25-step guided samples. Consistency distillation learns the teacher's noise -> sample map,
    so the error per sample drops; DMD2 matches distributions (not pairs), so the distance between the two sets'
    per-channel moments drops (DMD2's two time scales: the student steps every third step)."""
    teacher = _flow().requires_grad_(False)
    teacher = perturb_weights(teacher, seed=3, scale=0.05)
    spec = distillation_spec(method, [1, 2, 4], 3.0)
    noise = torch.randn(64, 4, *GRID, generator=torch.Generator().manual_seed(11))
    cond = Conditioning(class_labels=torch.arange(64) % 5)
    target = generate_latents(teacher, cond, grid=GRID, batch=64, latents=noise, num_inference_steps=25,
                              guidance_scale=3.0)
    student = make_student(teacher, spec).train().requires_grad_(True)
    critic = make_student(teacher, spec).train().requires_grad_(True)
    opt = torch.optim.Adam(list(student.parameters()) + list(critic.parameters()), lr=1e-3)

    def one_step() -> torch.Tensor:
        with torch.no_grad():
            return noise - student(noise, torch.full((64,), 1000.0), cond).sample

    distance = (lambda x: (x - target).pow(2).mean().item()) if method == "consistency" else \
        (lambda x: _moments_distance(x, target))
    before = distance(one_step())
    for step in range(40 if method == "consistency" else 60):
        g = torch.Generator().manual_seed(step)
        r, c = RowGenerator(g), Conditioning(class_labels=torch.randint(0, 5, (8,), generator=g))
        if method == "consistency":  # "data": the teacher's own samples
            loss, _ = consistency_loss(student, teacher, target[torch.randperm(64, generator=g)[:8]], c, spec, r)
        else:
            loss, _ = dmd2_losses(student, critic, teacher, torch.randn(8, 4, *GRID, generator=g), c, spec, r,
                                  student_weight=float(step % 3 == 0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = distance(one_step())
    assert after < (0.85 if method == "consistency" else 0.5) * before, (before, after)

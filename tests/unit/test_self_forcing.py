"""Self-Forcing: the block-causal student's rollout on its own chunks is causal (a later chunk's noise leaves the
earlier chunks as they were) and its DMD2 loss against a bidirectional teacher splits over processes as one batch,
with gradients reaching the student and the critic, never the teacher."""
from __future__ import annotations

import functools
import json

import pytest
import torch

from vidgen.generators import Conditioning, FlowVideoTransformer
from vidgen.generators.causal import CausalFlowVideoTransformer
from vidgen.distillation.losses import distillation_spec, dmd2_losses
from vidgen.distillation.self_forcing import self_forcing_rollout
from vidgen.rng import RowGenerator
from vidgen.testing import perturb_weights

from helpers.loss_split import gradients_reach, halves_make_the_whole

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = distillation_spec("dmd2", [1, 2], 3.0)
SHAPE = (4, 5, 4, 4)  # C, t, h, w


def _causal() -> CausalFlowVideoTransformer:
    torch.manual_seed(0)
    model = CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, num_classes=5, chunk_frames=1,
                                                  window_chunks=2, sink_chunks=1, max_grid=(8, 4, 4))
    return perturb_weights(model, seed=2, scale=0.05).eval()


def _flow(seed: int) -> FlowVideoTransformer:
    torch.manual_seed(0)
    model = FlowVideoTransformer.from_preset("tiny", in_channels=4, num_classes=5, max_grid=(8, 4, 4))
    return perturb_weights(model, seed=seed, scale=0.05).eval()


def _cond(b: int) -> Conditioning:
    return Conditioning(class_labels=torch.arange(b) % 5)


def test_the_rollout_is_causal_in_its_chunks():
    student = _causal()
    noise = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    later = noise.clone()
    later[:, :, -1] = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = (self_forcing_rollout(student, n, _cond(2), SPEC, RowGenerator(torch.Generator().manual_seed(3)))
                for n in (noise, later))
    assert a.shape == noise.shape and torch.equal(a[:, :, :-1], b[:, :, :-1])
    assert (a[:, :, -1] - b[:, :, -1]).abs().max() > 1e-3


def test_the_self_forcing_loss_over_two_processes_equals_one_batch():
    student, teacher = _causal(), _flow(3).requires_grad_(False)
    critic = _flow(4).requires_grad_(True)

    def loss(rows: slice, rank: int, world: int):
        r = RowGenerator(torch.Generator().manual_seed(5), rank, world)
        noise = r.randn(len(range(4)[rows]), *SHAPE)
        return dmd2_losses(student, critic, teacher, noise, _cond(4).index(rows), SPEC, r,
                           sample=self_forcing_rollout)

    halves_make_the_whole(loss).backward()
    gradients_reach(trained=[student, critic], frozen=[teacher])


def _long(chunks: int, switch: float = 0.0):
    return functools.partial(self_forcing_rollout, chunks=chunks, switch=switch)


def test_a_long_rollout_returns_a_window_of_a_stream_longer_than_the_clip():
    """Self-Forcing++: the window is a clip's length, made after the student's own earlier chunks (so it differs from
    the clip-length rollout of the same noise), the same again from the same draws, and a switch of prompts before
    the window changes what the window holds."""
    student = _causal()
    noise = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))

    def roll(sample, seed=3):
        with torch.no_grad():
            return sample(student, noise, _cond(4), SPEC, RowGenerator(torch.Generator().manual_seed(seed)))

    short, long = roll(self_forcing_rollout), roll(_long(12))
    assert long.shape == noise.shape and torch.equal(long, roll(_long(12)))
    assert (long - short).abs().max() > 1e-3
    assert torch.equal(roll(_long(SHAPE[1])), short)  # a rollout of the clip's own length is the plain one
    seed = next(s for s in range(20) if torch.rand(1, generator=torch.Generator().manual_seed(s)).item() > 0.2)
    switched = roll(_long(12, switch=1.0), seed)  # the window starts past chunk 0: there is a prompt to switch from
    assert (switched - roll(_long(12), seed)).abs().max() > 1e-3


def test_the_long_rollout_loss_over_two_processes_equals_one_batch():
    """The window's start is one draw for the whole global batch, so the processes roll out alike."""
    student, teacher = _causal(), _flow(3).requires_grad_(False)
    critic = _flow(4).requires_grad_(True)

    def loss(rows: slice, rank: int, world: int):
        r = RowGenerator(torch.Generator().manual_seed(6), rank, world)
        noise = r.randn(len(range(4)[rows]), *SHAPE)
        return dmd2_losses(student, critic, teacher, noise, _cond(4).index(rows), SPEC, r, sample=_long(9))

    halves_make_the_whole(loss).backward()
    gradients_reach(trained=[student, critic], frozen=[teacher])


def test_the_script_trains_a_causal_student_by_self_forcing_into_a_streaming_pipeline(tiny_pipeline, tmp_path, capsys):
    """``pipelines/distill.py`` with ``distill.student`` (a block-causal model): DMD2 on its rollouts against the
    bidirectional teacher pipeline, then the causal pipeline beside the run, streaming at the student's step counts
    and refusing others (and guidance) by name."""
    import runpy
    from pathlib import Path

    from vidgen.errors import InvalidInputError
    from vidgen.pipelines import CausalVideoPipeline, load_pipeline
    teacher = tiny_pipeline("flow")
    teacher.save_pretrained(tmp_path / "teacher")
    causal = tiny_pipeline("causal").transformer
    causal.save_pretrained(tmp_path / "stage1")
    main = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pipelines" / "distill.py"),
                          run_name="distill")["main"]
    run, args = tmp_path / "run", [f"distill.teacher={tmp_path / 'teacher'}", "distill.steps=[1, 2]",
                                   "data.num_clips=4", "data.num_frames=9", "data.size=32", "data.batch=2",
                                   "data.max_text_tokens=8", f"data.cache_dir={tmp_path / 'cache'}", "steps=2",
                                   "ckpt_every=1", "sample_every=0", "precision=fp32"]
    assert main([*args, f"run_dir={run}", f"distill.student={tmp_path / 'stage1'}"]) == 0
    assert "Self-Forcing" in capsys.readouterr().out
    pipe = load_pipeline(run / "pipeline", dtype="fp32")
    assert isinstance(pipe, CausalVideoPipeline) and pipe.sampling_config.num_inference_steps == 2
    assert pipe.transformer.config.distillation["steps"] == [1, 2]
    moved = max((a - b).abs().max().item() for a, b in zip(pipe.transformer.state_dict().values(),
                                                          causal.state_dict().values()))
    assert moved > 1e-6  # the student trained
    pipe.set_progress_bar_config(disable=True)
    video = pipe("a red circle", num_frames=13, height=32, width=32, output_type="pt",
                 generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 13, 3, 32, 32) and torch.isfinite(video).all()
    with pytest.raises(InvalidInputError, match=r"num_inference_steps=4: this student was distilled for \[1, 2\]"):
        pipe("a red circle", num_frames=9, height=32, width=32, num_inference_steps=4)
    with pytest.raises(InvalidInputError, match="guidance_scale=3.0: this student has its teacher's guidance"):
        pipe("a red circle", num_frames=9, height=32, width=32, guidance_scale=3.0)
    # a student that is not block-causal, and Self-Forcing by consistency, are refused by name
    assert main([*args, f"run_dir={tmp_path / 'bad'}", f"distill.student={tmp_path / 'teacher' / 'transformer'}"]) == 2
    assert "expected a CausalFlowVideoTransformer folder" in capsys.readouterr().err
    assert main([*args, f"run_dir={tmp_path / 'bad2'}", f"distill.student={tmp_path / 'stage1'}",
                 "distill.method=consistency"]) == 2
    assert "set distill.method=dmd2" in capsys.readouterr().err
    # Self-Forcing++: a rollout past the clip, with prompt switches; its settings refused by name out of place
    assert main([*args, f"run_dir={tmp_path / 'long'}", f"distill.student={tmp_path / 'stage1'}", "steps=1",
                 "distill.rollout_frames=17", "distill.rollout_switch=0.5"]) == 0
    assert "Self-Forcing++: 17-frame rollouts (5 chunks)" in capsys.readouterr().out
    assert main([*args, f"run_dir={tmp_path / 'bad3'}", "distill.rollout_frames=17"]) == 2
    assert "a long rollout is a block-causal student's (set distill.student)" in capsys.readouterr().err
    assert main([*args, f"run_dir={tmp_path / 'bad4'}", f"distill.student={tmp_path / 'stage1'}",
                 "distill.rollout_switch=0.5"]) == 2
    assert "set distill.rollout_frames above data.num_frames=9" in capsys.readouterr().err


def test_a_self_forcing_run_continues_where_its_student_folder_is_gone(tiny_pipeline, tmp_path, capsys, monkeypatch):
    """Another machine has the portable checkpoint but not ``distill.student``'s folder (a run's final/ in runs/):
    the student is built from the checkpoint's config and continues from its weights."""
    import runpy
    import shutil
    from pathlib import Path

    tiny_pipeline("flow").save_pretrained(tmp_path / "teacher")
    tiny_pipeline("causal").transformer.save_pretrained(tmp_path / "stage1")
    main = runpy.run_path(str(Path(__file__).resolve().parents[2] / "pipelines" / "distill.py"),
                          run_name="distill")["main"]
    args = [f"distill.teacher={tmp_path / 'teacher'}", "distill.steps=[1]", f"distill.student={tmp_path / 'stage1'}",
            "data.num_clips=4", "data.num_frames=9", "data.size=32", "data.batch=2", "data.max_text_tokens=8",
            f"data.cache_dir={tmp_path / 'cache'}", "ckpt_every=1", "sample_every=0", "precision=fp32",
            f"portable_dir={tmp_path / 'portable'}", "portable_every=1", "portable_ema=false", "steps=2",
            f"run_dir={tmp_path / 'run'}"]
    from vidgen.training import trainer
    real = trainer.optimizer_step
    calls = []

    def step(*a, **k):  # the machine goes away after the first step
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt("machine gone")
        return real(*a, **k)
    with monkeypatch.context() as m:
        m.setattr(trainer, "optimizer_step", step)
        with pytest.raises(KeyboardInterrupt):
            main(args)
    shutil.rmtree(tmp_path / "stage1")
    shutil.rmtree(tmp_path / "run")  # the next machine: no runs/, no student folder
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "is not here: the student is built from" in out and "continued from the portable checkpoint" in out
    assert json.loads((tmp_path / "portable" / "state.json").read_text())["step"] == 2

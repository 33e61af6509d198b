"""The one flow sampler (vidgen.generators.flow_sampler) on a toy model: its guidance modes agree with the one formula,
its loop stops or finishes a chunk on an interrupt, and a student's rule is applied in one place. The shipped
pipelines' frames through it are held by tests/integration/test_shipped_frames.py, the families' by the parity tests."""
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from vidgen.errors import InvalidInputError
from vidgen.generators.flow_sampler import (Guider, denoise, flow_timesteps, scheduler_step, student_settings,
                                            student_sigmas)
from vidgen.generators.sampling import Guidance, guide


def toy_call(log):
    """A model whose prediction is the input times 1 (uncond rows) or 2 (cond rows); ``log`` keeps each call."""
    def call(x, t, which, i):
        log.append((which, x.shape[0]))
        if which == "both":
            u, c = x.chunk(2)
            return torch.cat([u, 2 * c])
        return x * (2 if which == "cond" else 1)
    return call


def test_batched_and_separate_guidance_are_the_one_formula():
    x = torch.randn(2, 3)
    for mode, calls in (("batched", [("both", 4)]), ("separate", [("cond", 2), ("uncond", 2)])):
        log = []
        out = Guider(mode, Guidance(3.0))(toy_call(log), x, torch.tensor(500.0), 0)
        assert torch.allclose(out, guide(x, 2 * x, 3.0)) and log == calls
    log = []  # scale 1 (diffusers' rule, decided per step): the conditional pass alone
    assert torch.equal(Guider("separate", Guidance(1.0))(toy_call(log), x, torch.tensor(1.0), 0), 2 * x)
    assert log == [("cond", 2)]
    log = []  # decided once at the start (vidgen's generators): a run that starts guided stays batched
    Guider("batched", Guidance(1.0), doubled=True)(toy_call(log), x, torch.tensor(1.0), 0)
    assert log == [("both", 4)]


def test_outside_the_guidance_interval_the_conditional_prediction_alone():
    x, log = torch.randn(2, 3), []
    guider = Guider("batched", Guidance(3.0), doubled=True, interval=(0.0, 0.5))
    assert torch.equal(guider(toy_call(log), x, torch.tensor(800.0), 0), 2 * x)  # noise level 0.8: outside
    assert torch.allclose(guider(toy_call(log), x, torch.tensor(400.0), 0), guide(x, 2 * x, 3.0))
    with pytest.raises(InvalidInputError, match="Guider mode must be one of"):
        Guider("both", Guidance(1.0))


def test_an_interrupt_stops_the_loop_or_finishes_the_chunk_first():
    steps = []

    def step(pred, i, t, x):
        steps.append(i)
        return x + 1

    def stop_at_first(i, t, tensors):
        return {"interrupt": i == 0}

    guider = Guider("batched", Guidance(1.0), doubled=False)
    x, stopped = denoise(toy_call([]), torch.zeros(1), [3, 2, 1], step, guider, callback=stop_at_first)
    assert stopped and steps == [0] and x.item() == 1
    steps.clear()
    x, stopped = denoise(toy_call([]), torch.zeros(1), [3, 2, 1], step, guider, callback=stop_at_first,
                         finish_on_interrupt=True, first_step=10)
    assert not stopped and steps == [0, 1, 2]  # counted from first_step: 10 is not the first step's index
    steps.clear()
    x, stopped = denoise(toy_call([]), torch.zeros(1), [3, 2, 1], step, guider, callback=lambda i, t, d: {
        "interrupt": i == 10}, finish_on_interrupt=True, first_step=10)
    assert stopped and steps == [0, 1, 2]


def test_a_student_samples_its_trained_levels_at_guidance_one():
    spec = {"method": "dmd2", "steps": [1, 2, 4], "guidance_scale": 4.0}
    scheduler = FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)
    timesteps = flow_timesteps(scheduler, 2, spec, guidance_scale=1.0)
    assert scheduler.sigmas[:-1].tolist() == pytest.approx(student_sigmas(2)) and len(timesteps) == 2
    with pytest.raises(InvalidInputError, match="distilled for \\[1, 2, 4\\] steps only"):
        flow_timesteps(scheduler, 3, spec, guidance_scale=1.0)
    with pytest.raises(InvalidInputError, match="samples at guidance_scale=1"):
        flow_timesteps(scheduler, 2, spec, guidance_scale=4.0)
    assert student_settings(spec) == {"num_inference_steps": 4, "guidance_scale": 1.0}
    plain = FlowMatchEulerDiscreteScheduler()
    t = flow_timesteps(plain, 2)[0]
    x = torch.ones(1, 2)
    assert torch.equal(scheduler_step(plain)(torch.zeros(1, 2), 0, t, x), x)  # a zero velocity leaves the state

"""Flow's ``guidance_interval`` on the shipped weights against its references: the whole range is plain CFG, an empty
one is guidance 1, and a partial one is the same as switching guidance off from a callback at the same steps."""
from __future__ import annotations

import json
import weakref
from pathlib import Path

import pytest
import torch

from vidgen.pipelines import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a white hexagon rotating on a gray background"
STEPS = 4  # noise levels 1.0, 0.75, 0.5, 0.25
SIZE = dict(num_frames=5, height=32, width=32)  # small: the interval acts per step, not per position


@pytest.fixture(scope="module")
def pipe():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_pipeline(ROOT / "pretrained" / "shapes-flow", dtype="fp32")
    finally:
        torch.set_num_threads(threads)


_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pipeline -> {settings: latents}


def sample(pipe, **kwargs) -> torch.Tensor:
    """The latents of PROMPT; plain calls (no callback) are computed once per pipeline and settings."""
    memo = _MEMO.setdefault(pipe, {}) if "callback_on_step_end" not in kwargs else {}
    key = repr(sorted(kwargs.items()))
    if key in memo:
        return memo[key]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kwargs = {"num_inference_steps": STEPS, "guidance_scale": 4.5, **SIZE, **kwargs}
        out = pipe(PROMPT, generator=torch.Generator().manual_seed(3), output_type="latent", **kwargs).frames
    finally:
        torch.set_num_threads(threads)
    memo[key] = out
    return out


def test_the_whole_range_is_plain_guidance(pipe):
    torch.testing.assert_close(sample(pipe, guidance_interval=(0.0, 1.0)), sample(pipe, guidance_interval=None),
                               rtol=0, atol=0)


def test_an_interval_holding_no_step_is_guidance_one(pipe):
    unguided = sample(pipe, guidance_interval=(0.0, 0.1))  # the lowest level of 4 steps is 0.25
    # the conditional half of a batched CFG pass against an unbatched pass: 2e-6 apart after one forward (fp32,
    # measured on these weights), up to ~3e-3 after four Euler steps; guided samples differ by far more
    torch.testing.assert_close(unguided, sample(pipe, guidance_scale=1.0), rtol=0, atol=1e-2)
    assert (unguided - sample(pipe)).abs().max() > 0.1


def test_a_partial_interval_is_guidance_switched_off_at_the_same_steps(pipe):
    """The reference: plain CFG whose callback sets the live scale to 1 after the last step above level 0.5."""
    def off_below_half(p, i, t, tensors):
        if float(p.scheduler.sigmas[i + 1]) <= 0.5:
            p._guidance_scale = 1.0
        return tensors

    partial = sample(pipe, guidance_interval=(0.5, 1.0))
    torch.testing.assert_close(partial, sample(pipe, callback_on_step_end=off_below_half), rtol=1e-4, atol=1e-4)
    assert (partial - sample(pipe)).abs().max() > 1e-2  # the interval changed the sample (not a vacuous check)
    assert (partial - sample(pipe, guidance_scale=1.0)).abs().max() > 1e-2


def test_the_setting_round_trips_through_sampling_config(pipe, tmp_path):
    saved = pipe.sampling_config
    pipe.sampling_config = saved.replace(guidance_interval=[0.4, 1.0])
    try:
        pipe.save_pretrained(tmp_path / "folder")
        assert json.loads((tmp_path / "folder" / "sampling_config.json").read_text())["guidance_interval"] == [0.4, 1.0]
        loaded = load_pipeline(tmp_path / "folder", dtype="fp32")
        assert loaded.sampling_config.guidance_interval == (0.4, 1.0)
        torch.testing.assert_close(sample(loaded), sample(pipe, guidance_interval=(0.4, 1.0)), rtol=0, atol=0)
    finally:
        pipe.sampling_config = saved

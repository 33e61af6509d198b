"""experiments/renoise_probe.py: started at noise level 1 the probe's sampler is the pipeline's own generation, a
level starts on the sampler's step grid, and the probe runs on the shipped flow and masked pipelines."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vidgen.demo.run import load_pipelines
from vidgen.generators.flow import generate_latents

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def probe(load_script):
    return load_script("experiments/renoise_probe.py")


@pytest.fixture(scope="module")
def flow():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_pipelines(ROOT / "pretrained", ["flow"])["flow"]
    finally:
        torch.set_num_threads(threads)


def test_a_level_starts_on_the_samplers_grid(probe, flow):
    scheduler = probe.FlowMatchFromLevel(flow.scheduler, 0.5)
    sigma = scheduler.set_timesteps(10)
    sigmas = flow.scheduler.sigmas[:-1]
    assert sigma <= 0.5 and sigma == float(sigmas[sigmas <= 0.5 + 1e-6][0])
    assert len(scheduler.timesteps) == int((sigmas <= 0.5 + 1e-6).sum()) < 10
    assert probe.FlowMatchFromLevel(flow.scheduler, 1.0).set_timesteps(10) == pytest.approx(1.0)


def test_level_one_is_plain_generation(probe, flow):
    """The reference: from level 1 the probe's wrapped scheduler samples exactly what the pipeline's sampler does."""
    model, threads = flow.transformer, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cond = flow.encode_prompt(["a red square moving left on a gray background"])[0]
        grid = flow.video_tokenizer.latent_grid(17, 64, 64)
        noise = torch.randn(1, model.config.in_channels, *grid, generator=torch.Generator().manual_seed(0))
        run = dict(cond=cond, grid=grid, batch=1, negative=None, guidance_scale=4.5, num_inference_steps=4,
                   generator=None, latents=noise, given_latents=None, given_mask=None)
        plain = generate_latents(model, scheduler=flow.scheduler, **run)
        wrapped = generate_latents(model, scheduler=probe.FlowMatchFromLevel(flow.scheduler, 1.0), **run)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(wrapped, plain, rtol=0, atol=0)


@pytest.mark.parametrize("pipeline", ["flow", "masked"])
def test_probe_runs_on_the_shipped_pipelines(probe, tmp_path, pipeline):
    threads = torch.get_num_threads()
    out, sheet = tmp_path / "probe.json", tmp_path / "sheet.png"
    try:
        assert probe.main(["--pipeline", pipeline, "--pretrained", str(ROOT / "pretrained"), "--prompts", "1",
                           "--levels", "0,0.5", "--threads", "1", "--out", str(out), "--sheet", str(sheet)]) == 0
    finally:
        assert torch.get_num_threads() == threads  # the probe restores the thread count it found
    result = json.loads(out.read_text())
    assert result["pipeline"] == pipeline and result["levels"] == [0, 0.5]
    assert [result["per_level"][k]["n"] for k in ("0", "0.5")] == [1, 1]
    assert len(result["videos"]) == 1 and set(result["videos"][0]) >= {"caption", "s=0", "s=0.5"}
    from PIL import Image
    assert Image.open(sheet).size == (3 * (128 + 4) + 4, 128 + 8)  # one shape; the real clip and two levels, 2x


def test_bad_arguments_are_refused(probe):
    with pytest.raises(SystemExit):
        probe.main(["--levels", "0.5,1.5"])
    with pytest.raises(SystemExit):
        probe.main(["--pipeline", "flow", "--set", "top_k=1"])  # flow has no top-k

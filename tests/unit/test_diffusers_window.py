"""vidgen's 3D window attention swapped into diffusers video transformers: equal to the dense model when the window
covers the grid (on the blocked CPU path too), a real window changes and still samples, layers and dense steps are
honoured, the original processors come back, bad settings are refused."""
from __future__ import annotations

import pytest
import torch

from vidgen.errors import InvalidInputError
from vidgen.families import family_named
from vidgen.adapters.window import window_attention
from vidgen.pipelines import DiffusersVideoPipeline
from vidgen.pipelines.diffusers_tiny import TINY_FAMILIES, tiny_native_pipeline

SIZES = {"wan": (9, 32, 64), "cogvideox": (9, 32, 32), "ltx": (9, 32, 32)}
#: the families whose attention takes a window (the others refuse it by name: tests/unit/test_families.py)
WINDOW_FAMILIES = tuple(f for f in TINY_FAMILIES if family_named(f).window_processor is not None)


def _sample(pipe, family, steps=2, **extra):
    t, h, w = SIZES[family]
    kw = dict(num_frames=t, height=h, width=w, num_inference_steps=steps, guidance_scale=4.0, output_type="latent",
              generator=torch.Generator().manual_seed(0))
    if family == "cogvideox":
        kw["max_sequence_length"] = 16
    return pipe("a cat on a roof", **{**kw, **extra}).frames


@pytest.fixture(scope="module")
def pipes():
    out = {}
    for family in WINDOW_FAMILIES:
        pipe = DiffusersVideoPipeline.from_native(tiny_native_pipeline(family))
        pipe.set_progress_bar_config(disable=True)
        out[family] = (pipe, _sample(pipe, family))
    return out


@pytest.mark.parametrize("backend", ["auto", "cpu"])
@pytest.mark.parametrize("family", WINDOW_FAMILIES)
def test_a_window_covering_the_grid_equals_the_dense_model(family, backend, pipes):
    pipe, dense = pipes[family]
    handle = window_attention(pipe.transformer, window=(99, 99, 99), backend=backend)
    try:
        windowed = _sample(pipe, family)
    finally:
        handle.remove()
    assert handle.state.windowed_calls > 0
    assert (windowed - dense).abs().max() <= 1e-5
    assert torch.equal(_sample(pipe, family), dense)  # removed: the model's own processors again


@pytest.mark.parametrize("family", WINDOW_FAMILIES)
def test_a_windowed_model_samples_and_differs_from_dense(family, pipes):
    pipe, dense = pipes[family]
    handle = window_attention(pipe.flow_generator, window=(1, 1, 1), layers=[1])
    try:
        frames = _sample(pipe, family, output_type="np")
        windowed = _sample(pipe, family)
    finally:
        handle.remove()
    assert frames.shape[1] == SIZES[family][0] and torch.isfinite(windowed).all()
    assert (windowed - dense).abs().max() > 1e-3
    assert handle.state.grid is not None and min(handle.state.grid) >= 1


def test_tile_windows_run_in_a_real_model_and_differ_from_the_exact_window(pipes):
    """Wan's grid here is 3x16x32 tokens: a 1x3x3 window of 1x4x4 tiles sees more than the 1x3x3 exact window."""
    pipe, dense = pipes["wan"]
    runs = {}
    for tile in (None, (1, 4, 4)):
        handle = window_attention(pipe.transformer, window=(1, 3, 3), tile=tile)
        try:
            runs[tile] = _sample(pipe, "wan")
        finally:
            handle.remove()
        assert handle.state.windowed_calls > 0 and handle.state.tile == tile
    exact, tiled = runs[None], runs[(1, 4, 4)]
    assert torch.isfinite(tiled).all() and (tiled - exact).abs().max() > 1e-4 and (tiled - dense).abs().max() > 1e-4


def test_dense_steps_keep_the_first_steps_dense(pipes):
    pipe, _ = pipes["ltx"]
    handle = window_attention(pipe.transformer, window=(1, 3, 3), dense_steps=2)
    try:
        _sample(pipe, "ltx", steps=3)
        first = handle.state.windowed_calls  # one batched CFG call a step, 2 blocks: only step 3 is windowed
        _sample(pipe, "ltx", steps=3)  # a new run starts dense again
    finally:
        handle.remove()
    assert first == 2 and handle.state.windowed_calls == 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(window=(3, 3)), "window must be"), (dict(window=(3, 0, 3)), "window must be"),
    (dict(window=(3, 3, 3), layers=[7]), "layers"), (dict(window=(3, 3, 3), dense_steps=-1), "dense_steps"),
    (dict(window=(3, 3, 3), tile=(1, 0, 2)), "tile must be None or three positive ints")])
def test_bad_window_settings_are_refused(kwargs, match, pipes):
    with pytest.raises(InvalidInputError, match=match):
        window_attention(pipes["wan"][0].transformer, **kwargs)


@pytest.mark.slow  # about 30 s of compiling: make test-slow, whose summary records it
def test_compiled_blocks_with_windows_compile_once_and_equal_eager(pipes):
    """Each block compiled (regional compilation): the windowed attention traces once for all blocks and calls (a
    per-call counter inside the graph used to recompile it at every call), and the compiled model equals eager."""
    from torch._dynamo.utils import counters

    model = pipes["wan"][0].transformer
    x = torch.randn(1, 16, 3, 16, 32, generator=torch.Generator().manual_seed(0))
    kw = dict(timestep=torch.tensor([500.0]), encoder_hidden_states=torch.randn(1, 16, model.config.text_dim),
              return_dict=False)
    handle = window_attention(model, window=(1, 3, 3))
    blocks = list(model.blocks)
    try:
        with torch.no_grad():
            eager = model(hidden_states=x, **kw)[0]
            torch._dynamo.reset()
            counters.clear()
            for i, block in enumerate(blocks):
                model.blocks[i] = torch.compile(block)
            outs = [model(hidden_states=x, **kw)[0] for _ in range(2)]
        graphs = counters["stats"]["unique_graphs"]
    finally:
        for i, block in enumerate(blocks):
            model.blocks[i] = block
        handle.remove()
        torch._dynamo.reset()
    assert graphs == 1, f"{graphs} graphs for {len(blocks)} blocks x 2 calls"
    assert all((out - eager).abs().max() <= 1e-5 for out in outs)

"""diffusers' cache hooks on the diffusers-backed pipelines (``pipe.enable_cache``): vidgen's sampler gives each
model call the cache context diffusers' own pipeline gives it, so a cached vidgen call samples the frames the cached
diffusers pipeline samples; the cache acts (the frames differ from the uncached ones), is cleared between calls and
removed by ``disable_cache``; vidgen's own generators refuse it by name."""
from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig

from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.pipelines import load_pipeline
from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline

KW = dict(num_frames=9, height=32, width=32, num_inference_steps=4, guidance_scale=4.0, output_type="np")


def _frames(pipe, seed=0):
    return pipe("a red fox running", generator=torch.Generator().manual_seed(seed), **KW).frames


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan") / "wan"
    tiny_native_pipeline("wan").save_pretrained(folder)
    return folder


def test_first_block_cache_samples_as_diffusers_cached_pipeline(wan_folder):
    ours = load_pipeline(wan_folder, dtype="fp32")
    ours.set_progress_bar_config(disable=True)
    plain = _frames(ours)
    config = FirstBlockCacheConfig(threshold=10.0)  # every step after the first reuses the cached residual
    ours.enable_cache(config)
    cached = _frames(ours)
    assert np.abs(cached - plain).max() > 1e-3  # the cache acted
    assert np.array_equal(_frames(ours), cached)  # its state is cleared between calls
    native = diffusers.WanPipeline.from_pretrained(wan_folder)
    native.set_progress_bar_config(disable=True)
    native.transformer.enable_cache(FirstBlockCacheConfig(threshold=10.0))
    theirs = native("a red fox running", generator=torch.Generator().manual_seed(0), **KW).frames
    assert np.abs(theirs - cached).max() <= 1e-5
    ours.disable_cache()
    assert np.abs(_frames(ours) - plain).max() <= 1e-6


def test_cache_refusals_name_the_reason(wan_folder, tiny_pipeline):
    ours = load_pipeline(wan_folder, dtype="fp32")
    with pytest.raises(InvalidInputError, match="enable_cache: Cache config <class 'str'> is not supported"):
        ours.enable_cache("first-block")
    ours.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    with pytest.raises(InvalidInputError, match="enable_cache: .*disable_cache\\(\\) first"):
        ours.enable_cache(FirstBlockCacheConfig(threshold=0.2))
    with pytest.raises(UnsupportedError, match="enable_cache: FlowVideoPipeline samples vidgen's FlowVideoTransformer"
                                               ", which has no diffusers cache hooks"):
        tiny_pipeline("flow").enable_cache(FirstBlockCacheConfig(threshold=0.1))

"""Every cache config of diffusers 0.42 through ``pipe.enable_cache`` on the tiny Wan (and FasterCache on a family
guided by one batched pass): each samples finite frames of the uncached shape, the ones that skip work skip it, the
timestep-reading ones read the sampler's timesteps, FasterCache with separate guidance passes is refused by name, and
MagCache's calibration returns one ratio per step for the pipeline."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.hooks import (FasterCacheConfig, FirstBlockCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig,
                             SeaCacheConfig, TaylorSeerCacheConfig, TextKVCacheConfig)

from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.pipelines import DiffusersVideoPipeline
from vidgen.pipelines.cache_configs import CACHE_CONFIGS, calibrate_mag_cache
from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline

STEPS = 6
KW = dict(num_frames=9, height=32, width=32, num_inference_steps=STEPS, guidance_scale=4.0, output_type="np")


@pytest.fixture(scope="module")
def wan():
    pipe = DiffusersVideoPipeline.from_native(tiny_native_pipeline("wan"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _frames(pipe, **kw):
    return pipe("a red fox running", generator=torch.Generator().manual_seed(0), **{**KW, **kw}).frames


def _counting(pipe):
    """A list that grows by one per call of the second block's self-attention (skipped when the cache reuses it)."""
    calls = []
    pipe.transformer.blocks[1].attn1.to_q.register_forward_hook(lambda *a: calls.append(1))
    return calls


def _configs(pipe):
    ratios = calibrate_mag_cache(pipe, "a red fox running", num_inference_steps=STEPS,
                                 **{k: v for k, v in KW.items() if k != "num_inference_steps"})
    return {
        "FirstBlockCacheConfig": FirstBlockCacheConfig(threshold=10.0),
        "MagCacheConfig": MagCacheConfig(mag_ratios=ratios, num_inference_steps=STEPS, threshold=10.0,
                                         retention_ratio=0.2),
        "TaylorSeerCacheConfig": TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1,
                                                       use_lite_mode=True),
        "PyramidAttentionBroadcastConfig": PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1000)),
        "FasterCacheConfig": FasterCacheConfig(spatial_attention_block_skip_range=2, is_guidance_distilled=True,
                                               attention_weight_callback=lambda _: 0.3, tensor_format="BFCHW"),
        "SeaCacheConfig": SeaCacheConfig(),
        "TextKVCacheConfig": TextKVCacheConfig(),
    }


def test_every_cache_config_runs_on_the_tiny_wan(wan):
    plain = _frames(wan)
    calls = _counting(wan)
    _frames(wan)
    uncached_calls = len(calls)  # 6 steps x (cond, uncond)
    configs = _configs(wan)
    assert sorted(configs) == sorted(CACHE_CONFIGS)
    report = {}
    for name, config in configs.items():
        kw = dict(guidance_scale=1.0) if name == "FasterCacheConfig" else {}  # distilled: no CFG
        wan.enable_cache(config)
        try:
            calls.clear()
            frames = _frames(wan, **kw)
        finally:
            wan.disable_cache()
        assert frames.shape == plain.shape and np.isfinite(frames).all(), name
        report[name] = (len(calls), float(np.abs(frames - plain).max()))
    skipping = ("FirstBlockCacheConfig", "MagCacheConfig", "TaylorSeerCacheConfig", "PyramidAttentionBroadcastConfig")
    for name in skipping:
        assert report[name][0] < uncached_calls, (name, report, uncached_calls)
    assert report["FasterCacheConfig"][0] < uncached_calls // 2, report  # one pass per step without CFG
    assert np.abs(_frames(wan) - plain).max() <= 1e-6  # all off again


def test_timestep_configs_read_the_sampler_timesteps(wan):
    seen = []
    wan.enable_cache(PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                                     spatial_attention_timestep_skip_range=(-1, 1000)))
    callback = wan.transformer.blocks[0].attn1._diffusers_hook.get_hook(
        "pyramid_attention_broadcast").current_timestep_callback  # what the hooks call
    handle = wan.transformer.blocks[0].register_forward_pre_hook(lambda *a: seen.append(callback()))
    try:
        _frames(wan, num_inference_steps=3, guidance_scale=1.0)
    finally:
        handle.remove()
        wan.disable_cache()
    assert seen == [float(t) for t in wan.scheduler.timesteps], seen


def test_faster_cache_with_separate_guidance_passes_is_refused_by_name(wan):
    with pytest.raises(UnsupportedError, match=r"enable_cache: FasterCacheConfig reuses the unconditional half of a "
                                               r"batched \[uncond; cond\] model call; the WanPipeline family guides "
                                               r"by separate passes"):
        wan.enable_cache(FasterCacheConfig())
    assert not wan.transformer.is_cache_enabled


def test_faster_cache_runs_on_a_family_with_batched_guidance():
    cog = DiffusersVideoPipeline.from_native(tiny_native_pipeline("cogvideox"))
    cog.set_progress_bar_config(disable=True)
    cog.enable_cache(FasterCacheConfig(spatial_attention_block_skip_range=2, attention_weight_callback=lambda _: 0.3,
                                       tensor_format="BFCHW"))
    frames = cog("a red fox running", num_frames=9, height=16, width=16, num_inference_steps=4, guidance_scale=3.0,
                 max_sequence_length=16, generator=torch.Generator().manual_seed(0), output_type="np").frames
    assert np.isfinite(frames).all()


def test_faster_cache_on_packed_tokens_is_refused_by_name():
    ltx = DiffusersVideoPipeline.from_native(tiny_native_pipeline("ltx"))
    with pytest.raises(UnsupportedError, match=r"enable_cache: FasterCacheConfig splits the model input's frames by "
                                               r"frequency .* the LTXPipeline family's transformer takes packed "
                                               r"tokens \(B, N, C\)"):
        ltx.enable_cache(FasterCacheConfig())


def test_mag_cache_calibration_returns_the_pipeline_ratios(wan, capsys):
    kw = dict(num_inference_steps=4, num_frames=9, height=32, width=32, guidance_scale=4.0)
    ratios = calibrate_mag_cache(wan, "a red fox running", generator=torch.Generator().manual_seed(0), **kw)
    per_context = calibrate_mag_cache(wan, "a red fox running", generator=torch.Generator().manual_seed(0), **kw,
                                      per_context=True)
    assert len(ratios) == 4 and ratios[0] == 1.0 and all(r > 0 for r in ratios), ratios
    assert sorted(per_context) == ["cond", "uncond"] and per_context["cond"] == ratios
    assert "[MagCache]" not in capsys.readouterr().out  # read from the hooks, nothing printed
    assert not wan.transformer.is_cache_enabled
    wan.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    try:
        with pytest.raises(InvalidInputError, match="calibrate_mag_cache: a cache is on; pipe.disable_cache"):
            calibrate_mag_cache(wan, "a fox", num_inference_steps=2)
    finally:
        wan.disable_cache()

"""The block-causal pipeline: ``stream`` yields frames chunk by chunk and they are ``__call__``'s, exactly
``num_frames`` of them at any length; a prompt schedule switches at a chunk boundary and leaves the frames before it
as the first prompt made them (causality); per-video generators, callbacks, saving and loading as the other
pipelines; bad calls refused by name."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.pipelines import CausalVideoPipeline, load_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread beats two fighting over shared cores


@pytest.fixture
def causal(tiny_pipeline):
    p = tiny_pipeline("causal")
    p.sampling_config = p.sampling_config.replace(num_inference_steps=2)
    return p


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_stream_yields_the_call_frames_chunk_by_chunk_at_any_length(causal):
    # 25 frames are 7 latent frames, more than the trained 4: the cache rolls
    parts = list(causal.stream("a red circle", num_frames=25, height=32, width=32, generator=_g(), output_type="pt"))
    assert [p.shape[1] for p in parts] == [1, 4, 4, 4, 4, 4, 4]  # each chunk's frames as soon as decoded
    video = causal("a red circle", num_frames=25, height=32, width=32, generator=_g(), output_type="pt").frames
    assert torch.equal(torch.cat(parts, 1), video) and video.shape == (1, 25, 3, 32, 32)
    assert video.std() > 1e-3  # live weights, not a constant frame
    short = causal("a red circle", num_frames=10, height=32, width=32, generator=_g(), output_type="np").frames
    assert short.shape == (1, 10, 32, 32, 3)  # exactly num_frames, never rounded to whole latent frames
    assert np.allclose(short, video[:, :10].permute(0, 1, 3, 4, 2).numpy(), atol=1e-6)  # causal: a prefix


def test_a_prompt_switch_keeps_the_frames_before_it_and_changes_those_after(causal):
    one = causal("a red circle", num_frames=17, height=32, width=32, generator=_g(), output_type="pt").frames
    story = causal({0: "a red circle", 9: "a blue square moving up"}, num_frames=17, height=32, width=32,
                   generator=_g(), output_type="pt").frames
    assert story.shape == one.shape
    assert torch.equal(story[:, :9], one[:, :9])  # frames 0-8 are latent frames 0-2, made before the switch
    assert (story[:, 9:] - one[:, 9:]).abs().max() > 1e-3


def test_a_reset_switch_goes_on_as_a_new_video_of_the_second_prompt(causal):
    """``prompt_switch="reset"``: the chunks after the switch are those a fresh stream of the second prompt makes
    from the same noise; the re-cache (default) differs from it, because its new chunks attend the old ones."""
    story = {0: "a red circle", 9: "a blue square moving up"}  # frame 9 = latent frame 3, a chunk boundary
    kwargs = dict(num_frames=17, height=32, width=32, output_type="latent")
    reset = torch.cat(list(causal.stream(story, generator=_g(), prompt_switch="reset", **kwargs)), 2)
    recached = torch.cat(list(causal.stream(story, generator=_g(), **kwargs)), 2)
    g = _g()
    torch.randn(reset[:, :, :3].shape, generator=g)  # the noise of the three chunks before the switch
    fresh = torch.cat(list(causal.stream("a blue square moving up", generator=g, **{**kwargs, "num_frames": 5})), 2)
    assert torch.equal(reset[:, :, :3], recached[:, :, :3])
    assert torch.allclose(reset[:, :, 3:], fresh, atol=1e-6)
    assert (recached[:, :, 3:] - fresh).abs().max() > 1e-3
    with pytest.raises(InvalidInputError, match="prompt_switch"):
        causal.stream(story, generator=_g(), prompt_switch="keep", **kwargs)


def test_per_video_generators_and_guidance_give_each_video_on_its_own(causal):
    both = causal(["a red circle", "a blue square"], num_frames=9, height=32, width=32, guidance_scale=3.0,
                  generator=[_g(1), _g(2)], output_type="pt").frames
    alone = causal("a blue square", num_frames=9, height=32, width=32, guidance_scale=3.0, generator=[_g(2)],
                   output_type="pt").frames
    assert (both[1:] - alone).abs().max() <= 1e-5
    unguided = causal("a blue square", num_frames=9, height=32, width=32, generator=[_g(2)], output_type="pt").frames
    assert (unguided - alone).abs().max() > 1e-3


def test_callbacks_count_every_step_and_an_interrupt_ends_after_the_chunk(causal):
    seen = []

    def callback(p, step, t, tensors):
        seen.append((step, tuple(tensors["latents"].shape)))
        if step == 3:
            p._interrupt = True
        return {}
    with pytest.warns(UserWarning, match="interrupted after 2 of 3 chunks"):
        video = causal("a red circle", num_frames=9, height=32, width=32, generator=_g(), output_type="pt",
                       callback_on_step_end=callback).frames
    assert [s for s, _ in seen] == [0, 1, 2, 3] and seen[0][1] == (1, 4, 1, 4, 4)
    assert video.shape[1] == 5  # latent frames 0 and 1: frames 0-4
    assert causal.num_timesteps == 3 * 2


def test_saved_and_loaded_with_its_sampling_settings(causal, tmp_path):
    causal.save_pretrained(tmp_path / "causal")
    again = load_pipeline(tmp_path / "causal", dtype="fp32")
    again.set_progress_bar_config(disable=True)
    assert isinstance(again, CausalVideoPipeline) and again.sampling_config.num_inference_steps == 2
    kw = dict(num_frames=9, height=32, width=32, output_type="pt")
    assert torch.equal(again("a red circle", generator=_g(), **kw).frames,
                       causal("a red circle", generator=_g(), **kw).frames)


def test_bad_calls_are_refused_by_name(causal, tiny_pipeline):
    with pytest.raises(InvalidInputError, match="context_frames: the causal pipeline"):
        causal.stream("a red circle", num_frames=9, context_frames=1)
    with pytest.raises(UnsupportedError, match="sp_size=2: CausalVideoPipeline"):
        causal("a red circle", sp_size=2)
    with pytest.raises(InvalidInputError, match="scheduler: the block-causal model"):
        from diffusers import DDIMScheduler
        CausalVideoPipeline(causal.vae, causal.transformer, DDIMScheduler())
    two = tiny_pipeline("causal", chunk_frames=2, window_chunks=1, sink_chunks=0)
    with pytest.raises(InvalidInputError, match="inside a chunk of 2 latent frames; .* at frame 5 or 13"):
        two({0: "a red circle", 9: "a blue square"}, num_frames=17, height=32, width=32)


def test_a_shorter_window_streams_as_a_model_built_with_it(causal, tiny_pipeline):
    """``window_chunks=1`` on a model keeping 2: the frames of the same weights built with a window of 1; a longer
    window than the cache is refused by name."""
    short = tiny_pipeline("causal", window_chunks=1)
    short.transformer.load_state_dict(causal.transformer.state_dict())
    short.sampling_config = causal.sampling_config
    kw = dict(num_frames=21, height=32, width=32, output_type="pt")
    want = short("a red circle", generator=_g(), **kw).frames
    assert torch.equal(causal("a red circle", window_chunks=1, generator=_g(), **kw).frames, want)
    assert (causal("a red circle", generator=_g(), **kw).frames - want).abs().max() > 1e-4  # the window matters
    with pytest.raises(InvalidInputError, match="window_chunks=3 is larger than the cache this model keeps"):
        causal("a red circle", window_chunks=3, **kw)


@pytest.mark.slow  # 1,025 frames through the stream: about 11 s
def test_memory_stays_flat_over_1025_frames(causal, load_script):
    """The frames alive in the process while 1,025 frames stream (every tensor of 32x32 RGB frames, counted once per
    storage) stay at a chunk's worth, the same late in the video as early, and the KV cache holds the sink and the
    window: nothing grows with length."""
    frames_held = load_script("eval/long_video.py").frames_held
    causal.set_progress_bar_config(disable=True)
    readings, made = [], 0
    for i, part in enumerate(causal.stream("a red circle", num_frames=1025, height=32, width=32, output_type="pt",
                                           generator=_g())):
        made += part.shape[1]
        del part
        if i % 16 == 0:  # the scan walks every object the garbage collector tracks: every 16th chunk
            readings.append((made, frames_held(32)))
    assert made == 1025
    half = len(readings) // 2
    early, late = max(n for _, n in readings[:half]), max(n for _, n in readings[half:])
    assert late <= early <= 16, readings  # a chunk's 4 frames and the decoder's, never the video's

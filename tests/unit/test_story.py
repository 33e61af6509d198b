"""Long videos and prompt schedules (vidgen.pipelines.story) on tiny pipelines with live weights: exact frame counts,
the given latent frames kept exactly, determinism, streamed == in-memory, and a bound on the latent frames held."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vidgen.errors import InvalidInputError
from vidgen.pipelines.story import Segment, Story, latent_start, parse_schedule, plan_chunks

pytestmark = pytest.mark.usefixtures("one_thread")
KINDS = ("masked", "flow", "autoregressive")
SIZE = dict(height=16, width=16)
STORY = {0: "a red circle moving right", 10: "a blue square moving up", 19: "a green star rotating"}
STEPS = {"masked": dict(num_inference_steps=2), "flow": dict(num_inference_steps=2), "autoregressive": {}}


@pytest.fixture(scope="module")
def pipes(tiny_pipeline):
    return {kind: tiny_pipeline(kind) for kind in KINDS}


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- schedules
def test_a_prompt_takes_over_at_the_first_latent_frame_starting_at_or_after_its_index():
    # latent frame 0 = frame 0; latent frame j >= 1 = frames 1 + 4 (j - 1) ... 4 j
    assert [latent_start(f, 4) for f in (0, 1, 2, 4, 5, 6, 40, 41, 42)] == [0, 1, 2, 2, 2, 3, 11, 11, 12]
    segments = parse_schedule({0: "a", 41: "b", 13: "c"}, 100, 4)
    assert [(s.frame, s.latent_start, s.prompt) for s in segments] == [(0, 0, "a"), (13, 4, "c"), (41, 11, "b")]


def test_negative_prompts_follow_their_own_schedule_and_a_switch_splits_a_segment():
    segments = parse_schedule({0: "a", 20: "b"}, 40, 4, negative_prompt={0: "x", 9: "y"})
    assert segments == [Segment(0, 0, "a", "x"), Segment(9, 3, "a", "y"), Segment(20, 6, "b", "y")]
    assert [s.negative_prompt for s in parse_schedule({0: "a", 20: "b"}, 40, 4, "n")] == ["n", "n"]
    # a later negative switch splits the segment it falls in, not an earlier split of another one
    assert parse_schedule({0: "a", 24: "b"}, 60, 4, negative_prompt={0: "x", 9: "y", 29: "z"}) == [
        Segment(0, 0, "a", "x"), Segment(9, 3, "a", "y"), Segment(24, 7, "b", "y"), Segment(29, 8, "b", "z")]


@pytest.mark.parametrize("schedule, num_frames, match", [
    ({0: "a", 2.5: "b"}, 40, "frame index 2.5 is not an integer"),
    ({0: "a", "8": "b"}, 40, "'8' is not an integer"),
    ({0: "a", True: "b"}, 40, "True is not an integer"),
    ({0: "a", -4: "b"}, 40, "frame index -4 is negative"),
    ({0: "a", 40: "b"}, 40, "frame index 40 is beyond the video"),
    ({0: "a", 8: "  "}, 40, "prompt at frame 8 is empty"),
    ({0: "a", 8: None}, 40, "prompt at frame 8 is empty or not a string"),
    ({4: "a", 8: "b"}, 40, "no prompt at frame 0"),
    ({}, 40, "an empty schedule"),
    ({0: "a", 1: "b", 5: "c"}, 6, "3 prompts for 6 frames, which are 3 latent frames"),  # ok count, see below
    ({0: "a", 1: "b", 5: "c", 6: "d"}, 8, "4 prompts for 8 frames, which are 3 latent frames"),
    ({0: "a", 6: "b", 8: "c"}, 40, "frames 6 and 8 both start at latent frame 3"),
    ({0: "a", 6: "b"}, 8, "frame 6 would start at latent frame 3 .output frame 9., after the video's last"),
])
def test_bad_schedules_get_a_named_error(schedule, num_frames, match):
    if match.startswith("3 prompts"):  # 6 frames are latent frames 0, 1 (1-4), 2 (5-8): one prompt each is fine
        assert [s.latent_start for s in parse_schedule(schedule, num_frames, 4)] == [0, 1, 2]
        return
    with pytest.raises(InvalidInputError, match=match):
        parse_schedule(schedule, num_frames, 4)


def test_chunks_cover_every_latent_frame_once_within_the_window_and_never_cross_a_prompt():
    segments = parse_schedule({0: "a", 21: "b", 30: "c"}, 101, 4)
    for window, context in ((5, 0), (5, 2), (5, 4), (3, 1)):
        chunks = plan_chunks(26, window, context, segments)
        covered = [i for c in chunks for i in range(c.start, c.start + c.new)]
        assert covered == list(range(26))
        assert all(c.given == min(context, c.start) and c.given + c.new <= window for c in chunks)
        bounds = [s.latent_start for s in segments]
        assert all(not (c.start < b < c.start + c.new) for c in chunks for b in bounds)
        assert all(segments[c.segment].latent_start <= c.start for c in chunks)
    with pytest.raises(InvalidInputError, match=r"context_frames must be in \[0, 4\]"):
        plan_chunks(26, 5, 5, segments)


def test_the_engine_refuses_a_chunk_that_changed_its_given_frames():
    chunks = plan_chunks(6, 3, 1, parse_schedule("a", 21, 4))

    def sample(index, given, new):  # returns the right count, but rewrites the given frame
        return torch.arange(new + (0 if given is None else 1))[None].float() + (0 if given is None else 100)
    with pytest.raises(RuntimeError, match="changed the 1 latent frames it was given"):
        list(Story(chunks, sample, 1, 21).latents())


# ---------------------------------------------------------------------------------------------- pipelines
def story_video(pipe, kind, prompt=STORY, num_frames=30, seed=0, **kw):
    return pipe(prompt, num_frames=num_frames, generator=g(seed), **SIZE, **STEPS[kind], **kw).frames


@pytest.mark.parametrize("kind", KINDS)
def test_a_story_gives_exactly_the_asked_frames_deterministically_and_streamed_equals_in_memory(pipes, kind):
    pipe = pipes[kind]
    video = story_video(pipe, kind)
    assert video.shape == (1, 30, 16, 16, 3)  # 30 is no 4k+1 count: nothing added or dropped
    assert np.array_equal(video, story_video(pipe, kind))  # same seed, same video
    assert not np.array_equal(video, story_video(pipe, kind, seed=1))
    parts = list(pipe.stream(STORY, num_frames=30, generator=g(0), **SIZE, **STEPS[kind]))
    assert len(parts) > 1 and sum(p.shape[1] for p in parts) == 30
    assert np.array_equal(np.concatenate(parts, 1), video)
    latents = pipe(STORY, num_frames=30, generator=g(0), output_type="latent", **SIZE, **STEPS[kind]).frames
    assert latents.shape[pipe.frame_axis] == pipe.video_tokenizer.latent_grid(30, 16, 16)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_each_chunk_keeps_its_given_frames_and_holds_a_bounded_number_of_latent_frames(pipes, kind, monkeypatch):
    """Structural memory bound: over a video of 25 latent frames, no generator call sees more than one window of
    latent frames, and at most ``context_frames`` latent frames are kept between chunks, whatever the length."""
    pipe, calls = pipes[kind], []
    original = type(pipe)._continue

    def spy(self, rows, generator, cond, negative, given, new, hw, config):
        window = original(self, rows, generator, cond, negative, given, new, hw, config)
        k = 0 if given is None else given.shape[pipe.frame_axis]
        calls.append((k, new, window.shape[pipe.frame_axis]))
        return window
    monkeypatch.setattr(type(pipe), "_continue", spy)
    story = pipe._story({0: "a red circle moving right", 50: "a blue square moving up"}, None, 97, 16, 16, 1, g(0),
                        pipe.sampling_config.replace(**STEPS[kind]), False, "np")
    frames = sum(part.shape[2] for part in story.frames())
    assert frames == 97
    context = pipe.sampling_config.context_frames
    assert max(k + n for k, n, _ in calls) <= pipe.window and all(w == k + n for k, n, w in calls)
    assert all(k == context for k, _, _ in calls[1:]) and calls[0][0] == 0
    assert story.max_held == context and story.held.shape[pipe.frame_axis] == context
    assert sum(n for _, n, _ in calls) == pipe.video_tokenizer.latent_grid(97, 16, 16)[0]


@pytest.mark.parametrize("kind", ["masked", "flow"])
def test_one_prompt_longer_than_the_window_is_made_in_chunks(pipes, kind):
    pipe = pipes[kind]
    video = pipe("a red circle moving right", num_frames=23, generator=g(0), **SIZE, **STEPS[kind]).frames
    assert video.shape[1] == 23
    short = pipe("a red circle moving right", num_frames=13, generator=g(0), **SIZE, **STEPS[kind]).frames
    assert short.shape[1] == 13  # one window: the plain call


def test_autoregressive_story_engine_equals_its_sliding_context_for_one_prompt(pipes):
    """One long prompt: pipe(...) slides the KV-cache context frame by frame (iter_frames); stream(...) runs the
    story engine with context_frames = window - 1. Same tokens; the frames agree to float rounding (the first
    window's latent frames go through the stream decoder together here, one by one there)."""
    pipe, prompt = pipes["autoregressive"], "a red circle moving right"
    ids = pipe(prompt, num_frames=30, generator=g(3), output_type="latent", **SIZE).frames
    assert torch.equal(torch.cat(list(pipe.stream(prompt, num_frames=30, generator=g(3), output_type="latent",
                                                  **SIZE)), 1), ids)
    video = pipe(prompt, num_frames=30, generator=g(3), **SIZE).frames
    streamed = np.concatenate(list(pipe.stream(prompt, num_frames=30, generator=g(3), **SIZE)), 1)
    np.testing.assert_allclose(streamed, video, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_story_mode_refuses_what_it_does_not_support_by_name(pipes, kind):
    pipe = pipes[kind]
    with pytest.raises(InvalidInputError, match="callback_on_step_end: not supported for long videos"):
        pipe(STORY, num_frames=30, callback_on_step_end=lambda *a: {}, **SIZE)
    with pytest.raises(InvalidInputError, match="context_frames must be in"):
        pipe(STORY, num_frames=30, context_frames=pipe.window, **SIZE)
    with pytest.raises(InvalidInputError, match="output_type must be 'np', 'pt' or 'latent'"):
        pipe.stream(STORY, num_frames=30, output_type="pil", **SIZE)
    with pytest.raises(InvalidInputError, match="frame index 30 is beyond"):
        pipe.stream({0: "a", 30: "b"}, num_frames=30, **SIZE)


# ---------------------------------------------------------------------------------------------- continuation
def init_frames(n: int = 9) -> torch.Tensor:
    """A video to continue: (1, 3, n, 16, 16) in [-1, 1]."""
    return torch.rand(1, 3, n, 16, 16, generator=g(7)) * 2 - 1


@pytest.mark.parametrize("kind", KINDS)
def test_conditioning_frames_continue_a_video_longer_than_the_window(pipes, kind):
    """9 given frames (3 latent frames) continued to 30 frames (9 latent frames, windows of 4): the given latent
    frames come back exactly, the call equals the stream, and the continuation depends on the given frames."""
    pipe, prompt, init = pipes[kind], "a red circle moving right", init_frames()
    k = 3
    given = pipe.transformer.encode_videos(pipe.video_tokenizer, init)
    assert given.shape[pipe.frame_axis] == k
    latents = pipe(prompt, num_frames=30, conditioning_frames=init, generator=g(0), output_type="latent", **SIZE,
                   **STEPS[kind]).frames
    assert latents.shape[pipe.frame_axis] == 9
    assert torch.equal(latents.narrow(pipe.frame_axis, 0, k), given)
    streamed = torch.cat(list(pipe.stream(prompt, num_frames=30, conditioning_frames=init, generator=g(0),
                                          output_type="latent", **SIZE, **STEPS[kind])), pipe.frame_axis)
    assert torch.equal(streamed, latents)
    video = pipe(prompt, num_frames=30, conditioning_frames=init, generator=g(0), **SIZE, **STEPS[kind]).frames
    assert video.shape == (1, 30, 16, 16, 3)
    parts = list(pipe.stream(prompt, num_frames=30, conditioning_frames=init, generator=g(0), **SIZE, **STEPS[kind]))
    np.testing.assert_allclose(np.concatenate(parts, 1), video, atol=1e-5, rtol=0)
    other = pipe(prompt, num_frames=30, conditioning_frames=-init, generator=g(0), output_type="latent", **SIZE,
                 **STEPS[kind]).frames
    assert not torch.equal(other.narrow(pipe.frame_axis, k, 9 - k), latents.narrow(pipe.frame_axis, k, 9 - k))


@pytest.mark.parametrize("kind", KINDS)
def test_a_long_continuation_gives_its_first_chunk_every_given_frame_that_fits(pipes, kind, monkeypatch):
    """The first chunk is given as many of the given latent frames as fit (at most window - 1), later chunks the
    last context_frames; nothing is sampled twice, a story may continue a video too, and a whole video given is
    its reconstruction."""
    pipe, calls = pipes[kind], []
    original = type(pipe)._continue

    def spy(self, rows, generator, cond, negative, given, new, hw, config):
        calls.append((0 if given is None else given.shape[pipe.frame_axis], new))
        return original(self, rows, generator, cond, negative, given, new, hw, config)
    monkeypatch.setattr(type(pipe), "_continue", spy)
    story = {0: "a red circle moving right", 17: "a blue square moving up"}
    video = pipe(story, num_frames=30, conditioning_frames=init_frames(13), generator=g(0), **SIZE,
                 **STEPS[kind]).frames
    assert video.shape[1] == 30
    assert calls[0] == (3, 1) and sum(n for _, n in calls) == 9 - 4  # 13 frames = 4 latent frames given
    calls.clear()
    whole = pipe("a red circle moving right", num_frames=30, conditioning_frames=init_frames(30), generator=g(0),
                 output_type="latent", **SIZE, **STEPS[kind]).frames
    assert calls == [] and whole.shape[pipe.frame_axis] == 9


def test_the_autoregressive_stream_continues_as_its_sliding_context_does(pipes):
    pipe, prompt, init = pipes["autoregressive"], "a red circle moving right", init_frames()
    ids = pipe(prompt, num_frames=30, conditioning_frames=init, generator=g(3), output_type="latent", **SIZE).frames
    assert torch.equal(torch.cat(list(pipe.stream(prompt, num_frames=30, conditioning_frames=init, generator=g(3),
                                                  output_type="latent", **SIZE)), 1), ids)


def test_a_prompt_inside_the_given_frames_is_refused_by_name(pipes):
    with pytest.raises(InvalidInputError, match=r"prompt: the prompt at frame 5 starts at latent frame 2, inside the "
                                                r"3 latent frames the conditioning_frames give .*schedule it at frame "
                                                r"9 or later"):
        pipes["masked"]({0: "a", 5: "b"}, num_frames=30, conditioning_frames=init_frames(), **SIZE)


def test_the_causal_pipeline_says_it_cannot_continue_a_video(tiny_pipeline):
    from vidgen.errors import UnsupportedError
    pipe = tiny_pipeline("causal")
    assert pipe.continuation_refusal
    with pytest.raises(UnsupportedError, match="conditioning_frames: CausalVideoPipeline cannot continue a video"):
        pipe.stream("a red circle", num_frames=9, conditioning_frames=init_frames(), **SIZE)


def test_the_documented_takeover_rule_and_the_error_that_names_the_next_free_frame():
    """docs/stories.md: prompts closer than tc frames are accepted when they start different latent frames
    ({0, 2}: frame 2 takes over at output frame 5); frame 50 moves to 53; two prompts in one latent frame are refused
    with the first frame the second could be scheduled at."""
    from vidgen.pipelines.story import first_output_frame
    segments = parse_schedule({0: "a", 2: "b", 50: "c"}, 60, 4)
    assert [(s.latent_start, first_output_frame(s.latent_start, 4)) for s in segments] == [(0, 0), (2, 5), (14, 53)]
    with pytest.raises(InvalidInputError, match=r"frames 6 and 7 both start at latent frame 3 \(output frame 9\): a "
                                                r"prompt takes over at .*schedule the second at frame 13 or later"):
        parse_schedule({0: "a", 6: "b", 7: "c"}, 40, 4)

"""Long videos and prompt schedules (Phenaki's story mode) for every pipeline, by continuation in latent chunks.

A **prompt schedule** is diffusers' FreeNoise convention: ``prompt={0: "a red circle moving right", 40: "a red
circle moving up"}``, keys are output frame indices. Generation runs in latent frames, so a prompt takes over at
the **first latent frame that starts at or after its frame index**: latent frame 0 is output frame 0, latent frame
``j >= 1`` covers output frames ``1 + (j - 1) * tc ... j * tc`` (``tc``: the tokenizer's temporal compression), so
a prompt scheduled at frame ``f > 0`` starts at latent frame ``ceil((f - 1) / tc) + 1``, i.e. at output frame
``1 + ceil((f - 1) / tc) * tc`` (with ``tc = 4``: frame 40 -> frame 41, frame 41 -> frame 41, frame 42 -> 45).

**Continuation.** A video of any length is made in chunks of at most ``window`` latent frames (the generator's
trained length): the first chunk from scratch, each later one given the last ``context`` latent frames generated
before it (kept exactly: the masked generator's frame-prediction task, the flow generator's conditioning latents,
the autoregressive generator's sliding context with the new prompt's prefix) and generating the rest. A chunk never
crosses a prompt boundary, so each chunk has one prompt. Only the last ``context`` latent frames and the tokenizer's
stream decoder are kept between chunks: memory does not grow with length, and each decoded frame is handed out as
soon as it is final (:meth:`Story.frames`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from vidgen.errors import InvalidInputError
from vidgen.tokenizers.causal_codec import latent_frames


@dataclass(frozen=True)
class Segment:
    """One entry of a prompt schedule: the frame index it was scheduled at, the latent frame it starts at, and
    its prompt (and negative prompt, or None). A long video without a schedule is one segment whose prompt is
    whatever the call was given (a string, a list of them for a batch, or None)."""

    frame: int
    latent_start: int
    prompt: object
    negative_prompt: object = None


def latent_start(frame: int, temporal_compression: int) -> int:
    """The first latent frame whose first output frame is at or after ``frame``."""
    return 0 if frame == 0 else latent_frames(frame, temporal_compression)  # the latent frames of frames [0, frame)


def first_output_frame(latent: int, temporal_compression: int) -> int:
    """The first output frame of latent frame ``latent``."""
    return 0 if latent == 0 else 1 + (latent - 1) * temporal_compression


def is_schedule(prompt) -> bool:
    return isinstance(prompt, dict)


def check_schedule(schedule: dict, name: str, num_frames: int) -> list[tuple[int, str]]:
    """The checks of a ``{frame_index: prompt}`` schedule that need no model: -> its entries, sorted."""
    if not schedule:
        raise InvalidInputError(f"{name}: an empty schedule; give {{0: 'first prompt', frame: 'next prompt', ...}}")
    entries = []
    for frame, text in schedule.items():
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise InvalidInputError(f"{name}: frame index {frame!r} is not an integer (keys are output frame indices)")
        if frame < 0:
            raise InvalidInputError(f"{name}: frame index {frame} is negative")
        if frame >= num_frames:
            raise InvalidInputError(f"{name}: frame index {frame} is beyond the video (num_frames={num_frames}, last "
                                    f"frame {num_frames - 1})")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"{name}: the prompt at frame {frame} is empty or not a string: {text!r}")
        entries.append((frame, text))
    entries.sort()
    if entries[0][0] != 0:
        raise InvalidInputError(f"{name}: the schedule has no prompt at frame 0 (first index {entries[0][0]}); "
                                "every frame needs a prompt")
    return entries


def parse_schedule(prompt, num_frames: int, temporal_compression: int, negative_prompt=None) -> list[Segment]:
    """Check a prompt schedule (``{frame_index: prompt}``, or one prompt for the whole video) and an optional
    negative prompt (one string, or a schedule of its own) -> the segments, in order, each with the latent frame it
    starts at. Two prompts that would start at the same latent frame, or a prompt at a frame the video's latent
    frames cannot give a segment of its own, are an error, not a silent drop."""
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise InvalidInputError(f"num_frames must be a positive int, got {num_frames!r}")
    entries = check_schedule(prompt, "prompt", num_frames) if is_schedule(prompt) else [(0, prompt)]
    total = latent_frames(num_frames, temporal_compression)  # latent frames of the whole video
    if len(entries) > total:
        raise InvalidInputError(f"prompt: {len(entries)} prompts for {num_frames} frames, which are {total} latent "
                                f"frames: at most one prompt per latent frame ({temporal_compression} frames)")
    negatives = check_schedule(negative_prompt, "negative_prompt", num_frames) if is_schedule(negative_prompt) \
        else [(0, negative_prompt)]
    starts = [latent_start(f, temporal_compression) for f, _ in entries]
    neg_starts = [latent_start(f, temporal_compression) for f, _ in negatives]
    for (f0, _), (f1, _), s0, s1 in zip(entries, entries[1:], starts, starts[1:]):
        if s1 == s0:
            raise InvalidInputError(
                f"prompt: the prompts at frames {f0} and {f1} both start at latent frame {s0} (output frame "
                f"{first_output_frame(s0, temporal_compression)}): a prompt takes over at the first latent frame "
                f"starting at or after its frame; schedule the second at frame "
                f"{first_output_frame(s0 + 1, temporal_compression)} or later")
    for (frame, _), start in zip(entries + negatives, starts + neg_starts):
        if start >= total:
            raise InvalidInputError(f"prompt: the prompt at frame {frame} would start at latent frame {start} (output "
                                    f"frame {first_output_frame(start, temporal_compression)}), after the video's last "
                                    f"latent frame {total - 1}; schedule it earlier or ask for more frames")
    segments = []
    for (frame, text), start in zip(entries, starts):
        negative = [n for (_, n), s in zip(negatives, neg_starts) if s <= start][-1]
        segments.append(Segment(frame, start, text, negative))
    # a negative prompt switching inside a segment splits it (same prompt, new negative)
    for (frame, negative), start in zip(negatives, neg_starts):
        if start not in starts:
            current = max((s for s in segments if s.latent_start < start), key=lambda s: s.latent_start)
            segments.append(Segment(frame, start, current.prompt, negative))
            starts.append(start)
    return sorted(segments, key=lambda s: s.latent_start)


@dataclass(frozen=True)
class Chunk:
    """One generator call: ``given`` latent frames from the previous chunks, then ``new`` latent frames starting at
    latent frame ``start``, all under ``segment``."""

    start: int
    given: int
    new: int
    segment: int


def plan_chunks(num_latent: int, window: int, context: int, segments: list[Segment], given: int = 0) -> list[Chunk]:
    """Cover latent frames ``given .. num_latent - 1`` with chunks of at most ``window`` latent frames each, every
    chunk after the first given the last ``context`` latent frames before it, none crossing a segment boundary.
    ``given``: latent frames the caller gave (a video to continue); the first chunk continues them as one window
    would, given as many of them as fit (at most ``window - 1``)."""
    if not 0 <= context < window:
        raise InvalidInputError(f"context_frames must be in [0, {window - 1}] (latent frames given to each chunk, "
                                f"fewer than the generator's window of {window}), got {context}")
    bounds = [s.latent_start for s in segments[1:]] + [num_latent]
    chunks, pos, seg = [], given, 0
    while pos < num_latent:
        while bounds[seg] <= pos:
            seg += 1
        given = min(window - 1, pos) if not chunks and given else min(context, pos)
        new = min(window - given, bounds[seg] - pos)
        chunks.append(Chunk(pos, given, new, seg))
        pos += new
    return chunks


class Story:
    """Runs a chunk plan. ``sample_chunk(segment_index, given, new)`` returns the window: the ``given`` latent frames
    (None for the first chunk), which must come back exactly as given (checked at every chunk), then ``new`` latent
    frames continuing them, along ``frame_axis`` (1 for ids (B, t, h, w), 2 for latents (B, C, t, h, w));
    ``decoder`` has ``push(latents) -> frames`` (the tokenizer's stream decoder; None: hand out latents).

    Holds at most ``context`` latent frames between chunks (:attr:`held`, checked by the tests), and the frames of
    one chunk while it is decoded."""

    def __init__(self, chunks: list[Chunk], sample_chunk: Callable, frame_axis: int, num_frames: int,
                 decoder=None, progress: Optional[Callable] = None, prefix: Optional[torch.Tensor] = None):
        """``prefix``: latent frames given by the caller (a video to continue), handed out first as they are; the
        first chunk is given its last ones."""
        self.chunks, self.sample_chunk, self.axis = chunks, sample_chunk, frame_axis
        self.context = max((c.given for c in chunks), default=0)
        self.num_frames, self.decoder, self.progress = num_frames, decoder, progress
        self.prefix = prefix
        self.held: Optional[torch.Tensor] = None
        self.max_held = 0  # the most latent frames kept between chunks, over the whole run

    def latents(self) -> Iterator[torch.Tensor]:
        """The new latent frames of each chunk, in order (after the prefix, if one was given)."""
        bar = self.progress(sum(c.new for c in self.chunks))(None) if self.progress else None
        if self.prefix is not None:
            n = self.prefix.shape[self.axis]
            self.held = self.prefix.narrow(self.axis, n - min(self.context, n), min(self.context, n))
            yield self.prefix
        for chunk in self.chunks:
            given = None if chunk.given == 0 else self.held.narrow(self.axis, self.held.shape[self.axis] - chunk.given,
                                                                   chunk.given)
            window = self.sample_chunk(chunk.segment, given, chunk.new)
            n = window.shape[self.axis]
            if n != chunk.given + chunk.new:
                raise RuntimeError(f"a chunk sampler returned {n} latent frames, not {chunk.given} + {chunk.new}")
            if given is not None and not torch.equal(window.narrow(self.axis, 0, chunk.given), given):
                raise RuntimeError(f"the chunk at latent frame {chunk.start} changed the {chunk.given} latent frames "
                                   "it was given (the generator must keep them exactly)")
            new = window.narrow(self.axis, chunk.given, chunk.new)
            self.held = window.narrow(self.axis, max(0, n - self.context), min(self.context, n)).clone()  # drop the rest
            self.max_held = max(self.max_held, self.held.shape[self.axis])
            if bar is not None:
                bar.update(chunk.new)
            yield new
        if bar is not None:
            bar.close()

    def frames(self) -> Iterator[torch.Tensor]:
        """Decoded frames (B, 3, n, H, W) in [-1, 1], each chunk's as soon as it is final; exactly ``num_frames`` in
        all (the last latent frame's extra frames are dropped)."""
        left = self.num_frames
        for new in self.latents():
            pixels = self.decoder.push(new)[:, :, :left]
            left -= pixels.shape[2]
            if pixels.shape[2]:
                yield pixels
        if left:
            raise RuntimeError(f"the stream decoder gave {self.num_frames - left} frames, {self.num_frames} asked")

"""Stories for the demo page and ``eval/long_video.py``: a prompt schedule cycling colour and motion over seen pairs,
streamed through ``pipe.stream`` and scored segment by segment as it is made (only the current segment's frames are
held).

Each segment is scored on its last :data:`SCORED_FRAMES` frames (the clip length the scorer was calibrated on) for
colour and motion against its own prompt; its flicker is the mean absolute frame-to-frame change over the whole
segment; its drift compares the object's mean colour and area with a real clip of the same prompt from the shapes
renderer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

SCORED_FRAMES = 17
STORY_SHAPE, STORY_BACKGROUND = "square", "black"


def story_prompts(segments: int, shape: str = STORY_SHAPE, background: str = STORY_BACKGROUND) -> list:
    """``segments`` seen-pair attributes cycling colour and motion (one shape and background), in order."""
    from vidgen.data.shapes import COLORS, HELD_OUT_PAIRS, MOTIONS, ShapeAttributes
    held, out, i = set(HELD_OUT_PAIRS), [], 0
    colors = list(COLORS)
    while len(out) < segments:
        color, motion = colors[i % len(colors)], MOTIONS[(i // len(colors) + i) % len(MOTIONS)]
        if (color, motion) not in held:
            out.append(ShapeAttributes(shape, color, motion, background))
        i += 1
    return out


def object_stats(scorer, clip: torch.Tensor) -> Optional[dict]:
    """Mean colour (RGB in [0, 1]) and area fraction of the dominant palette object of ``clip`` (3, T, H, W)."""
    frames = ((clip.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0)  # (T, H, W, 3) in [0, 1]
    assigned = scorer.color_masks(frames)
    if (assigned >= 0).sum() == 0:
        return None
    mask = assigned == int(torch.bincount(assigned[assigned >= 0]).argmax())
    return {"rgb": [round(float(v), 4) for v in frames[mask].mean(0)], "area": float(mask.float().mean())}


@dataclass
class ScoredSegment:
    index: int
    prompt: str
    expected: dict
    detected: dict
    flicker: float
    drift: Optional[dict]
    clip: torch.Tensor  # the scored frames (3, SCORED_FRAMES, H, W) in [-1, 1]
    real: torch.Tensor  # a real clip of the same prompt, same size

    @property
    def color_motion(self) -> bool:
        return self.detected["color"] == self.expected["color"] and self.detected["motion"] == self.expected["motion"]

    def to_dict(self) -> dict:
        return {"index": self.index, "prompt": self.prompt, "expected": self.expected, "detected": self.detected,
                "color_motion": self.color_motion, "flicker": self.flicker, "drift": self.drift}


def score_segment(scorer, frames: torch.Tensor, attributes, index: int) -> ScoredSegment:
    """One segment's frames (3, n, H, W) in [-1, 1] against its prompt's ``attributes`` and a real clip of them."""
    from vidgen.data.common import make_generator
    from vidgen.data.shapes import render_shape_video
    clip = frames[:, -SCORED_FRAMES:]
    real = render_shape_video(attributes, clip.shape[1], tuple(clip.shape[-2:]),
                              make_generator(index, "story/real", 0)).clamp(-1, 1)
    mine, theirs = object_stats(scorer, clip), object_stats(scorer, real)
    drift = None
    if mine and theirs:
        drift = {"rgb_distance": float((torch.tensor(mine["rgb"]) - torch.tensor(theirs["rgb"])).norm()),
                 "area_ratio": mine["area"] / max(theirs["area"], 1e-6)}
    flicker = float((frames[:, 1:] - frames[:, :-1]).abs().mean()) if frames.shape[1] > 1 else 0.0
    return ScoredSegment(index, attributes.caption, {"color": attributes.color, "motion": attributes.motion},
                         scorer(clip).to_dict(), flicker, drift, clip, real)


def run_story(pipe, attributes: list, frames_per_segment: int, num_frames: int, seed: int, size: int = 64,
              on_frames: Optional[Callable[[torch.Tensor], None]] = None, scorer=None,
              context_frames: Optional[int] = None) -> Iterator[ScoredSegment]:
    """Stream the story of ``attributes`` (one prompt every ``frames_per_segment`` frames, ``num_frames`` in all) and
    yield each segment, scored, as soon as its last frame is made. ``on_frames(chunk)`` receives every chunk
    (3, n, H, W) in [-1, 1] first (e.g. a :class:`~vidgen.io.VideoWriter`); ``scorer=None``: nothing is scored and
    nothing yielded, the frames only go to ``on_frames``."""
    # a prompt needs a latent frame of its own: none starts in the last temporal_compression frames
    tc = pipe.video_tokenizer.codec_config.temporal_compression
    schedule = {i * frames_per_segment: a.caption for i, a in enumerate(attributes)
                if i == 0 or i * frames_per_segment < num_frames - tc}
    pending, done, index = None, 0, 0
    settings = {} if context_frames is None else {"context_frames": context_frames}  # the block-causal one has none
    for part in pipe.stream(schedule, num_frames=num_frames, height=size, width=size, **settings,
                            generator=torch.Generator().manual_seed(seed), output_type="pt"):
        chunk = part[0].permute(1, 0, 2, 3) * 2 - 1  # (3, n, H, W) in [-1, 1]
        if on_frames is not None:
            on_frames(chunk)
        done += chunk.shape[1]
        if scorer is None:
            continue
        pending = chunk if pending is None else torch.cat([pending, chunk], 1)
        while pending is not None:  # a segment is scored once its last frame is made
            last = index == len(schedule) - 1
            end = num_frames if last else min(frames_per_segment * (index + 1), num_frames)  # its end (output frames)
            if done < end:
                break
            cut = pending.shape[1] - (done - end)
            yield score_segment(scorer, pending[:, :cut], attributes[index], index)
            index += 1
            pending = pending[:, cut:] if cut < pending.shape[1] else None

"""Layered natural scenes: NaturalClips' camera paths with what real footage has and a still photograph lacks.

Over the moving background, up to four layers cut from photographs move on their own (dead-leaves style: soft-edged
round-to-square cut-outs that translate, accelerate, scale and turn, occluding each other and leaving the frame).
The shutter integrates the motion of every layer (motion blur along the true motion), and the camera adds exposure
and white-balance drift, sensor noise and JPEG or inter-frame compression (``vidgen.data.capture``).

Every clip is a pure function of ``(seed, split, index)``. Splits are by photograph, for the background and every
layer: ``train`` uses NaturalClips' 13 training photographs plus three from other installed packages
(``EXTRA_SOURCES``), ``val`` two more for choosing and stopping, and ``test`` NaturalClips' four held-out ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vidgen.data.capture import Capture, apply_capture, sample_capture
from vidgen.data.common import check_clip_format, check_split, make_generator, normalize_size
from vidgen.data.natural import TEST_SOURCES, TRAIN_SOURCES, load_source_image, render_camera_times, sample_camera_path
from vidgen.errors import InvalidInputError

SPLITS = {
    "train": TRAIN_SOURCES + ("grace_hopper", "cheetah", "tower"),
    "val": ("lion", "groot"),
    "test": TEST_SOURCES,
}
MAX_LAYERS = 4
#: Sub-frame samples averaged per frame when the shutter is open (5 keep a fast layer's blur smooth at 64-128 px).
BLUR_SAMPLES = 5


@dataclass(frozen=True)
class Layer:
    """One moving cut-out. Positions are in frame units (the frame spans [-1, 1] along its longer side), speeds per
    second. ``texture`` is the cut-out's centre in the source photograph (normalized [-1, 1]) and ``texture_size`` its
    half-size there (fraction of the source's short side). ``power`` 2 is an ellipse, larger tends to a rectangle."""

    source: str
    center: tuple[float, float]
    velocity: tuple[float, float]
    acceleration: tuple[float, float]
    size: float
    growth: float  # log-scale change per second
    angle: float
    spin: float  # radians per second
    aspect: float  # minor / major axis
    power: float
    softness: float  # edge width, in units of the cut-out's radius
    texture: tuple[float, float]
    texture_size: float


def sample_layer(generator: torch.Generator, sources: tuple[str, ...]) -> Layer:
    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    source = sources[int(torch.randint(len(sources), (), generator=generator))]
    speed, heading = uniform(0.0, 0.9), uniform(0.0, 2 * math.pi)
    spin = uniform(-1.5, 1.5) if uniform(0, 1) < 0.6 else 0.0
    texture_size = uniform(0.1, 0.3)
    return Layer(
        source=source,
        center=(uniform(-0.8, 0.8), uniform(-0.8, 0.8)),
        velocity=(speed * math.cos(heading), speed * math.sin(heading)),
        acceleration=(uniform(-0.3, 0.3), uniform(-0.3, 0.3)),
        size=uniform(0.15, 0.5), growth=uniform(-0.3, 0.3), angle=uniform(0, 2 * math.pi), spin=spin,
        aspect=uniform(0.5, 1.0), power=uniform(2.0, 6.0), softness=uniform(0.02, 0.15),
        texture=(uniform(-1 + 2 * texture_size, 1 - 2 * texture_size), uniform(-1 + 2 * texture_size, 1 - 2 * texture_size)),
        texture_size=texture_size,
    )  # fmt: skip


def render_layer(layer: Layer, seconds: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's colour ``(N, 3, H, W)`` and soft mask ``(N, 1, H, W)`` at ``seconds`` (N sample times)."""
    out_h, out_w = size
    longer = max(out_h, out_w)
    ys = torch.linspace(-1 + 1 / out_h, 1 - 1 / out_h, out_h) * out_h / longer  # pixel centres, isotropic units
    xs = torch.linspace(-1 + 1 / out_w, 1 - 1 / out_w, out_w) * out_w / longer
    t = seconds.float()[:, None, None]
    cx = layer.center[0] + layer.velocity[0] * t + 0.5 * layer.acceleration[0] * t**2
    cy = layer.center[1] + layer.velocity[1] * t + 0.5 * layer.acceleration[1] * t**2
    scale = layer.size * torch.exp(layer.growth * t)
    angle = layer.angle + layer.spin * t
    dx, dy = xs[None, None, :] - cx, ys[None, :, None] - cy
    u = (torch.cos(angle) * dx + torch.sin(angle) * dy) / scale  # cut-out coordinates: the unit disc is its extent
    v = (-torch.sin(angle) * dx + torch.cos(angle) * dy) / scale
    radius = (u.abs() ** layer.power + (v / layer.aspect).abs() ** layer.power) ** (1.0 / layer.power)
    mask = torch.sigmoid((1.0 - radius) / layer.softness)[:, None]
    image = load_source_image(layer.source)
    _, src_h, src_w = image.shape
    short = min(src_h, src_w)
    # Source coordinates (normalized per axis) of each output pixel; pre-blur the photo to the sampling rate.
    half = layer.texture_size * short
    step = half / (layer.size * longer / 2)  # source pixels per output pixel
    if step > 1.5:
        small = (max(8, round(src_h / step)), max(8, round(src_w / step)))
        image = F.interpolate(image[None], size=small, mode="bilinear", antialias=True, align_corners=False)[0]
    gx = layer.texture[0] + u * half * 2 / src_w
    gy = layer.texture[1] + v * half * 2 / src_h
    grid = torch.stack([gx, gy], dim=-1)  # (N, H, W, 2)
    colour = F.grid_sample(image.expand(len(seconds), -1, -1, -1), grid, mode="bilinear", padding_mode="reflection",
                           align_corners=False)
    return colour, mask


class SceneClips(Dataset):
    """Layered natural scenes with capture effects, split by photograph.

    Args:
        split: ``"train"``, ``"val"`` (photographs for choosing and stopping) or ``"test"`` (NaturalClips'
            held-out photographs).
        num_frames: frames per clip (any positive number); ``size``: int or ``(H, W)``; ``fps``: frame rate the
            motion is defined at (speeds are per second).
        num_clips: dataset length (default 16 per photograph); ``seed``: clips are a pure function of
            ``(seed, split, index)``.
        layers: largest number of moving layers (0 gives camera motion plus capture effects).
        blur, capture: turn motion blur and the capture effects off, e.g. to see what each does.

    Items are dicts: ``video`` (3, T, H, W) in [-1, 1], ``source`` (background photograph), ``motion`` (camera),
    ``layers``, ``shutter`` (fraction of the frame interval; 0 = no blur), ``codec``, ``index``, ``fps``.
    """

    def __init__(
        self,
        split: str = "train",
        num_frames: int = 17,
        size: int | tuple[int, int] = 64,
        fps: float = 8.0,
        num_clips: int | None = None,
        seed: int = 0,
        layers: int = MAX_LAYERS,
        blur: bool = True,
        capture: bool = True,
    ):
        check_split(split, tuple(SPLITS))
        check_clip_format(num_frames, fps)
        if not isinstance(layers, int) or not 0 <= layers <= MAX_LAYERS:
            raise InvalidInputError(f"layers must be an int in [0, {MAX_LAYERS}], got {layers!r}")
        self.split, self.sources = split, SPLITS[split]
        self.num_frames, self.size, self.fps, self.seed = num_frames, normalize_size(size), float(fps), seed
        self.layers, self.blur, self.capture = layers, bool(blur), bool(capture)
        self.num_clips = 16 * len(self.sources) if num_clips is None else num_clips
        if not isinstance(self.num_clips, int) or self.num_clips < 1:
            raise InvalidInputError(f"num_clips must be a positive int, got {num_clips!r}")

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"SceneClips index {index} out of range [0, {self.num_clips})")
        generator = make_generator(self.seed, f"scenes/{self.split}", index)
        source = self.sources[index % len(self.sources)]
        frames, fps = self.num_frames, self.fps
        path = sample_camera_path(generator, duration=frames / fps)
        count = int(torch.randint(self.layers + 1, (), generator=generator))
        layers = [sample_layer(generator, self.sources) for _ in range(count)]
        shutter = 0.0
        if torch.rand((), generator=generator).item() < 0.6:
            shutter = 0.3 + 0.7 * torch.rand((), generator=generator).item()
        capture = sample_capture(generator) if self.capture else Capture()
        # Sample times (in frames) inside each frame's open shutter, then averaged: blur follows every layer's motion.
        samples = BLUR_SAMPLES if (self.blur and shutter > 0 and frames > 1) else 1
        offsets = torch.linspace(-shutter / 2, shutter / 2, samples) if samples > 1 else torch.zeros(1)
        times = (torch.arange(frames)[:, None] + offsets[None]).flatten()  # (T * samples,)
        clip_time = times / (frames - 1) if frames > 1 else torch.zeros_like(times)
        video = render_camera_times(load_source_image(source), path, clip_time, self.size).transpose(0, 1)
        for layer in layers:  # back to front: later layers occlude earlier ones
            colour, mask = render_layer(layer, times / fps, self.size)
            video = video * (1 - mask) + colour * mask
        video = video.reshape(frames, samples, 3, *self.size).mean(1).transpose(0, 1).clamp(-1.0, 1.0)  # (3, T, H, W)
        video = apply_capture(video, capture, generator)
        return {"video": video, "source": source, "motion": path.motion, "layers": count, "shutter": shutter,
                "codec": capture.codec, "index": index, "fps": fps}

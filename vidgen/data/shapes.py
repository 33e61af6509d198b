"""Captioned procedural videos for text-to-video: a coloured shape moving on a background.

Each item carries its caption ("a red circle moving left on a textured background") and the ground-truth
attributes, so generated videos can be scored attribute by attribute. The ``"train"`` / ``"test"`` splits hold
out colour x motion pairs (:data:`HELD_OUT_PAIRS`): every colour and every motion is seen in training, but the
test pairs never are, which measures compositional generalization.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import Dataset

from vidgen.data.common import check_split, make_generator, normalize_size
from vidgen.errors import InvalidInputError

SHAPES = ("circle", "square", "triangle", "hexagon", "star")
COLORS = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.80, 0.25),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.60, 0.25, 0.85),
    "orange": (0.98, 0.55, 0.10),
    "white": (0.95, 0.95, 0.95),
    "cyan": (0.15, 0.85, 0.90),
}
MOTIONS = ("left", "right", "up", "down", "grow", "shrink", "rotate", "still")
BACKGROUNDS = ("black", "gray", "textured", "gradient")
#: One held-out motion per colour, each motion held out exactly once (a Latin-square pairing).
HELD_OUT_PAIRS = tuple((color, MOTIONS[(3 * i) % len(MOTIONS)]) for i, color in enumerate(COLORS))

_MOTION_PHRASES = {
    "left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
    "grow": "growing", "shrink": "shrinking", "rotate": "rotating", "still": "standing still",
}  # fmt: skip


@dataclass(frozen=True)
class ShapeAttributes:
    shape: str
    color: str
    motion: str
    background: str

    @property
    def caption(self) -> str:
        article = "an" if self.color[0] in "aeiou" else "a"
        return f"{article} {self.color} {self.shape} {_MOTION_PHRASES[self.motion]} on a {self.background} background"


def all_combinations(split: str = "all") -> list[ShapeAttributes]:
    """Every attribute combination belonging to ``split`` ("train", "test" or "all"), in a fixed order."""
    check_split(split, ("train", "test", "all"))
    held_out = set(HELD_OUT_PAIRS)
    combos = []
    for shape in SHAPES:
        for color in COLORS:
            for motion in MOTIONS:
                if shape == "circle" and motion == "rotate":
                    continue  # a rotating circle looks exactly like a still one: the caption would be wrong
                is_test = (color, motion) in held_out
                if split == "all" or (split == "test") == is_test:
                    combos.extend(ShapeAttributes(shape, color, motion, bg) for bg in BACKGROUNDS)
    return combos


def _polar_radius(shape: str, theta: torch.Tensor) -> torch.Tensor:
    """Boundary radius of a unit-size shape along direction ``theta`` (shape rotated by 0)."""
    if shape == "circle":
        return torch.ones_like(theta)
    if shape == "star":
        # five points: radius alternates between 1 and 0.45, linearly in angle within each arm
        sector = 2 * math.pi / 5
        frac = torch.remainder(theta + math.pi / 2, sector) / sector  # 0..1 within an arm
        return 0.45 + 0.55 * (1 - 2 * (frac - 0.5).abs()) ** 1.5
    sides = {"square": 4, "triangle": 3, "hexagon": 6}[shape]
    sector = 2 * math.pi / sides
    offset = {"square": math.pi / 4, "triangle": math.pi / 2, "hexagon": 0.0}[shape]
    local = torch.remainder(theta + offset, sector) - sector / 2
    return math.cos(math.pi / sides) / torch.cos(local)


def _background(kind: str, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    h, w = size
    if kind == "black":
        return torch.full((3, h, w), -0.9)
    if kind == "gray":
        return torch.full((3, h, w), -0.1)
    if kind == "gradient":
        hue = torch.rand(3, generator=generator) * 0.6 - 0.8
        ramp = torch.linspace(0, 1, h)[:, None].expand(h, w)
        return (hue[:, None, None] + 0.6 * ramp[None]).clamp(-1, 1)
    # textured: smooth random noise (sum of upsampled octaves), muted so the shape stays visible
    texture = torch.zeros(1, 1, h, w)
    for octave in (4, 8, 16):
        noise = torch.rand(1, 1, octave, octave, generator=generator)
        texture += torch.nn.functional.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False) / 3
    tint = torch.rand(3, 1, 1, generator=generator) * 0.3
    return (texture[0] * 0.7 - 0.85 + tint).clamp(-1, 1)


def _wrapped(extent: int, margin: float, u: float, offset: torch.Tensor) -> torch.Tensor:
    """Positions on a loop of ``extent + 2 * margin`` pixels (from ``-margin``): the mid-clip position is ``u`` (in
    [0, 1]) of the way along it, then ``offset`` is added, modulo the loop."""
    period = extent + 2 * margin
    return torch.remainder(u * period + offset, period) - margin


def check_wrap(wrap) -> None:
    """``wrap`` is ``False``, ``True`` (shapes leave the frame and re-enter), ``"torus"`` (shapes cross the edge) or
    ``"torus-late"`` (they start where ``wrap=False`` puts them, then cross the edge)."""
    if not (isinstance(wrap, bool) or wrap in ("torus", "torus-late")):
        raise InvalidInputError(f"wrap must be False, True (translating shapes leave the frame and re-enter), 'torus' "
                                f"(they cross the edge, drawn on both sides) or 'torus-late' (they start where "
                                f"wrap=False puts them, then cross the edge as on 'torus'), got {wrap!r}")


def check_motion_frames(motion_frames, num_frames: int) -> None:
    if motion_frames is not None and (isinstance(motion_frames, bool) or not isinstance(motion_frames, int)
                                      or not 2 <= motion_frames <= num_frames):
        raise InvalidInputError(f"motion_frames must be None (the motion spans the clip) or an int in [2, num_frames="
                                f"{num_frames}] (the motion's speed per frame is that of a clip of motion_frames "
                                f"frames, and goes on at that speed), got {motion_frames!r}")


def render_shape_video(
    attributes: ShapeAttributes, num_frames: int, size: tuple[int, int], generator: torch.Generator,
    return_coverage: bool = False, wrap: bool | str = False, motion_frames: int | None = None,
):
    """Render ``(3, T, H, W)`` in [-1, 1]; position, size, speed and texture jitter come from ``generator``. With
    ``return_coverage``: ``(video, coverage)``, coverage ``(T, H, W)`` in [0, 1] = how much of each pixel the shape
    covers (its antialiased silhouette).

    ``wrap`` (off by default; it changes translations only): a translating shape goes on past the frame's edge and
    re-enters from the opposite one, its position along the motion taken modulo the frame plus the shape's reach on
    both sides (so it is wholly outside at the wrap, never on both edges at once), and its mid-clip position lies
    anywhere on that loop (the same draw as without ``wrap``, mapped onto the loop): clips then show shapes leaving
    and re-entering, as a stream that keeps a caption's motion must. The speed, sizes and every other draw are the
    ones ``wrap=False`` makes.

    ``wrap="torus"``: the frame is a torus. A translating shape crossing an edge is drawn in part at both edges, so it
    is never absent, and its mid-clip position lies anywhere in the frame along its motion (the same draw, mapped
    onto the frame).

    ``wrap="torus-late"``: the shape starts where ``wrap=False`` puts it and crosses the edge as on ``"torus"``, so a
    clip is ``wrap=False``'s until the shape reaches an edge, and then drawn in part at both edges.

    ``motion_frames`` (default ``num_frames``): every motion (travel, growth, spin) goes at the speed per frame of a
    clip of ``motion_frames`` frames and goes on at that speed; the first ``motion_frames`` frames are then that
    clip's. Longer clips at the same speed show what comes after, e.g. a shape crossing the edge
    (``wrap="torus-late"``)."""
    check_wrap(wrap)
    check_motion_frames(motion_frames, num_frames)
    h, w = size
    short = min(h, w)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    radius0 = uniform(0.14, 0.2) * short
    travel = uniform(0.35, 0.5) * short  # distance covered over the clip for translations
    cx0, cy0 = uniform(0.35, 0.65) * w, uniform(0.35, 0.65) * h
    angle0 = uniform(0, 2 * math.pi) if attributes.shape != "circle" else 0.0
    t = torch.linspace(0, 1, num_frames) if num_frames > 1 else torch.zeros(1)
    if motion_frames is not None and motion_frames != num_frames:  # that clip's times, then on at its pace
        t = torch.cat([torch.linspace(0, 1, motion_frames),
                       torch.arange(motion_frames, num_frames, dtype=torch.float32) / (motion_frames - 1)])
    dx = {"left": -1.0, "right": 1.0}.get(attributes.motion, 0.0)
    dy = {"up": -1.0, "down": 1.0}.get(attributes.motion, 0.0)
    cx, cy = cx0 + dx * travel * (t - 0.5), cy0 + dy * travel * (t - 0.5)
    if wrap in (True, "torus") and (dx or dy):
        # True: the loop adds the shape's reach from its centre (polar radius <= 1) and the antialiased edge on both
        # sides; a torus is the frame itself
        margin = 0.0 if wrap == "torus" else radius0 + 1.0
        if dx:
            cx = _wrapped(w, margin, (cx0 / w - 0.35) / 0.3, dx * travel * (t - 0.5))
        else:
            cy = _wrapped(h, margin, (cy0 / h - 0.35) / 0.3, dy * travel * (t - 0.5))
    growth = {"grow": 1.8, "shrink": 1 / 1.8}.get(attributes.motion, 1.0)
    radius = radius0 * growth ** (t - 0.5)
    spin = uniform(0.6, 1.0) * math.pi if attributes.motion == "rotate" else 0.0
    angle = angle0 + spin * t

    ys = torch.arange(h, dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, None, :] + 0.5
    rel_x, rel_y = xs - cx[:, None, None], ys - cy[:, None, None]  # (T, H, W)
    if wrap in ("torus", "torus-late") and (dx or dy):  # the nearest copy of the shape (its reach < half the frame)
        def nearest(rel, extent):  # offsets past half the frame only: the others stay to the bit
            return torch.where(rel.abs() > extent / 2, torch.remainder(rel + extent / 2, extent) - extent / 2, rel)
        rel_x, rel_y = nearest(rel_x, w), nearest(rel_y, h)
    dist = torch.sqrt(rel_x**2 + rel_y**2)
    theta = torch.atan2(rel_y, rel_x) - angle[:, None, None]
    boundary = radius[:, None, None] * _polar_radius(attributes.shape, theta)
    coverage = (boundary - dist + 0.5).clamp(0, 1)  # ~1 px antialiased edge
    color = torch.tensor(COLORS[attributes.color]) * 2 - 1
    background = _background(attributes.background, size, generator)  # (3, H, W)
    video = background[:, None] * (1 - coverage[None]) + color[:, None, None, None] * coverage[None]
    return (video, coverage) if return_coverage else video


class ShapesDataset(Dataset):
    """Captioned shape videos.

    Args:
        split: ``"train"`` (held-out colour x motion pairs excluded), ``"test"`` (only those pairs) or ``"all"``.
        num_frames, size, fps: clip format; motion covers the same distance whatever the frame count.
        num_samples: dataset length (default: one item per attribute combination of the split).
        seed: items are a pure function of ``(seed, split, index)``.
        wrap: ``True``: translating shapes leave the frame and re-enter from the opposite edge; ``"torus"``: they
            cross the edge drawn on both sides, never absent; ``"torus-late"``: they start where ``wrap=False`` puts
            them, then cross the edge so (:func:`render_shape_video`); off by default.
        motion_frames: the motion's speed per frame is that of a ``motion_frames``-frame clip (default: the clip's
            own length); a longer clip goes on at that speed.

    Items: ``video`` (3, T, H, W) in [-1, 1], ``caption``, ``shape``, ``color``, ``motion``, ``background``,
    ``index``, ``fps``; with ``with_coverage``, also ``coverage`` (T, H, W) in [0, 1], the shape's silhouette.
    """

    def __init__(
        self,
        split: str = "train",
        num_frames: int = 16,
        size: int | tuple[int, int] = 64,
        fps: float = 8.0,
        num_samples: int | None = None,
        seed: int = 0,
        with_coverage: bool = False,
        wrap: bool | str = False,
        motion_frames: int | None = None,
    ):
        self.combinations = all_combinations(split)
        self.with_coverage = with_coverage
        check_wrap(wrap)
        self.wrap = wrap
        if not isinstance(num_frames, int) or num_frames < 1:
            raise InvalidInputError(f"num_frames must be a positive int, got {num_frames!r}")
        check_motion_frames(motion_frames, num_frames)
        self.motion_frames = motion_frames
        self.split, self.num_frames, self.size, self.fps, self.seed = split, num_frames, normalize_size(size), fps, seed
        self.num_samples = len(self.combinations) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise InvalidInputError(f"num_samples must be positive, got {num_samples!r}")

    def __len__(self) -> int:
        return self.num_samples

    def attributes(self, index: int) -> ShapeAttributes:
        """Attributes of item ``index`` without rendering it (items cycle through a seeded permutation)."""
        order = torch.randperm(len(self.combinations), generator=make_generator(self.seed, f"shapes/{self.split}", -1))
        return self.combinations[int(order[index % len(self.combinations)])]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"ShapesDataset index {index} out of range [0, {self.num_samples})")
        attributes = self.attributes(index)
        generator = make_generator(self.seed, f"shapes/{self.split}", index)
        video, coverage = render_shape_video(attributes, self.num_frames, self.size, generator, return_coverage=True,
                                             wrap=self.wrap, motion_frames=self.motion_frames)
        item = {"video": video.clamp(-1, 1), "caption": attributes.caption, **asdict(attributes),
                "index": index, "fps": float(self.fps)}  # fmt: skip
        if self.with_coverage:
            item["coverage"] = coverage
        return item

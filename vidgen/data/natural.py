"""Natural camera-motion clips: smooth virtual-camera paths over photographs that ship with scikit-image and
scikit-learn. No downloads; every clip is a pure function of ``(seed, split, index)``.

The split is by source photograph, so no image appears in both train and test. This is the default data of the
reconstruction benchmark.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vidgen.data.common import check_clip_format, check_split, make_generator, normalize_size
from vidgen.errors import InvalidInputError, MissingWeightsError

#: Photographs in the installed packages (name -> loader key). Grayscale ones are replicated to RGB.
TRAIN_SOURCES = (
    "astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
    "china", "camera", "brick", "grass", "gravel", "moon", "clock",
)  # fmt: skip
TEST_SOURCES = ("chelsea", "rocket", "flower", "coins")
MOTIONS = ("pan", "zoom_in", "zoom_out", "rotate", "pan_zoom")
#: Working resolution of the source photographs (long side); larger photos are downscaled once.
SOURCE_LONG_SIDE = 512


#: More photographs, for the layered scenes only (vidgen.data.scenes; NaturalClips keeps its 17 so its clips do not
#: change): name -> (installed package, file inside it). matplotlib comes with the eval extra, gradio with the app
#: extra; ``make install`` installs both.
EXTRA_SOURCES = {
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "cheetah": ("gradio", "media_assets/images/cheetah.jpg"),
    "tower": ("gradio", "media_assets/images/tower.jpg"),
    "lion": ("gradio", "media_assets/images/lion.jpg"),
    "groot": ("gradio", "media_assets/images/groot.jpeg"),
}


def _load_packaged_photo(name: str) -> np.ndarray:
    import importlib.util

    from PIL import Image

    package, relative = EXTRA_SOURCES[name]
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"photograph {name!r} ships with the {package!r} package, which is not installed; "
                                  "run `make install` (it installs the eval and app extras)")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise MissingWeightsError(f"photograph {name!r} is missing from the installed {package!r} package ({path})")
    return np.asarray(Image.open(path).convert("RGB"))


@lru_cache(maxsize=None)
def load_source_image(name: str) -> torch.Tensor:
    """A source photograph as a ``(3, H, W)`` float tensor in [-1, 1] (cached per process)."""
    if name in EXTRA_SOURCES:
        array = _load_packaged_photo(name)
    elif name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        index = [f.endswith(f"{name}.jpg") for f in bunch.filenames].index(True)
        array = bunch.images[index]
    else:
        import skimage.data

        array = getattr(skimage.data, name)()
        if isinstance(array, tuple):  # stereo pairs: use the left view only
            array = array[0]
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    image = torch.from_numpy(np.array(array[..., :3], dtype=np.uint8)).permute(2, 0, 1).float() / 127.5 - 1.0
    long_side = max(image.shape[1:])
    if long_side > SOURCE_LONG_SIDE:
        factor = SOURCE_LONG_SIDE / long_side
        size = (round(image.shape[1] * factor), round(image.shape[2] * factor))
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return image.contiguous()


@dataclass(frozen=True)
class CameraPath:
    """Start and end camera poses; the camera eases between them over the clip.

    Centers are in normalized image coordinates ([-1, 1]); ``scale`` is the crop's half-size relative to the
    image's short side; ``angle`` in radians.
    """

    motion: str
    center0: tuple[float, float]
    center1: tuple[float, float]
    scale0: float
    scale1: float
    angle0: float
    angle1: float


def sample_camera_path(generator: torch.Generator, duration: float) -> CameraPath:
    """Draw a smooth camera path. Speeds are per second, so the motion is the same at any fps."""

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    motion = MOTIONS[int(torch.randint(len(MOTIONS), (), generator=generator))]
    scale0 = uniform(0.14, 0.3)  # crop half-size / short side: 0.5 would be the whole short side
    scale1, angle0, angle1 = scale0, 0.0, 0.0
    direction = uniform(0.0, 2 * math.pi)
    shift = 0.0
    if motion in ("pan", "pan_zoom"):
        shift = uniform(0.15, 0.35) * duration  # normalized units per second
    if motion in ("zoom_in", "pan_zoom"):
        scale1 = scale0 * (1.0 - min(0.5, uniform(0.15, 0.35) * duration))
    if motion == "zoom_out":
        scale1 = scale0 * (1.0 + min(0.6, uniform(0.15, 0.35) * duration))
    if motion == "rotate":
        angle1 = (1 if uniform(0, 1) < 0.5 else -1) * uniform(0.2, 0.5) * duration
    # Keep the whole crop (with a rotation margin) inside the photograph along the whole path.
    margin = 2.0 * max(scale0, scale1) * (math.sqrt(2.0) if motion == "rotate" else 1.0)
    free = max(0.0, 1.0 - margin)
    half_shift = min(0.5 * shift, free)
    dx, dy = half_shift * math.cos(direction), half_shift * math.sin(direction)
    room = max(0.0, free - max(abs(dx), abs(dy)))
    cx, cy = uniform(-room, room), uniform(-room, room)
    return CameraPath(motion, (cx - dx, cy - dy), (cx + dx, cy + dy), scale0, scale1, angle0, angle1)


def render_camera_path(image: torch.Tensor, path: CameraPath, num_frames: int, size: tuple[int, int]) -> torch.Tensor:
    """Render ``num_frames`` frames of ``size`` along ``path`` over ``image`` (3, Hs, Ws) -> (3, T, H, W)."""
    t = torch.linspace(0.0, 1.0, num_frames, dtype=torch.float64) if num_frames > 1 else torch.zeros(1)
    return render_camera_times(image, path, t, size)


def render_camera_times(image: torch.Tensor, path: CameraPath, times: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Frames at clip times ``times`` (0 = first frame, 1 = last; outside [0, 1] the camera holds its pose), for
    motion blur's sub-frame samples -> (3, len(times), H, W)."""
    out_h, out_w = size
    _, src_h, src_w = image.shape
    num_frames = len(times)
    t = times.to(torch.float64).clamp(0.0, 1.0)
    ease = (0.5 - 0.5 * torch.cos(math.pi * t)).float()  # smooth start and stop
    cx = path.center0[0] + (path.center1[0] - path.center0[0]) * ease
    cy = path.center0[1] + (path.center1[1] - path.center0[1]) * ease
    scale = path.scale0 * (path.scale1 / path.scale0) ** ease  # geometric: constant perceived zoom speed
    angle = path.angle0 + (path.angle1 - path.angle0) * ease
    short = min(src_h, src_w)
    # Half-extent of the crop in normalized coordinates along x and y, keeping the output aspect ratio.
    half_w = scale * short / src_w * (out_w / max(out_h, out_w)) * 2
    half_h = scale * short / src_h * (out_h / max(out_h, out_w)) * 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect = src_w / src_h  # rotate in pixel space, not in the anisotropic normalized space
    theta = torch.zeros(num_frames, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = half_w * cos, -half_h * sin / aspect
    theta[:, 1, 0], theta[:, 1, 1] = half_w * sin * aspect, half_h * cos
    theta[:, 0, 2], theta[:, 1, 2] = cx, cy
    grid = F.affine_grid(theta, [num_frames, 3, out_h, out_w], align_corners=False)
    # Antialias: pre-blur the source to roughly the output sampling rate before bilinear sampling.
    source = image
    step = float((2 * half_w.max()) * src_w / out_w)
    if step > 1.5:
        factor = 1.0 / step
        small = (max(8, round(src_h * factor)), max(8, round(src_w * factor)))
        source = F.interpolate(image[None], size=small, mode="bilinear", antialias=True, align_corners=False)[0]
    frames = F.grid_sample(
        source.expand(num_frames, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return frames.permute(1, 0, 2, 3).clamp_(-1.0, 1.0).contiguous()  # (3, T, H, W)


class NaturalClips(Dataset):
    """Camera-motion clips over real photographs, split by source image.

    Args:
        split: ``"train"`` or ``"test"`` (disjoint source photographs) or ``"all"``.
        num_frames: frames per clip (any positive number).
        size: output size, int (square) or ``(H, W)``.
        fps: frame rate the motion is sampled at (camera speeds are defined per second).
        num_clips: dataset length; defaults to 16 clips per source photograph.
        seed: clips are a pure function of ``(seed, split, index)``.

    Items are dicts: ``video`` (3, T, H, W) in [-1, 1], ``source`` (photo name), ``motion``, ``index``, ``fps``.
    """

    def __init__(
        self,
        split: str = "train",
        num_frames: int = 17,
        size: int | tuple[int, int] = 64,
        fps: float = 8.0,
        num_clips: int | None = None,
        seed: int = 0,
    ):
        check_split(split, ("train", "test", "all"))
        check_clip_format(num_frames, fps)
        self.split = split
        self.sources = {"train": TRAIN_SOURCES, "test": TEST_SOURCES, "all": TRAIN_SOURCES + TEST_SOURCES}[split]
        self.num_frames, self.size, self.fps, self.seed = num_frames, normalize_size(size), float(fps), seed
        self.num_clips = 16 * len(self.sources) if num_clips is None else int(num_clips)
        if self.num_clips < 1:
            raise InvalidInputError(f"num_clips must be positive, got {num_clips!r}")

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"NaturalClips index {index} out of range [0, {self.num_clips})")
        source = self.sources[index % len(self.sources)]
        generator = make_generator(self.seed, f"natural/{self.split}", index)
        path = sample_camera_path(generator, duration=self.num_frames / self.fps)
        video = render_camera_path(load_source_image(source), path, self.num_frames, self.size)
        return {"video": video, "source": source, "motion": path.motion, "index": index, "fps": self.fps}

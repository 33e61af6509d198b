"""Reading videos as ``(3, T, H, W)`` float tensors in ``[-1, 1]``, and the conversion to uint8 frames that writing
uses (writing: :mod:`vidgen.io.video_writer`).

Containers (MP4, WebM, AVI, MOV, MKV, GIF) are decoded with PyAV (FFmpeg); a folder of PNG/JPG frames is read
in file-name order. Every failure is a :class:`~vidgen.errors.VideoIOError` that names the file and the problem.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidgen.errors import InvalidInputError, VideoIOError

CONTAINER_SUFFIXES = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".m4v", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Frame folders carry no timing; they are reported at this rate.
FRAME_FOLDER_FPS = 8.0

PathLike = str | os.PathLike


@dataclass(frozen=True)
class VideoInfo:
    """What a video's container says about it, read without decoding frames."""

    path: Path
    num_frames: int
    fps: float
    height: int
    width: int


# ----------------------------------------------------------------------------------------------- reading


def read_video(
    path: PathLike,
    num_frames: int | None = None,
    start: int = 0,
    stride: int = 1,
    size: int | tuple[int, int] | None = None,
) -> tuple[torch.Tensor, float]:
    """Read frames ``start, start + stride, ...`` of a video file or a folder of frames.

    Args:
        path: video file (MP4/WebM/AVI/MOV/MKV/GIF) or folder of PNG/JPG frames (sorted by name).
        num_frames: frames to return; ``None`` reads to the end. Asking for more frames than the video has is an
            error (a clip is never silently shortened).
        start: index of the first frame.
        stride: step between returned frames.
        size: ``None`` keeps the native size; an int resizes the short side to ``size`` and center-crops a square;
            ``(H, W)`` resizes to cover ``H x W`` keeping the aspect ratio, then center-crops.

    Returns:
        ``(video, fps)``: float32 ``(3, T, H, W)`` in ``[-1, 1]`` and the frame rate of the returned frames
        (``native_fps / stride``). Grayscale and RGBA frames are converted to RGB (alpha is dropped).
    """
    path = Path(path)
    _check_selection(path, num_frames, start, stride)
    if not path.exists():
        raise VideoIOError(f"{path}: no such file or folder")
    if path.is_dir():
        frames, fps = _read_frame_folder(path, num_frames, start, stride)
    else:
        _check_readable_suffix(path)
        frames, fps = _read_container(path, num_frames, start, stride)
    video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)  # (3, T, H, W) uint8
    video = video.float().div_(127.5).sub_(1.0)
    if size is not None:
        video = resize_and_center_crop(video, size)
    return video, fps / stride


def probe_video(path: PathLike) -> VideoInfo:
    """Frame count, frame rate and size of a video file or frame folder, from metadata where possible."""
    path = Path(path)
    if not path.exists():
        raise VideoIOError(f"{path}: no such file or folder")
    if path.is_dir():
        files = _frame_files(path)
        first = _load_image(files[0])
        return VideoInfo(path, len(files), FRAME_FOLDER_FPS, first.shape[0], first.shape[1])
    _check_readable_suffix(path)
    container = _open_container(path)
    with container:
        stream = container.streams.video[0]
        num_frames = stream.frames
        if num_frames <= 0:  # some containers (WebM, GIF) carry no frame count: count packets instead
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        if num_frames == 0:
            raise VideoIOError(f"{path}: the video stream has zero frames")
        return VideoInfo(path, num_frames, _stream_fps(stream), stream.height, stream.width)


def _check_selection(path: Path, num_frames: int | None, start: int, stride: int) -> None:
    if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
        raise InvalidInputError(f"{path}: num_frames must be a positive int or None, got {num_frames!r}")
    if not isinstance(start, int) or start < 0:
        raise InvalidInputError(f"{path}: start must be a non-negative int, got {start!r}")
    if not isinstance(stride, int) or stride < 1:
        raise InvalidInputError(f"{path}: stride must be a positive int, got {stride!r}")


def _check_readable_suffix(path: Path) -> None:
    if path.suffix.lower() not in CONTAINER_SUFFIXES:
        raise VideoIOError(
            f"{path}: unsupported format {path.suffix!r}; readable: {', '.join(CONTAINER_SUFFIXES)} "
            f"or a folder of {'/'.join(FRAME_SUFFIXES)} frames"
        )


def _open_container(path: Path):
    import av

    if path.stat().st_size == 0:
        raise VideoIOError(f"{path}: the file is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r", timeout=30.0)
    except av.error.FFmpegError as err:
        raise VideoIOError(
            f"{path}: cannot open as a video: the file is corrupt, truncated or not a video ({_ffmpeg_reason(err)})"
        ) from err
    if not container.streams.video:
        container.close()
        raise VideoIOError(f"{path}: the file has no video stream (not a video, or truncated before its stream "
                           "headers)")
    return container


def _read_container(path: Path, num_frames: int | None, start: int, stride: int) -> tuple[list[np.ndarray], float]:
    import av

    container = _open_container(path)
    frames: list[np.ndarray] = []
    decoded = 0
    with container:
        stream = container.streams.video[0]
        declared = stream.frames
        fps = _stream_fps(stream)
        try:
            for frame in container.decode(stream):
                index = decoded
                decoded += 1
                if index >= start and (index - start) % stride == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if num_frames is not None and len(frames) == num_frames:
                        break
        except av.error.FFmpegError as err:
            raise VideoIOError(
                f"{path}: corrupt or truncated video: decoding failed after {decoded} frames ({_ffmpeg_reason(err)})"
            ) from err
    if decoded == 0:
        raise VideoIOError(f"{path}: zero frames could be decoded (empty, truncated or corrupt video stream)")
    complete = num_frames is not None and len(frames) == num_frames
    if not complete and declared > 0 and decoded < declared:
        raise VideoIOError(
            f"{path}: truncated video: the container declares {declared} frames but only {decoded} could be decoded"
        )
    _check_enough(path, frames, decoded, num_frames, start, stride)
    return frames, fps


def _read_frame_folder(path: Path, num_frames: int | None, start: int, stride: int) -> tuple[list[np.ndarray], float]:
    files = _frame_files(path)
    chosen = files[start::stride]
    if num_frames is not None:
        chosen = chosen[:num_frames]
    frames = [_load_image(f) for f in chosen]
    _check_enough(path, frames, len(files), num_frames, start, stride)
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise VideoIOError(f"{path}: frames have different sizes {sorted(shapes)}")
    return frames, FRAME_FOLDER_FPS


def _check_enough(path: Path, frames: list, available: int, num_frames: int | None, start: int, stride: int) -> None:
    if num_frames is not None and len(frames) < num_frames:
        raise VideoIOError(
            f"{path}: asked for {num_frames} frames from frame {start} with stride {stride}, but the video has "
            f"only {available} frames (that selection yields {len(frames)})"
        )
    if not frames:
        raise VideoIOError(f"{path}: start={start} is past the last frame (the video has {available} frames)")


def _frame_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise VideoIOError(f"{path}: the folder contains no {'/'.join(FRAME_SUFFIXES)} frames (zero frames)")
    return files


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise VideoIOError(f"{path}: not a readable image ({err})") from err


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else FRAME_FOLDER_FPS


def _ffmpeg_reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err)


def resize_and_center_crop(video: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize ``(3, T, H, W)`` so it covers ``size`` (aspect ratio kept, antialiased bilinear), then center-crop."""
    if isinstance(size, int):
        out_h = out_w = size
    else:
        out_h, out_w = size
    if out_h < 1 or out_w < 1:
        raise InvalidInputError(f"size must be positive, got {size!r}")
    _, _, h, w = video.shape
    if (h, w) == (out_h, out_w):
        return video
    scale = max(out_h / h, out_w / w)
    new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    frames = video.permute(1, 0, 2, 3)  # (T, 3, H, W)
    frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    frames = frames[:, :, top : top + out_h, left : left + out_w]
    return frames.permute(1, 0, 2, 3).clamp_(-1.0, 1.0).contiguous()


# ----------------------------------------------------------------------------------------------- to uint8


def to_uint8_frames(video: torch.Tensor | np.ndarray, name: str = "video") -> np.ndarray:
    """Convert ``(3,T,H,W)`` or ``(T,H,W,3)``, float in [-1, 1] or uint8, to ``(T, H, W, 3)`` uint8.

    When both the first and the last axis have size 3 the project convention ``(3, T, H, W)`` is assumed.
    Float values are clipped to [-1, 1] (model outputs overshoot slightly); NaN/inf are an error.
    """
    array = video.detach().cpu() if isinstance(video, torch.Tensor) else torch.from_numpy(np.asarray(video))
    if array.ndim != 4:
        raise InvalidInputError(f"{name}: expected 4 dims (3,T,H,W) or (T,H,W,3), got shape {tuple(array.shape)}")
    if array.shape[0] == 3:
        array = array.permute(1, 2, 3, 0)
    elif array.shape[-1] != 3:
        raise InvalidInputError(f"{name}: expected 3 colour channels first or last, got shape {tuple(array.shape)}")
    if array.shape[0] == 0:
        raise InvalidInputError(f"{name}: has zero frames")
    if min(array.shape) == 0:
        raise InvalidInputError(f"{name}: frames are empty, shape (T, H, W, 3) = {tuple(array.shape)}")
    if array.dtype == torch.uint8:
        return array.contiguous().numpy()
    if not array.dtype.is_floating_point:
        raise InvalidInputError(f"{name}: dtype must be floating point in [-1, 1] or uint8, got {array.dtype}")
    if not torch.isfinite(array).all():
        raise InvalidInputError(f"{name}: contains NaN or infinite values")
    array = ((array.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round_()
    return array.to(torch.uint8).contiguous().numpy()

"""Writing videos: MP4 (H.264) in one call or chunk by chunk, and GIF; every file is written to a temporary name
and moved into place, so an interrupted write never leaves a half-written file."""
from __future__ import annotations

import fractions
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from vidgen.errors import InvalidInputError, VideoIOError
from vidgen.io.video import PathLike, to_uint8_frames

WRITE_SUFFIXES = (".mp4", ".gif")


def _check_fps(path: Path, fps) -> None:
    if isinstance(fps, bool) or not (isinstance(fps, (int, float)) and 0 < fps < float("inf")):
        raise InvalidInputError(f"{path}: fps must be a positive finite number, got {fps!r}")


def _temporary(path: Path) -> str:
    """A temporary file next to ``path``, to be moved into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=path.suffix, dir=path.parent, prefix=f".{path.stem}.")
    os.close(handle)
    return name


def _move_into_place(tmp_name: str, path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    os.replace(tmp_name, path)


def write_video(path: PathLike, video: torch.Tensor | np.ndarray, fps: float, quality: int = 18) -> Path:
    """Write an MP4 (H.264) or GIF. ``video`` is ``(3,T,H,W)`` or ``(T,H,W,3)``, float [-1, 1] or uint8.

    ``quality`` is the H.264 CRF (lower is better; 0 is lossless). Odd frame sizes are kept exactly (4:4:4 chroma
    is used then, since 4:2:0 needs even sizes). The file is written to a temporary name and moved into place,
    so an interrupted write never leaves a half-written file under ``path``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise VideoIOError(f"{path}: cannot write {suffix!r}; writable formats: {', '.join(WRITE_SUFFIXES)}")
    _check_fps(path, fps)
    frames = to_uint8_frames(video, name=str(path))
    if suffix == ".mp4":
        with VideoWriter(path, fps, quality) as writer:
            writer.write(frames)
        return path
    tmp_name = _temporary(path)
    try:
        _write_gif(Path(tmp_name), frames, fps)
        _move_into_place(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


class VideoWriter:
    """An MP4 (H.264) written chunk by chunk, for videos made chunk by chunk (long videos and stories): memory does
    not grow with length. ``with VideoWriter(path, fps) as w: w.write(frames)`` for each chunk, ``(3, T, H, W)`` or
    ``(T, H, W, 3)``, float in [-1, 1] or uint8, all of one size. Frames go to a temporary file that is moved to
    ``path`` when the block ends without an error; an error (or :meth:`abort`) leaves no file."""

    def __init__(self, path: PathLike, fps: float, quality: int = 18):
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise VideoIOError(f"{self.path}: VideoWriter writes .mp4 only (write a GIF with write_video)")
        _check_fps(self.path, fps)
        self.fps, self.quality, self.frames_written = fps, quality, 0
        self._tmp = _temporary(self.path)
        self._container = self._stream = None

    def write(self, video: torch.Tensor | np.ndarray) -> None:
        import av

        frames = to_uint8_frames(video, name=str(self.path))
        height, width = frames.shape[1:3]
        if self._container is None:
            self._container = av.open(self._tmp, mode="w", format="mp4")
            stream = self._container.add_stream("libx264", rate=fractions.Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
            # mbtree=0: x264's macroblock-tree rate control can write the same frames to another file
            # (experiments/results/x264_determinism.json); off, a seed's video is reproducible (+1/3 bytes)
            stream.options = {"crf": str(self.quality), "preset": "medium", "x264-params": "mbtree=0"}
            self._stream = stream
        elif (height, width) != (self._stream.height, self._stream.width):
            raise InvalidInputError(f"{self.path}: frames of {height}x{width} after frames of "
                                    f"{self._stream.height}x{self._stream.width}")
        for array in frames:
            self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        self.frames_written += len(frames)

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self._container is None:
            self.abort()
            raise InvalidInputError(f"{self.path}: no frames were written")
        self._container.mux(self._stream.encode())
        self._container.close()
        self._container = None
        _move_into_place(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop what was written: no file at ``path``."""
        if self._container is not None:
            self._container.close()
            self._container = None
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    """GIF through FFmpeg's palettegen/paletteuse: a per-video palette, and (unlike Pillow) identical
    consecutive frames are kept as separate frames, so the frame count survives a round trip."""
    import imageio_ffmpeg

    count, height, width, _ = frames.shape
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
        "-vf", "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse=dither=none",
        "-loop", "0", "-f", "gif", str(path),
    ]  # fmt: skip
    result = subprocess.run(command, input=frames.tobytes(), capture_output=True, timeout=60 + count)
    if result.returncode != 0:
        raise VideoIOError(f"{path}: GIF encoding failed: {result.stderr.decode(errors='replace').strip()}")


def ffmpeg_available() -> bool:
    """True when an FFmpeg binary (bundled by imageio-ffmpeg or on PATH) can be found."""
    try:
        import imageio_ffmpeg

        return bool(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg") is not None

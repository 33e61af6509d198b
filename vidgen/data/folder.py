"""A dataset over a folder of the user's own videos (any file or frame folder :func:`read_video` reads).

Captions (for text-to-video training) come from an optional ``metadata.jsonl`` in the folder, one JSON object per
line with ``file_name`` (relative to the folder) and ``text``, the layout of Hugging Face's ``videofolder`` and
diffusers' training scripts; any other keys are passed through as metadata.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vidgen.data.common import check_split, make_generator, normalize_size
from vidgen.errors import InvalidInputError, VideoIOError
from vidgen.io import CONTAINER_SUFFIXES, FRAME_SUFFIXES, probe_video, read_video

CLIP_SAMPLING = ("start", "center", "random")
METADATA_FILE = "metadata.jsonl"


def read_metadata(root: str | Path) -> dict[str, dict]:
    """``file_name -> record`` from ``root/metadata.jsonl`` (empty if the folder has none)."""
    path = Path(root) / METADATA_FILE
    if not path.is_file():
        return {}
    records = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise VideoIOError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
            raise VideoIOError(f"{path}: line {number} needs a 'file_name' string")
        if record["file_name"] in records:
            raise VideoIOError(f"{path}: line {number} repeats file_name {record['file_name']!r}")
        records[record["file_name"]] = record
    return records


def check_given(path: str | Path, name: str, want: str) -> None:
    """An empty ``path`` is refused by ``name`` (``Path("")`` would silently be the current folder)."""
    if str(path) == "":
        raise InvalidInputError(f"{name} is empty: give {want} ('.' for the current folder)")


def find_videos(root: str | Path, recursive: bool = True) -> list[Path]:
    """Video files and frame folders (folders that directly contain PNG/JPG files) under ``root``, sorted. An empty
    ``root`` is refused (``Path("")`` would be the current folder)."""
    check_given(root, "root", "the folder of videos")
    root = Path(root)
    if not root.is_dir():
        raise VideoIOError(f"{root}: not a folder")
    candidates = root.rglob("*") if recursive else root.iterdir()
    found = []
    for path in candidates:
        if path.is_file() and path.suffix.lower() in CONTAINER_SUFFIXES:
            found.append(path)
        elif path.is_dir() and any(p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir() if p.is_file()):
            found.append(path)
    if not found and any(p.suffix.lower() in FRAME_SUFFIXES for p in root.iterdir()):
        found.append(root)  # the root itself is a frame folder
    return sorted(found)


def folder_fingerprint(root: str | Path) -> str:
    """A hash of what :class:`VideoFolder` reads under ``root``: each video's (or frame file's) path, size and
    modification time, and ``metadata.jsonl``'s bytes; a cache of encoded clips keyed by it is rebuilt when the
    folder's videos or captions change."""
    digest = hashlib.sha256()
    videos, root = find_videos(root), Path(root)
    for video in videos:
        for path in sorted(video.iterdir()) if video.is_dir() else [video]:
            stat = path.stat()
            digest.update(f"{path.relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    metadata = root / METADATA_FILE
    digest.update(metadata.read_bytes() if metadata.is_file() else b"")
    return digest.hexdigest()[:20]


class VideoFolder(Dataset):
    """Clips of ``num_frames`` frames (every ``stride``-th frame) from each video under ``root``.

    Args:
        root: folder searched recursively for videos and frame folders.
        num_frames: frames per clip; a video too short for ``num_frames`` at ``stride`` raises a
            :class:`VideoIOError` naming it (clips are never silently shortened or padded).
        size: ``None`` (native), int (short side + center crop) or ``(H, W)``.
        stride: temporal step between sampled frames.
        clip_sampling: where the clip starts: ``"start"``, ``"center"`` or ``"random"`` (seeded per item).
        seed: seed of ``"random"`` sampling.

    Items: ``video`` (3, T, H, W) in [-1, 1], ``path`` (str), ``start`` (first frame index), ``fps``, ``index``;
    plus ``caption`` and ``metadata`` when the folder has a ``metadata.jsonl`` (then every video must be listed).
    """

    def __init__(
        self,
        root: str | Path,
        num_frames: int = 16,
        size: int | tuple[int, int] | None = None,
        stride: int = 1,
        clip_sampling: str = "start",
        seed: int = 0,
    ):
        check_split(clip_sampling, CLIP_SAMPLING)
        if not isinstance(num_frames, int) or num_frames < 1:
            raise InvalidInputError(f"num_frames must be a positive int, got {num_frames!r}")
        self.paths, self.root = find_videos(root), Path(root)
        if not self.paths:
            raise VideoIOError(f"{self.root}: no videos found (readable: {', '.join(CONTAINER_SUFFIXES)}, frame folders)")
        self.num_frames, self.stride, self.clip_sampling, self.seed = num_frames, stride, clip_sampling, seed
        self.size = None if size is None else normalize_size(size)
        self.metadata = read_metadata(self.root)
        if self.metadata:
            names = {path.relative_to(self.root).as_posix() for path in self.paths}
            missing = sorted(names - set(self.metadata))
            if missing:
                raise VideoIOError(f"{self.root / METADATA_FILE}: no entry for {len(missing)} video(s), e.g. {missing[0]!r}")

    def __len__(self) -> int:
        return len(self.paths)

    def _start_frame(self, index: int, path: Path) -> int:
        if self.clip_sampling == "start":
            return 0
        span = (self.num_frames - 1) * self.stride + 1
        available = probe_video(path).num_frames
        if available < span:
            raise VideoIOError(
                f"{path}: has {available} frames, fewer than the {span} needed for {self.num_frames} frames "
                f"at stride {self.stride}"
            )
        if self.clip_sampling == "center":
            return (available - span) // 2
        generator = make_generator(self.seed, "folder", index)
        return int(torch.randint(available - span + 1, (), generator=generator))

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        start = self._start_frame(index, path)
        video, fps = read_video(path, num_frames=self.num_frames, start=start, stride=self.stride, size=self.size)
        item = {"video": video, "path": str(path), "start": start, "fps": fps, "index": index}
        if self.metadata:
            record = self.metadata[path.relative_to(self.root).as_posix()]
            item["caption"] = record.get("text", "")
            item["metadata"] = {k: v for k, v in record.items() if k not in ("file_name", "text")}
        return item

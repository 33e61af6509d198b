"""What an encode reads: the clips of a video folder or of a manifest, each with its caption and time range.

A **folder** is read as :class:`~vidgen.data.VideoFolder` reads it (video files and PNG/JPG frame folders, captions
from an optional ``metadata.jsonl``). A **manifest** is a CSV, JSONL or Parquet file of rows with ``path`` (or
``file_name``), optional ``caption`` (or ``text``) and optional ``start`` / ``end`` times in seconds; relative paths
are relative to the manifest's folder. A row whose file is missing is kept (the encode records it as skipped).
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from vidgen.data.folder import METADATA_FILE, check_given, find_videos, read_metadata
from vidgen.errors import VideoIOError

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
COLUMNS = ("path", "file_name", "caption", "text", "start", "end")  # what a manifest row may hold


@dataclass(frozen=True)
class SourceClip:
    """One clip to encode: ``key`` is unique in the source (the path, plus the time range when one is given)."""

    key: str
    path: str
    caption: str = ""
    start: Optional[float] = None  # seconds
    end: Optional[float] = None

    def to_dict(self) -> dict:
        return asdict(self)


def _time(value, where: str) -> Optional[float]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise VideoIOError(f"{where}: start/end must be a number of seconds, got {value!r}") from None
    if t != t or t < 0:
        raise VideoIOError(f"{where}: start/end must be >= 0 seconds, got {value!r}")
    return t


def _rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise VideoIOError(f"{path}: line {number} is not valid JSON ({err.msg})") from None
        return rows
    import pyarrow.parquet as pq
    try:
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in COLUMNS if c in names]).to_pylist()  # other columns: unread
    except Exception as err:  # noqa: BLE001  (pyarrow raises its own types for a damaged file)
        raise VideoIOError(f"{path}: not a readable Parquet file ({err})") from None


def read_manifest(path: str | Path) -> list[SourceClip]:
    """The clips a CSV / JSONL / Parquet manifest lists, in its order."""
    path = Path(path)
    if not path.is_file():
        raise VideoIOError(f"{path}: no such manifest file")
    clips, seen = [], set()
    for number, row in enumerate(_rows(path), start=1):
        where = f"{path}: row {number}"
        if not isinstance(row, dict):
            raise VideoIOError(f"{where}: expected an object with a 'path', got {type(row).__name__}")
        name = row.get("path") or row.get("file_name")
        if not isinstance(name, str) or not name:
            raise VideoIOError(f"{where}: needs a 'path' (or 'file_name') string")
        caption = row.get("caption", row.get("text")) or ""
        start, end = _time(row.get("start"), where), _time(row.get("end"), where)
        if start is not None and end is not None and end <= start:
            raise VideoIOError(f"{where}: end ({end}) must be after start ({start})")
        file = Path(name) if Path(name).is_absolute() else path.parent / name
        key = name if start is None and end is None else f"{name}@{start or 0:g}-{'' if end is None else f'{end:g}'}"
        if key in seen:
            raise VideoIOError(f"{where}: repeats the clip {key!r}")
        seen.add(key)
        clips.append(SourceClip(key, str(file), str(caption), start, end))
    return clips


def list_source(source: str | Path) -> list[SourceClip]:
    """The clips of a video folder or of a manifest file (see the module's description)."""
    check_given(source, "source", "a folder of videos or a manifest file")
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() not in MANIFEST_SUFFIXES:
            raise VideoIOError(f"{source}: a manifest must be {', '.join(MANIFEST_SUFFIXES)}; or give a folder of "
                               f"videos")
        return read_manifest(source)
    if not source.is_dir():
        raise VideoIOError(f"{source}: no such folder or manifest file")
    metadata = read_metadata(source)
    clips = []
    for path in find_videos(source):
        name = path.relative_to(source).as_posix() if path != source else "."
        caption = metadata.get(name, {}).get("text", "") if metadata else ""
        if metadata and name not in metadata:
            raise VideoIOError(f"{source / METADATA_FILE}: no entry for {name!r}")
        clips.append(SourceClip(name, str(path), str(caption)))
    if not clips:
        raise VideoIOError(f"{source}: no videos found")
    return clips

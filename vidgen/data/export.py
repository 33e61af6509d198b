"""Write a captioned dataset to disk as a ``VideoFolder`` (MP4 files + ``metadata.jsonl``).

The layout is the one :class:`vidgen.data.VideoFolder` reads back with captions and the one Hugging Face's
``videofolder`` loader and diffusers' text-to-video training scripts expect, so the built-in captioned clips can
feed any of them, and users can swap in their own folder with the same layout.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from vidgen.data.folder import METADATA_FILE
from vidgen.errors import InvalidInputError
from vidgen.io import write_video

PASSED_THROUGH = ("shape", "color", "motion", "background", "index", "fps")


def export_captioned(dataset, out_dir: str | Path, num_videos: int | None = None, split: str | None = None) -> Path:
    """Write items ``0..num_videos-1`` of a dataset whose items have ``video`` and ``caption``.

    Returns the path of the written ``metadata.jsonl`` (written last and atomically, so a folder with a metadata
    file is always complete).
    """
    count = len(dataset) if num_videos is None else num_videos
    if not 1 <= count <= len(dataset):
        raise InvalidInputError(f"num_videos must be in [1, {len(dataset)}] for this dataset, got {num_videos!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for index in tqdm(range(count), desc=f"export -> {out_dir}", unit="clip"):
        item = dataset[index]
        if "caption" not in item:
            raise InvalidInputError(f"item {index} of {type(dataset).__name__} has no 'caption'")
        name = f"{index:06d}.mp4"
        write_video(out_dir / name, item["video"], fps=float(item.get("fps", 8.0)))
        record = {"file_name": name, "text": item["caption"], "num_frames": int(item["video"].shape[1])}
        record.update({key: item[key] for key in PASSED_THROUGH if key in item})
        if split is not None:
            record["split"] = split
        records.append(record)
    metadata = out_dir / METADATA_FILE
    partial = metadata.with_suffix(".jsonl.partial")
    partial.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(partial, metadata)
    return metadata

"""Previews of the built-in datasets, or of a folder of your own videos as the trainers read it: a contact sheet PNG,
MP4 clips and a short JSON/Markdown report."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from vidgen.data.natural import NaturalClips
from vidgen.data.scenes import SceneClips
from vidgen.data.shapes import HELD_OUT_PAIRS, ShapesDataset
from vidgen.errors import InvalidInputError
from vidgen.io import contact_sheet, save_image, write_video

DATASETS = ("natural", "scenes", "shapes")


def build_dataset(name: str, split: str, num_frames: int, size: int, seed: int, root: str | Path | None = None):
    if name == "folder":  # the user's videos, as data.dataset=folder reads them
        from vidgen.data.folder import VideoFolder
        return VideoFolder(root if root is not None else "", num_frames=num_frames, size=size)
    if name == "natural":
        return NaturalClips(split=split, num_frames=num_frames, size=size, seed=seed)
    if name == "scenes":
        return SceneClips(split=split, num_frames=num_frames, size=size, seed=seed)
    if name == "shapes":
        return ShapesDataset(split=split, num_frames=num_frames, size=size, seed=seed)
    raise InvalidInputError(f"dataset must be one of {DATASETS}, got {name!r}")


def _label(item: dict) -> str:
    if "path" in item:  # a folder's video: its file (its caption, when it has one, is used instead)
        return Path(item["path"]).name
    label = f"{item['source']} ({item['motion']})"
    if "layers" in item:  # SceneClips: what was added on top of the camera motion
        blur = f"blur {item['shutter']:.1f}" if item["shutter"] else "no blur"
        label += f", {item['layers']} layers, {blur}, {item['codec']}"
    return label


def preview_dataset(
    name: str,
    out_dir: str | Path,
    split: str = "train",
    num_videos: int = 8,
    num_frames: int = 16,
    size: int = 64,
    seed: int = 0,
    write_mp4: bool = True,
    root: str | Path | None = None,
) -> dict:
    """Render ``num_videos`` items: one contact sheet PNG plus one MP4 per item. Returns a summary dict. ``name``
    ``"folder"`` previews the videos under ``root`` (a :class:`~vidgen.data.VideoFolder`)."""
    out_dir = Path(out_dir)
    dataset = build_dataset(name, split, num_frames, size, seed, root)
    count = min(num_videos, len(dataset))
    started = time.perf_counter()
    items = [dataset[i] for i in tqdm(range(count), desc=f"{name}/{split}", leave=False)]
    labels = [item.get("caption") or _label(item) for item in items]
    sheet = out_dir / f"{name}_{split}_contact_sheet.png"
    save_image(sheet, contact_sheet([item["video"] for item in items], labels, scale=2))
    videos = []
    if write_mp4:
        for item, label in zip(items, labels):
            path = write_video(out_dir / f"{name}_{split}_{item['index']:03d}.mp4", item["video"], fps=item["fps"])
            videos.append({"file": path.name, "label": label})
    return {
        "dataset": name, "split": split, "length": len(dataset), "rendered": count,
        "num_frames": num_frames, "size": size, "seed": seed, "contact_sheet": sheet.name, "videos": videos,
        "seconds": round(time.perf_counter() - started, 3),
    }  # fmt: skip


def write_report(out_dir: str | Path, summaries: list[dict], title: str) -> Path:
    """JSON of the summaries plus a short Markdown report linking the files."""
    out_dir = Path(out_dir)
    (out_dir / "report.json").write_text(json.dumps(summaries, indent=2))
    lines = [f"# {title}", ""]
    for summary in summaries:
        lines += [
            f"## {summary['dataset']} / {summary['split']}",
            f"{summary['length']} items in the split; {summary['rendered']} rendered "
            f"({summary['num_frames']} frames, {summary['size']}x{summary['size']}, seed {summary['seed']}) "
            f"in {summary['seconds']} s.",
            "",
            f"![contact sheet]({summary['contact_sheet']})",
            "",
        ]
        lines += [f"- [{v['file']}]({v['file']}): {v['label']}" for v in summary["videos"]]
        lines.append("")
    lines.append(f"Held-out colour x motion pairs of the shapes test split: {', '.join(map('/'.join, HELD_OUT_PAIRS))}")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path

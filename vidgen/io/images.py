"""Pictures of videos: PNG saving and contact sheets (one row of sampled frames per video, with a label)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from vidgen.errors import InvalidInputError
from vidgen.io.video import PathLike, to_uint8_frames


def save_image(path: PathLike, image: np.ndarray | torch.Tensor) -> Path:
    """Save an ``(H, W, 3)`` uint8 array, or a ``(3, H, W)`` float tensor in [-1, 1], as PNG."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        if image.ndim != 3:
            raise InvalidInputError(f"image: expected (3,H,W) or (H,W,3), got shape {tuple(image.shape)}")
        image = to_uint8_frames(image.unsqueeze(1) if image.shape[0] == 3 else image.unsqueeze(0))[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path


def contact_sheet(
    videos: Sequence[torch.Tensor],
    labels: Sequence[str] | None = None,
    frames_per_row: int = 8,
    label_width: int = 0,
    gap: int = 2,
    scale: int = 1,
) -> np.ndarray:
    """One row per video: ``frames_per_row`` frames sampled evenly in time, optional label text on the left.

    ``videos`` are ``(3, T, H, W)`` tensors in [-1, 1] (or uint8); they may differ in length but not in size.
    Returns an ``(H_total, W_total, 3)`` uint8 image.
    """
    from PIL import Image, ImageDraw

    if not videos:
        raise InvalidInputError("contact_sheet: no videos given")
    if labels is not None and len(labels) != len(videos):
        raise InvalidInputError(f"contact_sheet: {len(labels)} labels for {len(videos)} videos")
    rows = [to_uint8_frames(v, name=f"videos[{i}]") for i, v in enumerate(videos)]  # (T, H, W, 3) each
    height, width = rows[0].shape[1:3]
    if any(r.shape[1:3] != (height, width) for r in rows):
        raise InvalidInputError("contact_sheet: all videos must have the same frame size")
    if labels is not None and label_width == 0:
        label_width = min(420, 7 * max(len(s) for s in labels) + 8)
    cell_h, cell_w = height * scale, width * scale
    sheet_w = label_width + frames_per_row * (cell_w + gap) + gap
    sheet_h = len(rows) * (cell_h + gap) + gap
    sheet = np.full((sheet_h, sheet_w, 3), 24, dtype=np.uint8)
    for row_index, frames in enumerate(rows):
        top = gap + row_index * (cell_h + gap)
        picks = np.linspace(0, len(frames) - 1, num=min(frames_per_row, len(frames))).round().astype(int)
        for col, t in enumerate(picks):
            cell = frames[t].repeat(scale, axis=0).repeat(scale, axis=1)
            left = label_width + gap + col * (cell_w + gap)
            sheet[top : top + cell_h, left : left + cell_w] = cell
    if labels is not None:
        image = Image.fromarray(sheet)
        draw = ImageDraw.Draw(image)
        for row_index, text in enumerate(labels):
            top = gap + row_index * (cell_h + gap)
            draw.multiline_text((4, top + 2), _wrap(text, max(8, (label_width - 8) // 7)), fill=(235, 235, 235))
        sheet = np.asarray(image)
    return sheet


def _wrap(text: str, width: int) -> str:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    lines.append(current)
    return "\n".join(lines)

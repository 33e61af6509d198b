"""Why ``VideoWriter`` turns off x264's macroblock-tree rate control (``mbtree=0``).

The same frames written twice did not always give the same MP4: ``tests/integration/test_app.py`` once saw two videos of one seed
differ. This script writes one fixed 16x16, 9-frame clip ``--runs`` times, each in a fresh thread (as the app's
worker threads do) and followed by a decode, and counts the distinct files, for x264's defaults and for each option
that could explain it; then it measures what the chosen option costs in file size and PSNR on 64x64 shapes clips.

    python experiments/x264_determinism.py --runs 250 --out experiments/results/x264_determinism.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

import av
import numpy as np
import torch

from vidgen.data.shapes import ShapesDataset
from vidgen.io import read_video
from vidgen.io.video import to_uint8_frames

CANDIDATES = {"x264 defaults (threads auto)": {},
              "one thread": {"x264-params": "threads=1:lookahead-threads=1:sliced-threads=0"},
              "mbtree=0": {"x264-params": "mbtree=0"}}


def encode(frames: np.ndarray, path: str, options: dict) -> None:
    _, h, w, _ = frames.shape
    container = av.open(path, mode="w", format="mp4")
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.options = {"crf": "18", "preset": "medium", **options}
    for array in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
    container.mux(stream.encode())
    container.close()


def distinct_files(frames: np.ndarray, options: dict, runs: int, folder: Path) -> dict:
    seen: dict[str, int] = {}

    def one(i: int) -> None:
        path = str(folder / f"run{i % 4}.mp4")
        encode(frames, path, options)
        read_video(path)  # a decode between encodes: without it the defaults stayed reproducible here
        key = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        seen[key] = seen.get(key, 0) + 1

    for i in range(runs):
        worker = threading.Thread(target=one, args=(i,))
        worker.start()
        worker.join()
    return {"runs": runs, "distinct_files": len(seen), "runs_unlike_the_most_common": runs - max(seen.values())}


def cost(options: dict, clips: int, folder: Path) -> dict:
    data = ShapesDataset(num_frames=17, size=64)
    size, psnr = 0, []
    for i in range(clips):
        item = data[i]
        frames = to_uint8_frames(item["video"] if isinstance(item, dict) else item[0])
        path = str(folder / "cost.mp4")
        encode(frames, path, options)
        size += os.path.getsize(path)
        back = to_uint8_frames(read_video(path)[0]).astype(np.float64)
        psnr.append(10 * np.log10(255**2 / ((back - frames) ** 2).mean()))
    return {"clips": clips, "bytes_per_clip": size / clips, "psnr_db": float(np.mean(psnr))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=250)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/x264_determinism.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = to_uint8_frames(torch.from_numpy(rng.uniform(-1, 1, (3, 9, 16, 16)).astype(np.float32)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = {name: distinct_files(frames, options, args.runs, folder) for name, options in CANDIDATES.items()}
        for name in ("x264 defaults (threads auto)", "mbtree=0"):
            rows[name]["cost"] = cost(CANDIDATES[name], args.clips, folder)
    result = {"command": "python experiments/x264_determinism.py " + f"--runs {args.runs} --clips {args.clips}",
              "clip": "16x16, 9 frames, uniform noise (seed 0); crf 18, preset medium",
              "versions": {"av": av.__version__, "libavcodec": list(av.library_versions["libavcodec"])},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Export the built-in captioned shape videos as a text-to-video training folder (MP4s + metadata.jsonl).

    python pipelines/export_text_video_data.py --split train --frames 16 --size 64 --out data/shapes_train
    python pipelines/export_text_video_data.py --split test --out data/shapes_test   # held-out colour x motion pairs

Read it back with ``vidgen.data.VideoFolder(out, num_frames=16)``: every item then carries ``caption`` and the
ground-truth attributes in ``metadata``. Your own data in the same layout (one ``file_name`` + ``text`` JSON line
per video) trains the same way.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="train", choices=("train", "test", "all"))
    parser.add_argument("--num-videos", type=int, default=None, help="default: one per attribute combination")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from vidgen.data import ShapesDataset
    from vidgen.data.export import export_captioned
    from vidgen.errors import VidgenError
    try:
        dataset = ShapesDataset(args.split, num_frames=args.frames, size=args.size, fps=args.fps,
                                num_samples=args.num_videos, seed=args.seed)
        metadata = export_captioned(dataset, args.out, split=args.split)
    except VidgenError as err:
        print(f"export_text_video_data: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(dataset)} clips and {metadata}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

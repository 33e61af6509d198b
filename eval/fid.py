"""Per-frame FID between two folders of videos (same code path as ``vidgen eval fid``).

    python eval/fid.py --real data/real_videos --fake outputs/samples --num-frames 16 --output runs/fid.json

Run ``python eval/fid.py --help`` for all options.
"""
import sys

from vidgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "fid", *sys.argv[1:]]))

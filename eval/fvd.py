"""FVD between two folders of videos (same code path as ``vidgen eval fvd``).

    python eval/fvd.py --real data/ucf101_real --fake outputs/samples --num-frames 16 --output runs/fvd.json
    python eval/fvd.py --real data/ucf101_real --save-real-stats runs/ucf101_real16.npz   # reference once
    python eval/fvd.py --real runs/ucf101_real16.npz --fake outputs/samples

Run ``python eval/fvd.py --help`` for all options.
"""
import sys

from vidgen.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "fvd", *sys.argv[1:]]))

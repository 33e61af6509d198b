"""The main job behind ``make demo``.

For now it previews the built-in datasets (contact sheets, MP4s and a report); it becomes a text-to-video call on
shipped pretrained models once the generators and pipelines land.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidgen.data.preview import DATASETS, preview_dataset, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidgen.demo", description=__doc__)
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--num-videos", type=int, default=8)
    args = parser.parse_args(argv)
    out = Path(args.out)
    summaries = [preview_dataset(name, out, split=split, num_videos=args.num_videos)
                 for name in DATASETS for split in ("train", "test")]  # fmt: skip
    report = write_report(out, summaries, "vidgen demo: built-in datasets")
    for summary in summaries:
        print(f"{summary['dataset']}/{summary['split']}: {out / summary['contact_sheet']} + {len(summary['videos'])} MP4s")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

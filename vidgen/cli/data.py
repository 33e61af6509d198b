"""``vidgen data ...``: look at the built-in datasets."""
from __future__ import annotations

from vidgen.data.preview import DATASETS, preview_dataset, write_report


def run_preview(args) -> int:
    summaries = []
    for name in args.dataset or DATASETS:
        summary = preview_dataset(name, args.out, split=args.split, num_videos=args.num_videos,
                                  num_frames=args.num_frames, size=args.size, seed=args.seed,
                                  write_mp4=not args.no_mp4)  # fmt: skip
        summaries.append(summary)
        print(f"{name}/{args.split}: {summary['rendered']} videos -> {args.out}/{summary['contact_sheet']}")
    report = write_report(args.out, summaries, "vidgen dataset preview")
    print(f"report: {report}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="built-in datasets")
    data_sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    preview = data_sub.add_parser("preview", help="write a contact sheet PNG, MP4s and a report of the datasets")
    preview.add_argument("--dataset", action="append", choices=DATASETS, help="dataset(s) to preview (default: all)")
    preview.add_argument("--split", default="train", choices=("train", "val", "test", "all"),
                         help="val: scenes only; all: natural and shapes only")
    preview.add_argument("--out", default="outputs/preview", help="output folder")
    preview.add_argument("--num-videos", type=int, default=8)
    preview.add_argument("--num-frames", type=int, default=16)
    preview.add_argument("--size", type=int, default=64)
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--no-mp4", action="store_true", help="only the contact sheet")
    preview.set_defaults(func=run_preview)

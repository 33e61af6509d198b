"""``vidgen data ...``: look at the built-in datasets; encode videos into a shard dataset and describe one."""
from __future__ import annotations

import json

from vidgen.data.shards.buckets import DEFAULT_BUCKETS
from vidgen.data.preview import DATASETS, preview_dataset, write_report


def run_preview(args) -> int:
    summaries = []
    names = (args.dataset or []) + (["folder"] if args.folder else []) or list(DATASETS)
    for name in names:
        split = "all" if name == "folder" else args.split
        summary = preview_dataset(name, args.out, split=split, num_videos=args.num_videos, num_frames=args.num_frames,
                                  size=args.size, seed=args.seed, write_mp4=not args.no_mp4, root=args.folder)
        summaries.append(summary)
        print(f"{name}/{split}: {summary['rendered']} videos -> {args.out}/{summary['contact_sheet']}")
    report = write_report(args.out, summaries, "vidgen dataset preview")
    print(f"report: {report}")
    return 0


def run_encode(args) -> int:
    import torch

    from vidgen.data.shards import dataset_summary
    from vidgen.training.shards import encode_dataset
    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        info = encode_dataset(args.source, args.tokenizer, args.out, buckets=args.buckets,
                              text_encoder=args.text_encoder, max_text_tokens=args.max_text_tokens,
                              batch_size=args.batch_size, num_workers=args.workers, chunk_size=args.chunk_size,
                              dtype=args.dtype, first_frames=args.first_frames)
    finally:
        torch.set_num_threads(threads)  # as found (the command also runs in-process)
    print(f"{args.out}: {dataset_summary(info)}")
    return 0


def run_info(args) -> int:
    from vidgen.data.shards import dataset_info
    print(json.dumps(dataset_info(args.dir), indent=2))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="built-in datasets")
    data_sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    preview = data_sub.add_parser("preview", help="write a contact sheet PNG, MP4s and a report of the datasets")
    preview.add_argument("--dataset", action="append", choices=DATASETS,
                         help="built-in dataset(s) to preview (default: all, or none with --folder)")
    preview.add_argument("--folder", default=None, metavar="DIR",
                         help="a folder of your own videos, read as training reads data.dataset=folder (captions "
                              "from its metadata.jsonl)")
    preview.add_argument("--split", default="train", choices=("train", "val", "test", "all"),
                         help="val: scenes only; all: natural and shapes only")
    preview.add_argument("--out", default="outputs/preview", help="output folder")
    preview.add_argument("--num-videos", type=int, default=8)
    preview.add_argument("--num-frames", type=int, default=16)
    preview.add_argument("--size", type=int, default=64)
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--no-mp4", action="store_true", help="only the contact sheet")
    preview.set_defaults(func=run_preview)

    encode = data_sub.add_parser("encode", help="encode a video folder or manifest into a bucketed shard dataset "
                                 "(resumable; run under accelerate launch for several processes)")
    encode.add_argument("source", help="a folder of videos / frame folders (captions from metadata.jsonl) or a CSV, "
                        "JSONL or Parquet manifest (path, caption, optional start / end seconds)")
    encode.add_argument("--tokenizer", required=True, help="a saved vidgen tokenizer or diffusers video VAE folder")
    encode.add_argument("--out", required=True, help="the dataset folder (a rerun continues an unfinished encode)")
    encode.add_argument("--buckets", default=",".join(DEFAULT_BUCKETS),
                        help="FRAMESxHEIGHTxWIDTH shapes, comma-separated (default: %(default)s)")
    encode.add_argument("--text-encoder", default="", help="a text encoder folder; default all-MiniLM-L6-v2; "
                        "'none' for unconditional data")
    encode.add_argument("--max-text-tokens", type=int, default=16)
    encode.add_argument("--batch-size", type=int, default=8, help="clips encoded at once per bucket")
    encode.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding the videos")
    encode.add_argument("--chunk-size", type=int, default=256, help="source clips per resumable work unit")
    encode.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32"),
                        help="how latents are stored (default bfloat16; ids are stored as int16 / int32)")
    encode.add_argument("--first-frames", action="store_true",
                        help="also keep each clip's frame 0 as an RGB image: the first frame an image-to-video "
                        "pipeline folder is fine-tuned on")
    encode.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    encode.set_defaults(func=run_encode)

    info = data_sub.add_parser("info", help="print a shard dataset's clips, buckets, tokenizer and skipped files as "
                               "JSON")
    info.add_argument("dir", help="the dataset folder written by vidgen data encode")
    info.set_defaults(func=run_info)

"""``vidgen eval fvd`` and ``vidgen eval fid``: Fréchet distances between two folders of videos.

``--real`` is a folder of videos or a ``.npz`` statistics file written earlier with ``--save-real-stats``
(compute the reference set once). Results are printed and optionally written as JSON, with the protocol.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vidgen.errors import InvalidInputError


def _dataset(root: str, args):
    from vidgen.data import VideoFolder

    dataset = VideoFolder(root, num_frames=args.num_frames, size=args.size, stride=args.stride,
                          clip_sampling=args.clip_sampling, seed=args.seed)
    indices = list(range(len(dataset)))
    if args.max_videos is not None and args.max_videos < len(dataset):
        # a seeded random subset (sorted back into path order): the first N paths would be the first classes only
        generator = torch.Generator().manual_seed(args.seed)
        indices = sorted(torch.randperm(len(dataset), generator=generator)[: args.max_videos].tolist())
    return dataset, indices


def _feed_fvd(metric, root: str, real: bool, args) -> int:
    from vidgen.metrics.fvd import preprocess_for_i3d

    dataset, indices = _dataset(root, args)
    buffer, sizes = [], set()
    progress = tqdm(indices, desc=f"FVD {'real' if real else 'fake'} ({root})", disable=args.quiet)
    for position, index in enumerate(progress):
        video = dataset[index]["video"]  # (3, T, H, W)
        sizes.add(tuple(video.shape[-2:]))
        buffer.append(preprocess_for_i3d(video[None]))  # resized per video, so folders may mix sizes
        if len(buffer) == args.batch_size or position == len(indices) - 1:
            record = {"frames": args.num_frames, "input_hw": sorted(sizes), "stride": args.stride}
            metric.update(torch.cat(buffer), real=real, record=record)
            buffer = []
    return len(indices)


def _feed_fid(metric, root: str, real: bool, args) -> int:
    dataset, indices = _dataset(root, args)
    for index in tqdm(indices, desc=f"FID {'real' if real else 'fake'} ({root})", disable=args.quiet):
        video = dataset[index]["video"]  # every frame is one FID sample
        metric.update(video[None], real=real, record={"frames": args.num_frames, "input_hw": list(video.shape[-2:]),
                                                      "stride": args.stride})
    return len(indices)


def _check_args(args, min_frames: int = 1) -> None:
    """Refuse option values that would otherwise fail late (after decoding videos) or be silently ignored."""
    if args.num_frames < min_frames:
        raise InvalidInputError(f"--num-frames must be >= {min_frames} here, got {args.num_frames}")
    if args.max_videos is not None and args.max_videos < 2:
        raise InvalidInputError(f"--max-videos must be >= 2 (a covariance needs 2 samples), got {args.max_videos}")
    if args.save_real_stats and not Path(args.real).is_dir():
        raise InvalidInputError(f"--save-real-stats needs --real to be a folder of videos, got {args.real}")


def _run(args, metric, feed) -> int:
    real = Path(args.real)
    if args.fake is not None:  # read last, so checked first: an empty folder fails before the real set's features
        found = len(_dataset(args.fake, args)[1])  # FVD: one sample a video (FID counts every frame)
        if found < 2 and feed is _feed_fvd:
            raise InvalidInputError(f"--fake {args.fake}: {found} video, and FVD's covariance needs at least 2")
    if real.is_file() and real.suffix == ".npz":
        metric.load_real_stats(real)
    elif real.is_dir():
        feed(metric, args.real, True, args)
        if args.save_real_stats:
            metric.save_real_stats(args.save_real_stats)
    else:
        raise InvalidInputError(f"--real must be a folder of videos or a .npz statistics file, got {args.real}")
    if args.fake is None:
        if not (args.save_real_stats and real.is_dir()):
            raise InvalidInputError("give --fake (a folder of videos), or a --real folder with --save-real-stats")
        print(json.dumps({"saved_real_stats": args.save_real_stats, "n_real": metric.real.count}))
        return 0
    feed(metric, args.fake, False, args)
    result = metric.compute(with_noise_floor=not args.no_noise_floor)
    result["protocol"].update(real_source=str(args.real), fake_source=str(args.fake), num_frames=args.num_frames,
                              size=args.size, stride=args.stride, clip_sampling=args.clip_sampling,
                              max_videos=args.max_videos, seed=args.seed)
    text = json.dumps(result, indent=2, default=list)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


def run_fvd(args) -> int:
    from vidgen.metrics.fvd import FrechetVideoDistance
    from vidgen.metrics.i3d import MIN_FRAMES

    _check_args(args, min_frames=MIN_FRAMES)
    metric = FrechetVideoDistance(weights=args.weights, batch_size=args.batch_size, num_threads=args.threads,
                                  progress=False)
    return _run(args, metric, _feed_fvd)


def run_fid(args) -> int:
    from vidgen.metrics.fid import FrechetInceptionDistance

    _check_args(args)
    metric = FrechetInceptionDistance(weights=args.weights, batch_size=args.batch_size, num_threads=args.threads,
                                      progress=False)
    return _run(args, metric, _feed_fid)


def _common(parser, default_frames: int, default_batch: int) -> None:
    parser.add_argument("--real", required=True, help="folder of videos, or a .npz written by --save-real-stats")
    parser.add_argument("--fake", help="folder of generated videos")
    parser.add_argument("--num-frames", type=int, default=default_frames, help="frames per clip")
    parser.add_argument("--size", type=int, default=None,
                        help="first bring clips to this resolution (short side + centre crop), e.g. 128 to evaluate "
                             "at the generator's resolution; default: native size")
    parser.add_argument("--stride", type=int, default=1, help="temporal step between sampled frames")
    parser.add_argument("--clip-sampling", default="start", choices=("start", "center", "random"))
    parser.add_argument("--seed", type=int, default=0, help="seed of --clip-sampling random and --max-videos")
    parser.add_argument("--max-videos", type=int, default=None,
                        help="use N videos: a seeded random subset when the folder holds more (e.g. 2048)")
    parser.add_argument("--batch-size", type=int, default=default_batch)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the network (default: all)")
    parser.add_argument("--weights", default=None, help="feature-network weights (default: the packaged file)")
    parser.add_argument("--save-real-stats", default=None, help="write the real-set statistics to this .npz")
    parser.add_argument("--output", default=None, help="write the JSON result here")
    parser.add_argument("--no-noise-floor", action="store_true", help="skip the sampling noise-floor estimate")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def register(eval_subparsers) -> None:
    fvd = eval_subparsers.add_parser("fvd", help="Fréchet Video Distance (I3D Kinetics-400, StyleGAN-V protocol)")
    _common(fvd, default_frames=16, default_batch=4)
    fvd.set_defaults(func=run_fvd)
    fid = eval_subparsers.add_parser("fid", help="per-frame Fréchet Inception Distance of two video folders")
    _common(fid, default_frames=16, default_batch=32)
    fid.set_defaults(func=run_fid)

"""``vidgen generate``: sample videos from a saved pipeline and write MP4 / GIF files plus a PNG contact sheet.

    vidgen generate "a red circle moving left" --pipeline pretrained/shapes-masked --num-frames 17 \\
        --height 64 --width 64 --seed 0 --out video.mp4

``--pipeline`` takes a shipped pipeline's name (``masked``, ``flow``, ``autoregressive``: its folder under
``--pretrained``) or any folder written by ``save_pretrained`` of a vidgen pipeline. Sampling settings not given
(``--steps``, ``--guidance``) come from the folder's ``sampling_config.json``. Give a
prompt (text-conditioned models), ``--class`` (class-conditioned models) or neither (unconditional sampling).
``--init-video`` continues a video from its first frames (image-to-video from a single image or frame).
Video ``i`` of ``--num-videos N`` is sampled with seed ``--seed + i`` on its own generator, so each file can be
regenerated alone with ``--seed`` set to its seed.
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from vidgen.errors import ConfigError, InvalidInputError, MissingWeightsError, VidgenError, VideoIOError

VIDEO_SUFFIXES = (".mp4", ".gif")


def _check_args(args) -> None:
    """Refuse bad option values before the (slow) pipeline is loaded."""
    if args.prompt is not None and args.class_label is not None:
        raise InvalidInputError("give a prompt or --class, not both")
    if args.negative_prompt is not None and args.prompt is None:
        raise InvalidInputError("--negative-prompt needs a prompt to contrast with")
    for name, value in (("--num-frames", args.num_frames), ("--height", args.height), ("--width", args.width),
                        ("--num-videos", args.num_videos)):
        if value < 1:
            raise InvalidInputError(f"{name} must be >= 1, got {value}")
    if args.steps is not None and args.steps < 1:
        raise InvalidInputError(f"--steps must be >= 1, got {args.steps}")
    if args.threads is not None and args.threads < 1:
        raise InvalidInputError(f"--threads must be >= 1, got {args.threads}")
    if args.guidance is not None and not args.guidance >= 0:
        raise InvalidInputError(f"--guidance must be >= 0, got {args.guidance}")
    if not args.fps > 0:
        raise InvalidInputError(f"--fps must be > 0, got {args.fps}")
    if args.class_label is not None and args.class_label < 0:
        raise InvalidInputError(f"--class must be >= 0, got {args.class_label}")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise InvalidInputError(f"--seed must be in [0, 2**63), got {args.seed}")
    if Path(args.out).suffix.lower() not in VIDEO_SUFFIXES:
        raise InvalidInputError(f"--out must end with {' or '.join(VIDEO_SUFFIXES)}, got {args.out}")
    if args.init_video is not None and not Path(args.init_video).exists():
        raise VideoIOError(f"--init-video {args.init_video}: no such file or folder")
    folder = pipeline_folder(args)
    if not Path(folder).is_dir():
        where = f" {folder}" if folder != args.pipeline else ""
        raise MissingWeightsError(f"--pipeline {args.pipeline}: no such folder{where} (expected a save_pretrained "
                                  f"folder with model_index.json, or a shipped name: {', '.join(_names())})")


def _names() -> list[str]:
    from vidgen.pipelines.registry import PIPELINE_REGISTRY
    return list(PIPELINE_REGISTRY)


def pipeline_folder(args) -> str:
    """``--pipeline`` as a folder: a shipped name (``masked``, ...) is its folder under ``--pretrained``, unless a
    folder of that name exists here."""
    if args.pipeline in _names() and not Path(args.pipeline).is_dir():
        from vidgen.pipelines.registry import shipped_folder
        return str(shipped_folder(args.pipeline, args.pretrained))
    return args.pipeline


def _load(path: str, precision: str = "auto"):
    from vidgen.pipelines import load_pipeline

    try:
        return load_pipeline(path, dtype=precision)
    except VidgenError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:  # diffusers / safetensors errors on a broken folder
        raise ConfigError(f"{path}: cannot load the pipeline ({type(err).__name__}: {err})") from err


def _init_video(args):
    """``--init-video`` as ``(1, 3, Tc, H, W)`` in [-1, 1] at the requested size (at most ``--num-frames`` frames).
    A video file or frame folder is read with :func:`vidgen.io.read_video`; a single image is a one-frame video."""
    import numpy as np
    import torch

    from vidgen.io import FRAME_SUFFIXES, probe_video, read_video, resize_and_center_crop

    path = Path(args.init_video)
    if path.is_file() and path.suffix.lower() in FRAME_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise InvalidInputError(f"--init-video {path}: not a readable image ({err})") from err
        frame = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[:, None].float() / 127.5 - 1  # (3, 1, H, W)
        frames = resize_and_center_crop(frame, (args.height, args.width))
    else:
        available = probe_video(path).num_frames
        frames, _ = read_video(path, num_frames=min(available, args.num_frames), size=(args.height, args.width))
    if frames.shape[1] >= args.num_frames:
        print(f"note: --init-video gives all {args.num_frames} frames, so every latent frame is given and the "
              "output reconstructs it; pass a shorter video (or fewer of its frames) to continue it",
              file=sys.stderr)
    return frames[None]


def output_paths(out: str, count: int) -> list[Path]:
    """``video.mp4`` for one video, ``video_0.mp4``, ``video_1.mp4``, ... for several."""
    path = Path(out)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(count)]


def generate(args) -> list[Path]:
    """Run the pipeline and write the files; returns the written paths (videos, then the contact sheet)."""
    import torch

    from vidgen.io import contact_sheet, save_image, write_video
    from vidgen.pipelines import AutoregressiveVideoPipeline

    _check_args(args)
    pipe = _load(pipeline_folder(args), args.precision)
    autoregressive = isinstance(pipe, AutoregressiveVideoPipeline)
    if autoregressive and args.steps is not None:
        raise InvalidInputError("--steps: the autoregressive pipeline samples one step per token; leave --steps out")
    pipe.set_progress_bar_config(desc="sampling")
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    kwargs = dict(num_frames=args.num_frames, height=args.height, width=args.width,
                  num_videos_per_prompt=args.num_videos, output_type="pt",
                  generator=[torch.Generator().manual_seed(seed + i) for i in range(args.num_videos)])
    if args.prompt is not None:
        kwargs["prompt"] = args.prompt
    if args.negative_prompt is not None:
        kwargs["negative_prompt"] = args.negative_prompt
    if args.class_label is not None:
        kwargs["class_labels"] = [args.class_label]
    if args.steps is not None:
        kwargs["num_inference_steps"] = args.steps
    if args.guidance is not None:
        kwargs["guidance_scale"] = args.guidance
    if args.init_video is not None:
        kwargs["conditioning_frames"] = _init_video(args)

    start = time.perf_counter()
    frames = pipe(**kwargs).frames  # (B, T, 3, H, W) in [0, 1]
    elapsed = time.perf_counter() - start
    expected = (args.num_videos, args.num_frames, 3, args.height, args.width)
    if tuple(frames.shape) != expected:  # never write files of another size than asked for
        raise InvalidInputError(f"the pipeline returned frames of shape {tuple(frames.shape)}, expected {expected}")
    videos = [video.permute(1, 0, 2, 3) * 2 - 1 for video in frames.float()]  # (3, T, H, W) in [-1, 1] each

    paths = output_paths(args.out, len(videos))
    written = [write_video(path, video, fps=args.fps) for path, video in zip(paths, videos)]
    if args.prompt is not None:
        label = args.prompt
    elif args.class_label is not None:
        label = f"class {args.class_label}"
    else:
        label = "unconditional"
    labels = [f"{label} (seed {seed + i})" for i in range(len(videos))]
    scale = 2 if max(args.height, args.width) < 128 else 1
    sheet = save_image(written[0].with_name(f"{Path(args.out).stem}.png"),
                       contact_sheet(videos, labels=labels, scale=scale))
    print(f"sampled {len(videos)} video(s) of {args.num_frames}x{args.height}x{args.width} in {elapsed:.1f} s "
          f"(seed {seed}, {pipe.precision})")
    for path in written:
        print(f"video: {path}")
    print(f"contact sheet: {sheet}")
    return [*written, sheet]


def run(args) -> int:
    import torch

    old_threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        generate(args)
        return 0
    except VidgenError as err:
        print(f"vidgen generate: error: {err}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(old_threads)


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="sample videos from a saved pipeline (MP4/GIF + contact sheet)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt", nargs="?", default=None,
                        help="text prompt (leave out for --class or unconditional sampling)")
    parser.add_argument("--pipeline", required=True,
                        help="a shipped pipeline (masked, flow, autoregressive) or a save_pretrained folder")
    parser.add_argument("--pretrained", default="pretrained",
                        help="folder holding the shipped pipelines' folders (for --pipeline NAME)")
    parser.add_argument("--negative-prompt", default=None, help="what to steer away from (classifier-free guidance)")
    parser.add_argument("--class", dest="class_label", type=int, default=None, metavar="N",
                        help="class label for class-conditioned models, instead of a prompt")
    parser.add_argument("--init-video", default=None, metavar="FILE",
                        help="video, frame folder or image to start from: its frames are kept and the rest is sampled "
                             "(continuation; an image or one frame: image-to-video)")
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default: the folder's sampling_config.json, else the pipeline's; not for "
                             "autoregressive pipelines)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale (default: the folder's sampling_config.json, else the "
                             "pipeline's)")
    parser.add_argument("--num-videos", type=int, default=1,
                        help="videos to sample; several are written as <stem>_0, <stem>_1, ...")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the first video (video i uses seed + i); default: a random one, printed")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="compute precision: auto = bf16 where the CPU/GPU multiplies bf16 fast (README: Precision)")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate of the written files")
    parser.add_argument("--out", default="outputs/video.mp4",
                        help="output .mp4 or .gif (the contact sheet <stem>.png goes next to it)")
    parser.set_defaults(func=run)

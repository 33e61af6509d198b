"""``vidgen generate``: sample videos from a saved pipeline and write MP4 / GIF files plus a PNG contact sheet.

    vidgen generate "a red circle moving left" --pipeline pretrained/shapes-masked --num-frames 17 \\
        --height 64 --width 64 --seed 0 --out video.mp4

``--pipeline`` takes a shipped pipeline's name (those of :data:`vidgen.pipelines.PIPELINE_REGISTRY`, listed by
``vidgen info`` and ``--help``: its folder under ``--pretrained``) or any folder written by ``save_pretrained`` of a
vidgen pipeline. Sampling settings not given
(``--steps``, ``--guidance``) come from the folder's ``sampling_config.json``. Give a
prompt (text-conditioned models), ``--class`` (class-conditioned models) or neither (unconditional sampling).
``--init-video`` continues a video from its first frames (image-to-video from a single image or frame), to any
``--num-frames``: past one window of the generator it is continued chunk by chunk, as a long video is; the
block-causal pipeline takes an image only, its stream's first frame (``image=``).
Video ``i`` of ``--num-videos N`` is sampled with seed ``--seed + i`` on its own generator, so each file can be
regenerated alone with ``--seed`` set to its seed.

Stories and long videos (Phenaki's story mode, :mod:`vidgen.pipelines.story`):

    vidgen generate --pipeline masked --story "a red circle moving right; a red circle moving up" \
        --frames-per-prompt 40 --out story.mp4
    vidgen generate --pipeline flow --story story.json --num-frames 1000 --out long.mp4

``--story`` is prompts separated by ``;`` (one every ``--frames-per-prompt`` frames), or a JSON / YAML file holding
such a list or a ``{frame_index: prompt}`` mapping. A story, or more frames than the generator makes at once, is made
chunk by chunk and written to the MP4 as it is produced, so memory does not grow with length.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

from vidgen.cli.generate_inputs import first_frame, init_video, story_schedule
from vidgen.errors import ConfigError, InvalidInputError, MissingWeightsError, VidgenError, VideoIOError

VIDEO_SUFFIXES = (".mp4", ".gif")


def _check_args(args) -> None:
    """Refuse bad option values before the (slow) pipeline is loaded."""
    if args.prompt is not None and args.class_label is not None:
        raise InvalidInputError("give a prompt or --class, not both")
    if args.story is not None and (args.prompt is not None or args.class_label is not None):
        raise InvalidInputError("give a prompt, --story or --class, not two of them")
    if args.sp != 1 and (args.seed is None or args.story is not None):
        raise InvalidInputError(f"--sp {args.sp}: give --seed (every process must draw the same noise); stories and "
                                "long videos are not split over processes")
    if args.frames_per_prompt < 1:
        raise InvalidInputError(f"--frames-per-prompt must be >= 1, got {args.frames_per_prompt}")
    if args.context_frames is not None and args.context_frames < 0:
        raise InvalidInputError(f"--context-frames must be >= 0, got {args.context_frames}")
    if args.story is not None:
        args.prompt = story_schedule(args.story, args.frames_per_prompt)
        if args.num_frames is None:
            args.num_frames = max(args.prompt) + args.frames_per_prompt
    if args.num_frames is None:
        args.num_frames = 17
    if args.story is not None:
        from vidgen.pipelines.story import check_schedule
        if Path(args.out).suffix.lower() != ".mp4":
            raise InvalidInputError(f"--out {args.out}: stories are written as they are made, to .mp4 only")
        if args.num_frames >= 1:
            try:
                check_schedule(args.prompt, "--story", args.num_frames)
            except InvalidInputError as err:
                fpp = args.frames_per_prompt
                if list(args.prompt) == [k * fpp for k in range(len(args.prompt))]:  # a list: frames from fpp
                    raise InvalidInputError(f"{err} (a --story list puts prompt k at frame k x --frames-per-prompt "
                                            f"{args.frames_per_prompt} of --num-frames {args.num_frames})") from err
                raise
    if isinstance(args.prompt, str) and not args.prompt.strip():
        raise InvalidInputError(f"the prompt {args.prompt!r} is blank; leave it out to sample unconditionally")
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


class RegistryHelp(str):
    """An argparse help text whose ``{names}`` is filled with the shipped pipelines' names from
    :data:`~vidgen.pipelines.PIPELINE_REGISTRY` when the help is printed (argparse formats it with ``%``), so the
    list cannot disagree with the registry and building the parser does not import the pipelines."""

    def __mod__(self, params):
        return str(self).replace("{names}", ", ".join(_names())) % params


def pipeline_folder(args) -> str:
    """``--pipeline`` as a folder: a shipped name (``masked``, ...) is its folder under ``--pretrained``, unless a
    folder of that name exists here."""
    if args.pipeline in _names() and not Path(args.pipeline).is_dir():
        from vidgen.pipelines.registry import shipped_folder
        return str(shipped_folder(args.pipeline, args.pretrained))
    return args.pipeline


def _load(path: str, precision: str | None = None):
    """The pipeline in ``path`` at ``precision`` (None: the folder kind's default, as ``load_pipeline`` gives it: the
    measured default of vidgen's folders, fp32 for a diffusers folder, as diffusers loads it)."""
    from vidgen.pipelines import load_pipeline

    try:
        return load_pipeline(path, **({} if precision is None else {"dtype": precision}))
    except VidgenError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:  # diffusers / safetensors errors on a broken folder
        raise ConfigError(f"{path}: cannot load the pipeline ({type(err).__name__}: {err})") from err


def _window_frames(pipe) -> int:
    """Frames of one window of ``pipe``'s generator (its latent frames' output frames)."""
    from vidgen.pipelines.story import first_output_frame
    return first_output_frame(pipe.window - 1, pipe.video_tokenizer.codec_config.temporal_compression) + 1


def output_paths(out: str, count: int) -> list[Path]:
    """``video.mp4`` for one video, ``video_0.mp4``, ``video_1.mp4``, ... for several."""
    path = Path(out)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(count)]


def generate(args) -> list[Path]:
    """Run the pipeline and write the files; returns the written paths (videos, then the contact sheet)."""
    import torch

    from vidgen.io import write_video
    from vidgen.pipelines import AutoregressiveVideoPipeline

    _check_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
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
    if args.init_video is not None and getattr(pipe, "takes_first_frame", False):
        kwargs["image"] = first_frame(args, pipe)
    elif args.init_video is not None:
        if pipe.continuation_refusal is not None:
            raise InvalidInputError(f"--init-video: {type(pipe).__name__} cannot continue a video "
                                    f"({pipe.continuation_refusal}); use a masked, flow or autoregressive pipeline, or "
                                    "leave --init-video out")
        kwargs["conditioning_frames"] = init_video(args)

    if args.context_frames is not None:
        kwargs["context_frames"] = args.context_frames
    if args.prompt_switch is not None:
        if "prompt_switch" not in pipe.sampling_config_class.settings():
            raise InvalidInputError(f"--prompt-switch: {type(pipe).__name__} gives each new prompt's chunks the frames "
                                    "before them (--context-frames), with no cache to switch; only the causal "
                                    "pipeline takes it")
        kwargs["prompt_switch"] = args.prompt_switch
    if args.sp != 1:
        if autoregressive:
            raise InvalidInputError(f"--sp {args.sp}: the autoregressive pipeline decodes token by token from a KV "
                                    "cache and is not split over processes; use the flow or masked pipeline")
        kwargs["sp_size"] = args.sp
    latent_frames = pipe.video_tokenizer.latent_grid(args.num_frames, args.height, args.width)[0]
    if args.story is not None or latent_frames > pipe.window:  # the autoregressive pipe() would hold every frame
        return _generate_streamed(args, pipe, kwargs, seed)
    start = time.perf_counter()
    frames = pipe(**kwargs).frames  # (B, T, 3, H, W) in [0, 1]
    elapsed = time.perf_counter() - start
    expected = (args.num_videos, args.num_frames, 3, args.height, args.width)
    if tuple(frames.shape) != expected:  # never write files of another size than asked for
        raise InvalidInputError(f"the pipeline returned frames of shape {tuple(frames.shape)}, expected {expected}")
    videos = [video.permute(1, 0, 2, 3) * 2 - 1 for video in frames.float()]  # (3, T, H, W) in [-1, 1] each
    if args.sp != 1 and int(os.environ.get("RANK", "0")) != 0:  # every rank has the same frames: rank 0 writes
        return []

    paths = output_paths(args.out, len(videos))
    written = [write_video(path, video, fps=args.fps) for path, video in zip(paths, videos)]
    if args.prompt is not None:
        label = args.prompt
    elif args.class_label is not None:
        label = f"class {args.class_label}"
    else:
        label = "unconditional"
    return _report(args, pipe, written, videos, label, seed, elapsed)


def _report(args, pipe, paths: list[Path], sheet_videos: list, label: str, seed: int, elapsed: float,
            how: str = "") -> list[Path]:
    """Write the contact sheet (one row per video), print what was written; the written paths."""
    from vidgen.io import contact_sheet, save_image
    labels = [f"{label} (seed {seed + i})" for i in range(len(paths))]
    scale = 2 if max(args.height, args.width) < 128 else 1
    sheet = save_image(paths[0].with_name(f"{Path(args.out).stem}.png"),
                       contact_sheet(sheet_videos, labels=labels, scale=scale))
    print(f"sampled {len(paths)} video(s) of {args.num_frames}x{args.height}x{args.width} in {elapsed:.1f} s"
          f"{how} (seed {seed}, {pipe.precision})")
    for path in paths:
        print(f"video: {path}")
    print(f"contact sheet: {sheet}")
    return [*paths, sheet]


def _generate_streamed(args, pipe, kwargs: dict, seed: int) -> list[Path]:
    """A story or long video (continuing ``--init-video`` if given): each video chunk by chunk through
    ``pipe.stream``, written to its MP4 as the chunks come (memory flat in length); the contact sheet shows 8 frames
    spread over each video, labelled with how many of its frames they are."""
    import torch

    from vidgen.io import VideoWriter

    if Path(args.out).suffix.lower() != ".mp4":
        raise InvalidInputError(f"--out {args.out}: stories and long videos are written as they are made, to .mp4 only")
    if "class_labels" in kwargs:
        raise InvalidInputError(f"--class: not supported for stories and videos longer than the generator's window "
                                f"({_window_frames(pipe)} frames); give a prompt, or at most that many --num-frames")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("generator", "num_videos_per_prompt", "output_type")}
    prompt = kwargs.pop("prompt", None)
    shown = {round(i * (args.num_frames - 1) / 7) for i in range(8)}  # frames kept for the contact sheet
    paths, sheets, start = output_paths(args.out, args.num_videos), [], time.perf_counter()
    for i, path in enumerate(paths):
        kept, done = [], 0
        with VideoWriter(path, fps=args.fps) as writer:
            for part in pipe.stream(prompt, generator=torch.Generator().manual_seed(seed + i), output_type="pt",
                                    **kwargs):
                chunk = part[0].permute(1, 0, 2, 3) * 2 - 1  # (3, n, H, W) in [-1, 1]
                writer.write(chunk)
                kept += [chunk[:, j - done] for j in range(done, done + chunk.shape[1]) if j in shown]
                done += chunk.shape[1]
        if done != args.num_frames:  # never leave a file of another length than asked for
            path.unlink()
            raise InvalidInputError(f"the pipeline gave {done} frames, {args.num_frames} asked")
        sheets.append(torch.stack(kept, 1))
    label = f"story of {len(prompt)} prompts" if isinstance(prompt, dict) else (prompt or "unconditional")
    return _report(args, pipe, paths, sheets, f"{label}, {len(shown)} of {args.num_frames} frames", seed,
                   time.perf_counter() - start,
                   ", chunk by chunk")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the writers' exits remove their partial files, as for Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated


def run(args) -> int:
    import torch

    old_threads = torch.get_num_threads()
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    old_handler = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        generate(args)
        return 0
    except VidgenError as err:
        print(f"vidgen generate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the writers remove their partial files as the interrupt passes
        print("vidgen generate: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("vidgen generate: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_handler)
        torch.set_num_threads(old_threads)


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="sample videos from a saved pipeline (MP4/GIF + contact sheet)",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt", nargs="?", default=None,
                        help="text prompt (leave out for --class or unconditional sampling)")
    parser.add_argument("--pipeline", required=True,
                        help=RegistryHelp("a shipped pipeline ({names}) or a save_pretrained folder"))
    parser.add_argument("--pretrained", default="pretrained",
                        help="folder holding the shipped pipelines' folders (for --pipeline NAME)")
    parser.add_argument("--negative-prompt", default=None, help="what to steer away from (classifier-free guidance)")
    parser.add_argument("--class", dest="class_label", type=int, default=None, metavar="N",
                        help="class label for class-conditioned models, instead of a prompt")
    parser.add_argument("--init-video", default=None, metavar="FILE",
                        help="video, frame folder or image to start from: its frames are kept and the rest is sampled "
                             "(continuation to any --num-frames; an image or one frame: image-to-video; masked, "
                             "flow and autoregressive pipelines; causal: an image only, the stream's first frame)")
    parser.add_argument("--story", default=None, metavar="PROMPTS",
                        help="a story: prompts separated by ';', one every --frames-per-prompt frames, or a JSON / YAML "
                             "file with a list of prompts or a {frame_index: prompt} mapping")
    parser.add_argument("--frames-per-prompt", type=int, default=32,
                        help="frames per prompt of a --story list (default 32)")
    parser.add_argument("--context-frames", type=int, default=None,
                        help="latent frames each chunk of a story or long video is given from before it (default: "
                             "the pipeline's)")
    parser.add_argument("--prompt-switch", choices=("recache", "reset"), default=None,
                        help="causal pipeline, at each new prompt of a --story: recache (keep the picture, re-encode "
                             "the cache under the new prompt) or reset (start the new prompt's object afresh); "
                             "default: the folder's")
    parser.add_argument("--num-frames", type=int, default=None,
                        help="frames (default 17; for a --story, its prompts x --frames-per-prompt)")
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
    parser.add_argument("--sp", type=int, default=1, metavar="N",
                        help="split each clip's tokens over N processes of a distributed launch (flow and masked; "
                             "e.g. torchrun --nproc_per_node N -m vidgen generate ... --sp N --seed 0); rank 0 writes")
    parser.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16"),
                        help="compute precision: auto = bf16 where the CPU/GPU multiplies bf16 fast "
                             "(docs/precision.md); default: auto for vidgen's folders, fp32 for a diffusers folder "
                             "(as diffusers loads it)")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate of the written files")
    parser.add_argument("--out", default="outputs/video.mp4",
                        help="output .mp4 or .gif (the contact sheet <stem>.png goes next to it)")
    parser.set_defaults(func=run)

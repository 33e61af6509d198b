"""What ``vidgen generate`` reads from its options before sampling: a ``--story`` as a prompt schedule, and
``--init-video`` as the frames to continue or the first frame of a stream."""
from __future__ import annotations

import sys
from pathlib import Path

from vidgen.errors import InvalidInputError


def story_schedule(story: str, frames_per_prompt: int) -> dict:
    """``--story`` as ``{frame_index: prompt}``: ``"p1; p2; ..."`` (one prompt every ``frames_per_prompt`` frames),
    or a JSON / YAML file with such a list or a ``{frame_index: prompt}`` mapping."""
    path = Path(story)
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise InvalidInputError(f"--story {story}: no such file")
        import yaml  # JSON is YAML too
        try:
            loaded = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise InvalidInputError(f"--story {story}: not a readable JSON / YAML file ({err})") from err
    else:
        loaded = [part.strip() for part in story.split(";")]
    if isinstance(loaded, dict):
        schedule = {}
        for key, prompt in loaded.items():
            text = str(key).strip()
            if not text.lstrip("-").isdigit():
                raise InvalidInputError(f"--story {story}: key {key!r} is not a frame index")
            schedule[int(text)] = prompt
        return schedule
    if not isinstance(loaded, list) or not loaded:
        raise InvalidInputError(f"--story {story}: expected prompts separated by ';', or a file with a list of prompts "
                                "or a {frame_index: prompt} mapping")
    for i, prompt in enumerate(loaded):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInputError(f"--story: prompt {i + 1} of {len(loaded)} is empty")
    return {i * frames_per_prompt: prompt for i, prompt in enumerate(loaded)}


def init_video(args, note: bool = True):
    """``--init-video`` as ``(1, 3, Tc, H, W)`` in [-1, 1] at the requested size (at most ``--num-frames`` frames).
    A video file or frame folder is read with :func:`vidgen.io.read_video`; a single image is a one-frame video."""
    import numpy as np
    import torch

    from vidgen.io import FRAME_SUFFIXES, probe_video, read_video, resize_and_center_crop
    from vidgen.io.video import CONTAINER_SUFFIXES

    path = Path(args.init_video)
    if path.is_file() and path.suffix.lower() not in FRAME_SUFFIXES + CONTAINER_SUFFIXES:
        raise InvalidInputError(f"--init-video {path}: unsupported format {path.suffix!r}; give a video "
                                f"({' '.join(CONTAINER_SUFFIXES)}), an image ({' '.join(FRAME_SUFFIXES)}) or a "
                                "folder of frames")
    if path.is_file() and path.suffix.lower() in FRAME_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise InvalidInputError(f"--init-video {path}: not a readable image ({err})") from err
        frame = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[:, None].float() / 127.5 - 1  # (3, 1, H, W)
        size = pixels.shape[:2]
        frames = resize_and_center_crop(frame, (args.height, args.width))
    else:
        info = probe_video(path)
        size = (info.height, info.width)
        frames, _ = read_video(path, num_frames=min(info.num_frames, args.num_frames), size=(args.height, args.width))
    if tuple(size) != (args.height, args.width):
        print(f"note: --init-video {path.name} is {size[1]}x{size[0]}: resized and centre-cropped to "
              f"{args.width}x{args.height} (--width x --height)", file=sys.stderr)
    if note and frames.shape[1] >= args.num_frames:
        print(f"note: --init-video gives all {args.num_frames} frames, so every latent frame is given and the "
              "output reconstructs it; pass a shorter video (or fewer of its frames) to continue it",
              file=sys.stderr)
    return frames[None]


def first_frame(args, pipe):
    """``--init-video`` as the ``image=`` of a pipeline that starts its stream from one frame (the block-causal
    pipeline): a (3, H, W) tensor in [0, 1] at the requested size; a named error for a video of several frames."""
    frames = init_video(args, note=False)
    if frames.shape[2] != 1:
        why, name = pipe.continuation_refusal, type(pipe).__name__
        raise InvalidInputError(f"--init-video: {name} cannot continue a video ({why}), and {args.init_video} gives "
                                f"{frames.shape[2]} frames; pass an image or a one-frame video (the stream's first "
                                "frame), or use a masked, flow or autoregressive pipeline to continue a video")
    return ((frames[0, :, 0] + 1) / 2).clamp(0, 1)

"""What ``vidgen serve`` does for one request, without Gradio: check the page's inputs against the app's limits,
run the pipeline (one call, or chunk by chunk for a story or long video) and write the MP4 into the app's own
temporary folder. Every bad input is an :class:`~vidgen.errors.InvalidInputError` with a message meant for the page.
"""
from __future__ import annotations

import math
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from vidgen.cli.generate_inputs import story_schedule
from vidgen.errors import InvalidInputError

MODES = ("prompt", "story")
#: the page's defaults
DEFAULT_FRAMES, DEFAULT_SIZE, DEFAULT_FRAMES_PER_PROMPT, FPS = 17, 64, 32, 8.0


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (``vidgen serve --max-frames ...``); larger values are refused with a message
    on the page. ``keep_videos``: MP4s kept in the app's folder (older ones are deleted)."""

    max_frames: int = 256
    max_size: int = 128
    max_steps: int = 100
    max_prompt_chars: int = 300
    max_story_prompts: int = 16
    keep_videos: int = 20

    def __post_init__(self):
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class Result:
    path: Path
    seed: int
    num_frames: int
    height: int
    width: int
    seconds: float

    def describe(self, pipeline: str) -> str:
        return (f"{pipeline}: {self.num_frames} frames of {self.height}x{self.width} in {self.seconds:.1f} s, "
                f"seed {self.seed}")


def _missing(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or \
        (isinstance(value, float) and math.isnan(value))


def whole_number(name: str, value, default: Optional[int] = None, low: int = 1, high: Optional[int] = None,
                 flag: Optional[str] = None) -> Optional[int]:
    """A page field as an int: empty (None, '', NaN) is ``default``; text and integral floats are read; anything
    else, or a value outside ``[low, high]``, is an InvalidInputError naming the field (and the ``vidgen serve``
    option that sets ``high``)."""
    if _missing(value):
        return default
    number = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                as_float = math.nan
            number = int(as_float) if math.isfinite(as_float) and as_float.is_integer() else None
    if number is None:
        raise InvalidInputError(f"{name} must be a whole number, got {value!r}")
    if number < low:
        raise InvalidInputError(f"{name} must be >= {low}, got {number}")
    if high is not None and number > high:
        option = f" (vidgen serve {flag})" if flag else ""
        raise InvalidInputError(f"{name}: {number} is above this app's limit of {high}{option}")
    return number


def parse_seed(value) -> int:
    """The seed field: empty is a random seed; otherwise a whole number in [0, 2**63)."""
    if _missing(value):
        return random.randrange(2**31)
    try:
        return whole_number("seed", value, low=0, high=2**63 - 1)
    except InvalidInputError:
        raise InvalidInputError(f"seed must be a whole number in [0, 2**63), or empty for a random one; got "
                                f"{value!r}") from None


def parse_guidance(value) -> Optional[float]:
    if _missing(value):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise InvalidInputError(f"guidance must be a number >= 0, or empty for the pipeline's default; got {value!r}")
    return number


def check_text(name: str, text, limit: int, required: bool = True) -> Optional[str]:
    if text is not None and not isinstance(text, str):
        raise InvalidInputError(f"{name} must be text, got {type(text).__name__}")
    text = (text or "").strip()
    if not text:
        if required:
            raise InvalidInputError(f"{name} is empty: type what the video should show")
        return None
    if len(text) > limit:
        raise InvalidInputError(f"{name} has {len(text)} characters, above this app's limit of {limit} "
                                "(vidgen serve --max-prompt-chars)")
    return text


class Studio:
    """The loaded pipelines (name -> pipeline), the limits and the app's own temporary folder, where every MP4 is
    written (the last ``limits.keep_videos`` are kept; :meth:`close` removes the folder). ``threads``: torch's CPU
    threads, set in the thread that generates (Gradio runs requests in worker threads). ``frames`` / ``size``: what
    an empty field means (and the page's first values), within the limits."""

    def __init__(self, pipelines: dict, limits: Limits = Limits(), threads: Optional[int] = None, fps: float = FPS,
                 frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE):
        if not pipelines:
            raise InvalidInputError("pipelines: none to serve; give at least one name or folder (vidgen serve "
                                    "--pipeline flow, or Studio({\"flow\": load_pipeline(...)}))")
        self.pipelines, self.limits, self.threads, self.fps = dict(pipelines), limits, threads, fps
        self.default_frames, self.default_size = min(frames, limits.max_frames), min(size, limits.max_size)
        self.workdir = Path(tempfile.mkdtemp(prefix="vidgen-serve-")).resolve()
        self._count = 0
        self._lock = threading.Lock()  # the queue runs one request at a time; this keeps it so if it is bypassed

    # ------------------------------------------------------------------ pipelines
    def is_autoregressive(self, name: str) -> bool:
        from vidgen.pipelines import AutoregressiveVideoPipeline
        return isinstance(self.pipelines.get(name), AutoregressiveVideoPipeline)

    def defaults(self, name: str) -> dict:
        """The sampling settings a request that leaves them empty gets (the folder's ``sampling_config.json``)."""
        pipe = self.pipelines[name]
        return pipe.sampling_config.to_dict()

    def describe(self, name: str) -> str:
        if name not in self.pipelines:
            return ""
        pipe, settings = self.pipelines[name], self.defaults(name)
        shown = {k: settings[k] for k in ("num_inference_steps", "guidance_scale") if k in settings}
        text = ", ".join(f"{k} {v}" for k, v in shown.items())
        steps = " (one step per token: no steps setting)" if self.is_autoregressive(name) else ""
        return f"**{name}**: {type(pipe).__name__}, {pipe.precision}; defaults: {text}{steps}"

    # ------------------------------------------------------------------ one request
    def generate(self, pipeline, mode="prompt", prompt=None, story=None, frames_per_prompt=None, negative_prompt=None,
                 seed=None, num_frames=None, height=None, width=None, steps=None, guidance=None,
                 progress: Optional[Callable[[float, str], None]] = None) -> Result:
        """Check every input, then make the video; ``progress(fraction, text)`` is called as it goes."""
        request = self.check(pipeline, mode, prompt, story, frames_per_prompt, negative_prompt, seed, num_frames,
                             height, width, steps, guidance)
        with self._lock:
            import torch
            threads = torch.get_num_threads()  # a request runs on self.threads and leaves the process as it was
            try:
                if self.threads is not None:
                    torch.set_num_threads(self.threads)
                return self._run(request, progress or (lambda fraction, text: None))
            finally:
                torch.set_num_threads(threads)

    def check(self, pipeline, mode, prompt, story, frames_per_prompt, negative_prompt, seed, num_frames, height,
              width, steps, guidance) -> dict:
        lim = self.limits
        if not isinstance(pipeline, str) or pipeline not in self.pipelines:
            raise InvalidInputError(f"unknown pipeline {pipeline!r}; this app serves: {', '.join(self.pipelines)}")
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        request = dict(pipeline=pipeline, seed=parse_seed(seed),
                       negative_prompt=check_text("negative prompt", negative_prompt, lim.max_prompt_chars, False),
                       height=whole_number("height", height, self.default_size, high=lim.max_size, flag="--max-size"),
                       width=whole_number("width", width, self.default_size, high=lim.max_size, flag="--max-size"),
                       guidance=parse_guidance(guidance), steps=None)
        if not self.is_autoregressive(pipeline):  # autoregressive sampling takes one step per token: steps ignored
            request["steps"] = whole_number("steps", steps, None, high=lim.max_steps, flag="--max-steps")
        if mode == "prompt":
            request["prompt"] = check_text("prompt", prompt, lim.max_prompt_chars)
            request["num_frames"] = whole_number("frames", num_frames, self.default_frames, high=lim.max_frames,
                                                 flag="--max-frames")
        else:
            request["prompt"], request["num_frames"] = self._story(story, frames_per_prompt)
        return request

    def _story(self, story, frames_per_prompt) -> tuple[dict, int]:
        """The story field (prompts separated by ';') as ``{frame_index: prompt}`` and its frame count."""
        lim = self.limits
        if story is not None and not isinstance(story, str):
            raise InvalidInputError(f"story must be text, got {type(story).__name__}")
        text = (story or "").strip().rstrip(";").strip()
        if not text:
            raise InvalidInputError("story is empty: type prompts separated by ';'")
        if len(text) > lim.max_story_prompts * (lim.max_prompt_chars + 2):
            raise InvalidInputError(f"story has {len(text)} characters: too long for this app")
        if Path(text).suffix.lower() in (".json", ".yaml", ".yml"):  # story_schedule would read a file of that name
            raise InvalidInputError("story: type prompts separated by ';' (the app reads no files)")
        fpp = whole_number("frames per prompt", frames_per_prompt, min(DEFAULT_FRAMES_PER_PROMPT, lim.max_frames),
                           high=lim.max_frames, flag="--max-frames")
        try:
            schedule = story_schedule(text, fpp)
        except InvalidInputError as err:
            raise InvalidInputError(str(err).replace("--story", "story", 1)) from None
        if len(schedule) > lim.max_story_prompts:
            raise InvalidInputError(f"story has {len(schedule)} prompts, above this app's limit of "
                                    f"{lim.max_story_prompts}")
        for frame, prompt in schedule.items():
            check_text(f"story prompt at frame {frame}", prompt, lim.max_prompt_chars)
        num_frames = max(schedule) + fpp
        if num_frames > lim.max_frames:
            raise InvalidInputError(f"story: {len(schedule)} prompts x {fpp} frames = {num_frames} frames, above this "
                                    f"app's limit of {lim.max_frames} (vidgen serve --max-frames)")
        return {frame: prompt.strip() for frame, prompt in schedule.items()}, num_frames

    def _run(self, r: dict, progress: Callable[[float, str], None]) -> Result:
        import torch

        from vidgen.io import VideoWriter

        pipe = self.pipelines[r["pipeline"]]
        settings = {}
        if r["steps"] is not None:
            settings["num_inference_steps"] = r["steps"]
        if r["guidance"] is not None:
            settings["guidance_scale"] = r["guidance"]
        n, h, w = r["num_frames"], r["height"], r["width"]
        common = dict(num_frames=n, height=h, width=w, negative_prompt=r["negative_prompt"], output_type="pt",
                      generator=torch.Generator().manual_seed(r["seed"]), **settings)
        chunked = pipe.is_story(r["prompt"], r["negative_prompt"], n, h, w)
        self._count += 1
        path = self.workdir / f"{self._count:05d}-{r['pipeline']}-seed{r['seed']}.mp4"
        start, done = time.perf_counter(), 0
        progress(0.0, "starting")
        with VideoWriter(path, fps=self.fps) as writer:
            if chunked:  # chunk by chunk (a story, or more frames than one window): progress in frames
                for part in pipe.stream(r["prompt"], **common):
                    writer.write(part[0].permute(1, 0, 2, 3) * 2 - 1)  # (3, n, H, W) in [-1, 1]
                    done += part.shape[1]
                    progress(done / n, f"frame {done} of {n}")
            else:  # one call: progress in sampling steps (latent frames for the autoregressive pipeline)
                def on_step(p, i, t, tensors):
                    progress((i + 1) / max(p.num_timesteps or 1, 1), f"step {i + 1} of {p.num_timesteps}")
                    return {}

                frames = pipe(r["prompt"], callback_on_step_end=on_step, **common).frames  # (1, T, 3, H, W)
                writer.write(frames[0].permute(1, 0, 2, 3) * 2 - 1)
                done = frames.shape[1]
            if done != n:  # never hand out a video of another length than asked (the writer drops the file)
                raise InvalidInputError(f"the pipeline gave {done} frames, {n} asked")
        self._prune()
        return Result(path, r["seed"], n, h, w, time.perf_counter() - start)

    def _prune(self) -> None:
        """Keep the newest ``limits.keep_videos`` MP4s of the app's folder."""
        videos = sorted(self.workdir.glob("*.mp4"), key=lambda p: int(p.name.split("-")[0]))  # by the running count
        for old in videos[:-self.limits.keep_videos]:
            old.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the app's folder and every video in it."""
        shutil.rmtree(self.workdir, ignore_errors=True)

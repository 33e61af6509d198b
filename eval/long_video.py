"""Long videos and stories, measured over time, for each shipped pipeline (issue #36).

One story of ``--segments`` prompts, ``--frames-per-segment`` frames each, cycling colour and motion over seen pairs
(one shape and background per story), is streamed through ``pipe.stream`` exactly as ``vidgen generate --story``
writes it (:class:`vidgen.io.VideoWriter`). Each run happens in a fresh process, so its peak RSS is its own:

* memory and speed: the story cut to ``--lengths`` frames (e.g. 100, 500, 1025): peak RSS and seconds per output
  frame at each length, the same work at every length (every segment scored as it is made; FVD, which loads I3D, runs
  after the peak is read) (target: the largest peak within 1.15x of the smallest);
* frames held: at ``SCANS`` evenly spaced points of each story, as a chunk reaches the video file, the frames of
  pixels alive in the process (:func:`frames_held`: every tensor of frames the garbage collector can reach, counted
  once per storage) (target: the most held at the longest length within 1.15x of the shortest length's). Peak RSS
  alone cannot tell streaming from buffering at 64x64: 1025 frames are 12-50 MB beside a ~1 GB process, while a
  buffered story holds every frame it made. The scans' time is left out of the seconds;
* quality over time (the longest run): per segment, the attribute scorer on the segment's last 17 frames (colour,
  motion, colour+motion against the segment's prompt), the mean absolute frame-to-frame change (flicker), and the
  object's colour and size against a real clip of the same prompt rendered by ``ShapesDataset``'s renderer (drift);
  FVD of the first and last third of the segments' clips against real clips of the same prompts, with its noise floor
  (a handful of clips per third: FVD here is dominated by that floor and shown only beside it).

Target: adherence over the last third of the segments within 5 points of the first third.

    python eval/long_video.py                                   # -> docs/results/long_video.json, docs/long_video.png
    python eval/long_video.py --pipelines masked --lengths 100 300 --segments 8    # a quick look
    python eval/long_video.py --memory-only       # -> docs/results/long_video_frames_held.json (memory, frames held)
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

from vidgen.demo.report import percent  # noqa: E402
from vidgen.demo.story import STORY_BACKGROUND, STORY_SHAPE  # noqa: E402
from vidgen.pipelines.registry import shipped_folder  # noqa: E402

SCANS = 12  # frames-held readings per story


def frames_held(size: int) -> int:
    """Frames of ``size`` x ``size`` pixels alive in this process now: every tensor the garbage collector tracks whose
    last two axes are (size, size) with an axis of 3 channels before them, counted once per storage, in frames of
    3 x size x size values (decoder features, with more channels, are not frames)."""
    storages, values = set(), 0
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance on a dead weak proxy in gc's list raises ReferenceError
        if issubclass(type(obj), torch.Tensor) and obj.dim() >= 3 and tuple(obj.shape[-2:]) == (size, size) \
                and 3 in obj.shape[:-2] and obj.device.type == "cpu":
            try:
                storage = obj.untyped_storage()
                pointer = storage.data_ptr()
            except RuntimeError:  # no data: a fake / functional tensor that torch.compile's tracing left behind
                continue
            if pointer not in storages:
                storages.add(pointer)
                values += storage.nbytes() // obj.element_size()
    return values // (3 * size * size)


class FrameCounter:
    """``on_frames`` for :func:`~vidgen.demo.story.run_story`: passes each chunk on to ``write`` and, whenever the
    frames written pass the next of ``scans`` evenly spaced points of ``length``, reads :func:`frames_held`, less the
    frames already alive before the story (whatever else the process holds, e.g. another test's data)."""

    def __init__(self, write, length: int, size: int, scans: int = SCANS):
        self.write, self.size, self.written, self.readings, self.seconds = write, size, 0, [], 0.0
        self.points = [length * (i + 1) // (scans + 1) for i in range(scans)]
        self.baseline = frames_held(size)

    def __call__(self, chunk: torch.Tensor) -> None:
        self.write(chunk)
        self.written += chunk.shape[1]
        if self.points and self.written >= self.points[0]:
            start = time.perf_counter()
            self.readings.append([self.written, frames_held(self.size) - self.baseline])
            self.seconds += time.perf_counter() - start
            while self.points and self.written >= self.points[0]:
                self.points.pop(0)


def child(args) -> dict:
    """One streamed story in this process: seconds, peak RSS and (``--score``) per-segment measurements."""
    from vidgen.demo.story import run_story, story_prompts
    from vidgen.io import VideoWriter
    from vidgen.metrics.adherence import AttributeScorer
    from vidgen.pipelines import load_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_pipeline(shipped_folder(args.pipelines[0], args.pretrained), dtype=args.precision)
    pipe.set_progress_bar_config(disable=True)
    segments, start = [], time.perf_counter()
    clips = Path(args.out_dir) / f"{args.pipelines[0]}_{args.length}_clips"  # the scored clips wait on disk for FVD,
    clips.mkdir(parents=True, exist_ok=True)  # so memory holds one segment whatever the length
    with VideoWriter(Path(args.out_dir) / f"{args.pipelines[0]}_{args.length}.mp4", fps=8) as writer:
        counter = FrameCounter(writer.write, args.length, args.size)
        for segment in run_story(pipe, story_prompts(args.segments), args.frames_per_segment, args.length, args.seed,
                                 args.size, on_frames=counter, scorer=AttributeScorer()):
            torch.save({"clip": segment.clip[:, :16].clone(), "real": segment.real[:, :16].clone()},
                       clips / f"{segment.index:04d}.pt")
            segment.clip = segment.real = None
            segments.append(segment)
    # every length does the same work (segments scored as they come, one held at a time); FVD comes after the peak
    seconds = time.perf_counter() - start - counter.seconds
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    out = {"pipeline": args.pipelines[0], "frames": args.length, "seconds": seconds,
           "seconds_per_frame": seconds / args.length, "peak_rss_mib": peak, "precision": pipe.precision,
           "frames_held_max": max(n for _, n in counter.readings), "frames_held": counter.readings,
           "frames_held_scan_seconds": counter.seconds,
           "context_frames": getattr(pipe.sampling_config, "context_frames", None),  # none: a KV cache instead
           "window_latent_frames": getattr(pipe, "window", None)}
    if args.score:
        out["segments"] = [s.to_dict() for s in segments]
        saved = [torch.load(path, weights_only=True) for path in sorted(clips.glob("*.pt"))]
        out["fvd"] = fvd_thirds([c["clip"] for c in saved], [c["real"] for c in saved])
    return out


def fvd_thirds(clips: list, real: list) -> dict:
    """FVD of the first and the last third of the segments' clips against the real clips of the same prompts."""
    from vidgen.metrics.fvd import FrechetVideoDistance
    n = len(clips) // 3
    if n < 2:
        return {"skipped": f"{len(clips)} segments: too few for FVD of thirds"}
    out = {}
    metric = FrechetVideoDistance()
    for name, rows in (("first_third", slice(0, n)), ("last_third", slice(len(clips) - n, len(clips)))):
        metric.reset()
        metric.update(torch.stack(real[rows]), real=True)
        metric.update(torch.stack(clips[rows]), real=False)
        result = metric.compute()
        out[name] = {"value": result["value"], "clips": n, "noise_floor": result.get("noise_floor")}
    return out


def summarize(runs: list[dict]) -> dict:
    """Per pipeline: memory ratio, seconds per frame by length, adherence by thirds of the segments."""
    out = {}
    for name in dict.fromkeys(r["pipeline"] for r in runs):
        mine = sorted((r for r in runs if r["pipeline"] == name), key=lambda r: r["frames"])
        peaks = [r["peak_rss_mib"] for r in mine]
        entry = {"lengths": [r["frames"] for r in mine], "peak_rss_mib": peaks,
                 "seconds_per_frame": [r["seconds_per_frame"] for r in mine],
                 "rss_ratio_largest_to_smallest": max(peaks) / min(peaks)}
        if all("frames_held_max" in r for r in mine):
            held = [r["frames_held_max"] for r in mine]
            entry.update(frames_held_max=held, frames_held_longest_to_shortest=held[-1] / max(1, held[0]))
        scored = next((r for r in reversed(mine) if r.get("segments")), None)
        if scored:
            segs = scored["segments"]
            third = max(1, len(segs) // 3)

            def rate(rows):
                return sum(s["color_motion"] for s in rows) / len(rows)
            entry.update({"segments": len(segs), "first_third_color_motion": rate(segs[:third]),
                          "last_third_color_motion": rate(segs[-third:]), "color_motion": rate(segs),
                          "fvd": scored["fvd"]})
            entry["adherence_drop_points"] = 100 * (entry["first_third_color_motion"] -
                                                    entry["last_third_color_motion"])
        out[name] = entry
    return out


def readme_table(results: dict) -> str:
    """The "Long videos and stories" table (``<!-- table:long_video -->``) from ``docs/results/long_video.json``."""
    story = results["story"]
    counted = all("frames_held_max" in e for e in results["summary"].values())
    lines = ["| pipeline | frames | peak RSS (MiB) | largest / smallest | " + ("frames held, most | " if counted else "")
             + "ms per frame | colour+motion per segment: all / first third / last third | FVD first / last third "
             "(floor) |", "|---" * (8 if counted else 7) + "|"]
    for name, e in results["summary"].items():
        fvd = e.get("fvd", {})
        if "first_third" in fvd:
            a, b = fvd["first_third"], fvd["last_third"]
            floor = a.get("noise_floor") or {}
            fvd_text = f"{a['value']:.0f} / {b['value']:.0f}" + (
                f" ({floor['estimate']:.0f})" if isinstance(floor, dict) and "estimate" in floor else "")
        else:
            fvd_text = "–"
        lengths = " / ".join(str(n) for n in e["lengths"])
        peaks = " / ".join(f"{p:.0f}" for p in e["peak_rss_mib"])
        speed = " / ".join(f"{1000 * x:.0f}" for x in e["seconds_per_frame"])
        adherence = (f"{percent(e['color_motion'])} / {percent(e['first_third_color_motion'])} / "
                     f"{percent(e['last_third_color_motion'])}") if "color_motion" in e else "–"
        held = " / ".join(str(n) for n in e["frames_held_max"]) + " | " if counted else ""
        lines.append(f"| {name} | {lengths} | {peaks} | {e['rss_ratio_largest_to_smallest']:.2f}x | {held}{speed} | "
                     f"{adherence} | {fvd_text} |")
    lines += ["", f"A story of {story['segments']} prompts ({story['frames_per_segment']} frames each, a "
              f"{story['shape']} on {story['background']}, cycling colour and motion over seen pairs) at "
              f"{story['size']}x{story['size']}, streamed to an MP4 in a fresh process per length, "
              f"{results['threads']} threads, load average {results['loadavg_start'][0]:.1f} at start"
              + (f" on {results['cpu']}" if "cpu" in results else "") + f", {results['date'][:10]}; `{results['command']}`."
              + (f" Frames held: the most frames of pixels alive in the process at {SCANS} points of each story "
                 "(a story kept in memory would hold every frame made so far)." if counted else "")]
    return "\n".join(lines)


def segment_notes(results: dict) -> str:
    """Per pipeline, of the longest story's segments: how many show their prompt's colour, its motion, both, and none
    an object (``<!-- table:long_video_notes -->``)."""
    lines = []
    for run in results["runs"]:
        segs = run.get("segments")
        if not segs:
            continue
        n = len(segs)
        colour = sum(s["detected"]["color"] == s["expected"]["color"] for s in segs)
        motion = sum(s["detected"]["motion"] == s["expected"]["motion"] for s in segs)
        empty = sum(not s["detected"].get("found", True) for s in segs)
        lines.append(f"- {run['pipeline']} ({run.get('precision', 'fp32')}, context {run.get('context_frames', '–')}): "
                     f"colour in {colour} of {n} segments, motion in {motion}, both in "
                     f"{sum(s['color_motion'] for s in segs)}; {empty} hold{'s' if empty == 1 else ''} no object.")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    """Adherence (rolling over 5 segments), flicker and object size ratio by segment, one line per pipeline."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for run in runs:
        segs = run.get("segments")
        if not segs:
            continue
        ok = torch.tensor([float(s["color_motion"]) for s in segs])
        rolling = torch.nn.functional.avg_pool1d(ok[None, None], 5, 1, 2, count_include_pad=False)[0, 0]
        x = list(range(len(segs)))
        axes[0].plot(x, rolling, label=run["pipeline"])
        axes[1].plot(x, [s["flicker"] for s in segs], label=run["pipeline"])
        axes[2].plot(x, [s["drift"]["area_ratio"] if s["drift"] else float("nan") for s in segs], label=run["pipeline"])
    for ax, title in zip(axes, ("colour+motion (5-segment mean)", "mean |frame change|", "object area / real")):
        ax.set_title(title)
        ax.set_xlabel("segment")
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", nargs="+", default=["masked", "flow", "autoregressive"])
    parser.add_argument("--pretrained", default=str(ROOT / "pretrained"))
    parser.add_argument("--lengths", nargs="+", type=int, default=[100, 500, 1025])
    parser.add_argument("--segments", type=int, default=32)
    parser.add_argument("--frames-per-segment", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", default=None, help="results file (default docs/results/long_video.json)")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "long_video.png"))
    parser.add_argument("--out-dir", default=str(ROOT / "outputs" / "long_video"))
    parser.add_argument("--memory-only", action="store_true",
                        help="memory and frames held only (no per-segment results, FVD or plot); default --out "
                             "docs/results/long_video_frames_held.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--score", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    out = args.out or str(ROOT / "docs" / "results" / ("long_video_frames_held.json" if args.memory_only
                                                         else "long_video.json"))
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.segments * args.frames_per_segment + 1 < max(args.lengths):  # the last segment may take one frame more
        parser.error("--segments x --frames-per-segment must cover the longest of --lengths")
    runs = []
    for name in args.pipelines:
        for length in sorted(args.lengths):
            command = [sys.executable, __file__, "--child", "--pipelines", name, "--length", str(length),
                       *[f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                         ("pretrained", "segments", "frames_per_segment", "size", "seed", "threads", "precision",
                          "out_dir")]]
            if length == max(args.lengths) and not args.memory_only:
                command.append("--score")
            result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if result.returncode != 0:
                raise SystemExit(f"{name} at {length} frames failed:\n{result.stderr[-3000:]}")
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            print(f"{name:15s} {length:5d} frames: {r['seconds_per_frame'] * 1000:6.1f} ms/frame, peak RSS "
                  f"{r['peak_rss_mib']:.0f} MiB, frames held at most {r['frames_held_max']}", flush=True)
    summary = summarize(runs)
    print(json.dumps(summary, indent=2))
    if not args.memory_only:
        plot(runs, Path(args.plot))
    write_result(out, {"story": {"segments": args.segments, "frames_per_segment": args.frames_per_segment,
                                      "shape": STORY_SHAPE, "background": STORY_BACKGROUND, "size": args.size,
                                      "seed": args.seed},
                            "summary": summary, "runs": runs}, threads=args.threads,
                 weights=[shipped_folder(name, args.pretrained) for name in args.pipelines],
                 precision=", ".join(sorted({r["precision"] for r in runs if r.get("precision")})) or args.precision)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

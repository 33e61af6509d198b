"""Evaluation: how the block-causal stream holds a prompt over a long video, and how its story seams look.

For each causal pipeline folder (``--pipeline NAME=FOLDER``, e.g. two training stages), on tuning prompts
(:func:`vidgen.demo.prompts.tuning_prompts`, seed 1: seen colour x motion pairs, no caption of the evaluation set):

* **drift**: one ``--frames``-frame 64x64 video per prompt at batch 1, the prompt held fixed, consumed chunk by chunk
  from ``pipe.stream``; only the open scored windows' frames and the histograms of the sampled frames are kept, so
  memory stays flat. ``--segments`` windows of 17 frames (the scorer's clip length) at evenly spaced starts from
  frame 0 to the end are scored by :class:`~vidgen.metrics.adherence.AttributeScorer` against the prompt: colour,
  motion, colour+motion and shape adherence per window over the prompts, and the first third of the windows against
  the last (the drop in points). The colour-histogram distance (per-channel 16-bin histograms of the RGB frame in
  [0, 1], total variation, mean over channels: 0 = same colours, 1 = disjoint) between frames ``t`` and ``t + d``,
  averaged over up to 64 evenly spaced ``t``, for each frame distance ``d``; the same for real clips of the prompts
  (the shapes renderer) at the distances a real clip covers (see ``real_reference.note`` in the results).
* **story seams**: ``--stories`` two-prompt stories (same shape and background, another colour and motion), the
  second prompt at the chunk boundary nearest the middle of a ``--story-frames``-frame video, made with each
  ``prompt_switch`` mode (``"recache"``: the kept chunks re-encoded under the new prompt; ``"reset"``: a fresh
  cache). The seam jump is the mean absolute pixel change into the switch frame over the median frame-to-frame
  change elsewhere (1 = seamless, large = a cut; also over the median change at the other chunk boundaries), and the
  17 frames after the switch are scored against the second prompt, the 17 before against the first.

    python eval/streaming_quality.py --pipeline stage1=runs/x --pipeline stage2=runs/y
    python eval/streaming_quality.py --pipeline causal=pretrained/shapes-causal --frames 257 --prompts 2  # quick
    # -> docs/results/streaming_quality.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

from vidgen.demo.story import SCORED_FRAMES  # noqa: E402
from vidgen.errors import InvalidInputError  # noqa: E402

DISTANCES = (1, 4, 16, 64, 256, 1024)
HIST_BINS, PAIRS_PER_DISTANCE = 16, 64
MODES = ("recache", "reset")


def window_starts(num_frames: int, segments: int, length: int = SCORED_FRAMES) -> list[int]:
    """Starts of ``segments`` windows of ``length`` frames evenly spaced from frame 0 to the last full window (fewer
    where they would repeat a start)."""
    last = max(num_frames - length, 0)
    return sorted({round(i * last / max(segments - 1, 1)) for i in range(segments)})


def pair_starts(num_frames: int, d: int, most: int = PAIRS_PER_DISTANCE) -> list[int]:
    """Up to ``most`` evenly spaced frames ``t`` with ``t + d`` inside the video."""
    n = num_frames - d
    return sorted({round(i * (n - 1) / max(min(most, n) - 1, 1)) for i in range(min(most, n))}) if n > 0 else []


def needed_frames(num_frames: int, distances) -> set[int]:
    """The frames whose histograms the distance curve reads."""
    return {t + e for d in distances for t in pair_starts(num_frames, d) for e in (0, d)}


def histograms(frames: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 3, bins) per-channel histograms, each summing to 1."""
    index = (frames.float().clamp(0, 1) * bins).long().clamp_max(bins - 1).flatten(2)
    counts = torch.zeros(*index.shape[:2], bins).scatter_add_(2, index, torch.ones(index.shape))
    return counts / index.shape[2]


def histogram_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation between histograms (..., 3, bins), mean over channels: 0 = same colours, 1 = disjoint."""
    return (a - b).abs().sum(-1).mul(0.5).mean(-1)


def distance_curve(hists: dict, num_frames: int, distances) -> dict:
    """``{d: mean histogram distance over the pairs (t, t + d)}`` from per-frame histograms ``{t: (3, bins)}``."""
    curve = {}
    for d in distances:
        ts = pair_starts(num_frames, d)
        if ts:
            curve[d] = float(torch.stack([histogram_distance(hists[t], hists[t + d]) for t in ts]).mean())
    return curve


def mean_curves(curves: list[dict]) -> dict:
    return {d: statistics.fmean(c[d] for c in curves) for d in curves[0]}


def seam_ratio(video: torch.Tensor, switch: int, among=None) -> float:
    """Mean absolute change from frame ``switch - 1`` to ``switch`` of ``video`` (T, 3, H, W) over the median change
    into the frames ``among`` (default: every other frame): 1 = seamless, large = a cut."""
    change = (video[1:] - video[:-1]).abs().flatten(1).mean(1)  # change[i]: frame i -> i + 1
    into = [t for t in (among if among is not None else range(1, len(video))) if t != switch and 0 < t < len(video)]
    return float(change[switch - 1] / change[[t - 1 for t in into]].median().clamp_min(1e-8))


def as_clip(frames: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) in [0, 1] -> the scorer's (3, T, H, W) in [-1, 1]."""
    return frames.permute(1, 0, 2, 3) * 2 - 1


def drift_video(pipe, prompt, num_frames: int, starts: list[int], keep: set, scorer, size: int):
    """Stream one video of ``prompt``: the detections of the windows at ``starts`` (each scored as soon as its last
    frame is made) and the histograms of the frames in ``keep``. Holds only the open windows' frames."""
    open_, detected, hists, made = {}, {}, {}, 0
    for part in pipe.stream(prompt.caption, num_frames=num_frames, height=size, width=size, output_type="pt",
                            generator=torch.Generator().manual_seed(prompt.seed)):
        frames, end = part[0], made + part.shape[1]  # (n, 3, H, W) in [0, 1]
        hists.update({t: histograms(frames[t - made:t - made + 1])[0] for t in range(made, end) if t in keep})
        for w, s in enumerate(starts):
            stop = min(s + SCORED_FRAMES, num_frames)
            if max(s, made) < min(stop, end):
                open_.setdefault(w, []).append(frames[max(s, made) - made:min(stop, end) - made].clone())
            if w in open_ and end >= stop:
                detected[w] = scorer(as_clip(torch.cat(open_.pop(w))))
        made = end
    if made != num_frames or len(detected) != len(starts):
        raise RuntimeError(f"{type(pipe).__name__} streamed {made} frames, {num_frames} asked")
    return [detected[w] for w in range(len(starts))], hists


def real_reference(prompts, size: int, distances) -> dict:
    """The distance curve of real clips of ``prompts`` (the shapes renderer, the scorer's clip length)."""
    from vidgen.demo.prompts import real_clip
    curves = []
    for p in prompts:
        frames = (real_clip(p, SCORED_FRAMES, size).permute(1, 0, 2, 3) + 1) / 2
        curves.append(distance_curve(dict(enumerate(histograms(frames))), SCORED_FRAMES, distances))
    return {"clip_frames": SCORED_FRAMES, "histogram_distance": mean_curves(curves),
            "note": "render_shape_video renders any length but spreads one clip's motion over all of it (a translation "
                    "crosses under half the frame whatever the length), so a long render is a slowed-down clip, not a "
                    f"long real video: the reference is real {SCORED_FRAMES}-frame clips at the training pace, at the "
                    f"distances they cover (d < {SCORED_FRAMES})"}


def drift(pipe, prompts, args, scorer, bar) -> dict:
    from vidgen.metrics.adherence import adherence
    starts, keep = window_starts(args.frames, args.segments), needed_frames(args.frames, DISTANCES)
    per_window, curves, videos = [[] for _ in starts], [], []
    for p in prompts:
        detected, hists = drift_video(pipe, p, args.frames, starts, keep, scorer, args.size)
        for w, d in enumerate(detected):
            per_window[w].append(d)
        curves.append(distance_curve(hists, args.frames, DISTANCES))
        videos.append({"prompt": p.caption, "seed": p.seed, "detected": [d.to_dict() for d in detected]})
        bar.update(1)
    expected, k = [p.expected() for p in prompts], max(1, round(len(starts) / 3))
    first = adherence([d for ds in per_window[:k] for d in ds], expected * k)
    last = adherence([d for ds in per_window[-k:] for d in ds], expected * k)
    return {"windows": [{"start": s, **adherence(ds, expected)} for s, ds in zip(starts, per_window)],
            "first_third": first, "last_third": last, "thirds_windows": k,
            "drop_points": 100 * (first["color_motion"] - last["color_motion"]),
            "histogram_distance": mean_curves(curves), "videos": videos}


def story_pairs(pool, n: int) -> list[tuple]:
    """``n`` (first, second) pairs from ``pool`` in order, each prompt used once: the same shape and background,
    another colour and another motion."""
    used, pairs = set(), []
    for i, a in enumerate(pool):
        match = next((j for j in range(i + 1, len(pool)) if i not in used and j not in used and
                      (pool[j].attributes.shape, pool[j].attributes.background) ==
                      (a.attributes.shape, a.attributes.background) and pool[j].attributes.color != a.attributes.color
                      and pool[j].attributes.motion != a.attributes.motion), None)
        if match is not None and len(pairs) < n:
            used |= {i, match}
            pairs.append((a, pool[match]))
    if len(pairs) < n:
        raise InvalidInputError(f"--stories {n}: only {len(pairs)} prompt pairs of one shape and background found")
    return pairs


def switch_frame(pipe, num_frames: int) -> int:
    """The chunk boundary (a chunk's first output frame) nearest the middle of a ``num_frames``-frame video."""
    from vidgen.pipelines.story import first_output_frame
    tc, c = pipe.video_tokenizer.codec_config.temporal_compression, pipe.transformer.config.chunk_frames
    bounds = [f for f in (first_output_frame(k * c, tc) for k in range(1, num_frames)) if f < num_frames]
    if not bounds:
        raise InvalidInputError(f"--story-frames {num_frames}: no chunk boundary inside the video")
    return min(bounds, key=lambda f: abs(f - num_frames // 2))


def story_video(pipe, first, second, num_frames: int, switch: int, mode: str, size: int):
    """The story's frames (T, 3, H, W) in [0, 1] and the first frame of each streamed chunk."""
    parts, chunk_starts, made = [], [], 0
    for part in pipe.stream({0: first.caption, switch: second.caption}, num_frames=num_frames, height=size,
                            width=size, output_type="pt", prompt_switch=mode,
                            generator=torch.Generator().manual_seed(first.seed)):
        parts.append(part[0])
        chunk_starts.append(made)
        made += part.shape[1]
    return torch.cat(parts), chunk_starts


def seams(pipe, pairs, args, scorer, bar) -> dict:
    from vidgen.metrics.adherence import adherence
    switch, out = switch_frame(pipe, args.story_frames), {}
    for mode in MODES:
        rows, before, after = [], [], []
        for a, b in pairs:
            video, chunk_starts = story_video(pipe, a, b, args.story_frames, switch, mode, args.size)
            others = [s for s in chunk_starts if s not in (0, switch)]
            before.append(scorer(as_clip(video[max(0, switch - SCORED_FRAMES):switch])))
            after.append(scorer(as_clip(video[switch:switch + SCORED_FRAMES])))
            rows.append({"first": a.caption, "second": b.caption, "seed": a.seed,
                         "seam_ratio": seam_ratio(video, switch),
                         "seam_vs_chunk_boundaries": seam_ratio(video, switch, others) if others else None,
                         "before": before[-1].to_dict(), "after": after[-1].to_dict()})
            bar.update(1)
        boundary = [r["seam_vs_chunk_boundaries"] for r in rows if r["seam_vs_chunk_boundaries"] is not None]
        out[mode] = {"seam_ratio": statistics.fmean(r["seam_ratio"] for r in rows),
                     "seam_vs_chunk_boundaries": statistics.fmean(boundary) if boundary else None,
                     "after_switch": adherence(after, [b.expected() for _, b in pairs]),
                     "before_switch": adherence(before, [a.expected() for a, _ in pairs]), "stories": rows}
    return {"switch_frame": switch, "frames": args.story_frames, **out}


def summary(d: dict, s: dict | None) -> dict:
    """The headline numbers: first / last third colour+motion and the drop, the histogram distance at the largest
    frame distance, and per switch mode the seam jump and the adherence after the switch."""
    far = max(d["histogram_distance"], default=None)
    out = {"first_third_color_motion": d["first_third"]["color_motion"],
           "last_third_color_motion": d["last_third"]["color_motion"], "drop_points": d["drop_points"],
           "histogram_distance_d": far, "histogram_distance": d["histogram_distance"].get(far)}
    for m in MODES if s else ():
        out[f"seam_ratio_{m}"] = s[m]["seam_ratio"]
        out[f"after_switch_color_motion_{m}"] = s[m]["after_switch"]["color_motion"]
    return out


def readme_table(results: dict) -> str:
    """The docs' table (``eval/readme_tables.py``, marker ``streaming_quality``): per pipeline, drift over the long
    video and the seams of both switch modes; then the real clips' histogram distances."""
    c = results["config"]
    far = max(int(d) for d in c["distances"])
    lines = [f"| pipeline | colour+motion, first / last third of {c['frames']} frames | drop (points) | colour "
             f"histogram distance at 1 / {far} frames apart | seam jump, re-cache / reset | colour+motion after the "
             "switch, re-cache / reset |", "|---|---|---|---|---|---|"]
    for name, row in results["pipelines"].items():
        s, h = row["summary"], row["drift"]["histogram_distance"]
        seams = (f"{s['seam_ratio_recache']:.2f} / {s['seam_ratio_reset']:.2f} | "
                 f"{s['after_switch_color_motion_recache']:.0%} / {s['after_switch_color_motion_reset']:.0%}"
                 if "seam_ratio_recache" in s else "– | –")
        lines.append(f"| {name} | {s['first_third_color_motion']:.0%} / {s['last_third_color_motion']:.0%} | "
                     f"{s['drop_points']:.1f} | {h['1']:.3f} / {h[str(far)]:.3f} | {seams} |")
    real = results["real_reference"]["histogram_distance"]
    lines += ["", f"{len(c['prompts'])} tuning prompts, one {c['frames']}-frame {c['size']}x{c['size']} video each "
              f"(scored in {c['segments']} windows of {c['scored_frames']} frames); {len(c['stories'])} two-prompt "
              f"stories of {c['story_frames']} frames. Seam jump: the pixel change into the switch frame over the "
              "median change between frames (1 = seamless). Real clips' histogram distance: "
              + ", ".join(f"{v:.3f} at {d}" for d, v in real.items()) + f" frames apart. {results['threads']} "
              f"threads, {results['cpu']}, {results['date'][:10]}; `python eval/streaming_quality.py`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", action="append", default=[], metavar="NAME=FOLDER", required=True)
    parser.add_argument("--frames", type=int, default=1025, help="frames of each drift video")
    parser.add_argument("--prompts", type=int, default=4, help="drift videos (tuning prompts)")
    parser.add_argument("--segments", type=int, default=8, help=f"scored {SCORED_FRAMES}-frame windows per video")
    parser.add_argument("--stories", type=int, default=4, help="two-prompt stories, made in each prompt_switch mode")
    parser.add_argument("--story-frames", type=int, default=97)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/results/streaming_quality.json")
    args = parser.parse_args(argv)
    if min(args.frames, args.story_frames) < 2 or min(args.prompts, args.segments, args.size) < 1 or args.stories < 0:
        raise InvalidInputError("--frames / --story-frames must be >= 2, --prompts / --segments / --size >= 1, "
                                "--stories >= 0")
    from vidgen.demo.prompts import tuning_prompts
    from vidgen.metrics.adherence import AttributeScorer
    from vidgen.pipelines import load_pipeline
    torch.set_num_threads(args.threads)
    prompts = tuning_prompts(args.prompts, seed=1)
    pairs = story_pairs(tuning_prompts(max(64, 16 * args.stories), seed=1), args.stories) if args.stories else []
    folders = dict(spec.partition("=")[::2] for spec in args.pipeline)
    scorer, rows = AttributeScorer(), {}
    with tqdm(total=len(folders) * (len(prompts) + len(MODES) * len(pairs)), desc="videos", dynamic_ncols=True) as bar:
        for name, folder in folders.items():
            pipe = load_pipeline(folder, dtype="fp32")
            pipe.set_progress_bar_config(disable=True)
            d = drift(pipe, prompts, args, scorer, bar)
            s = seams(pipe, pairs, args, scorer, bar) if pairs else None
            rows[name] = {"folder": folder, "sampling": pipe.sampling_config.to_dict(), "drift": d, "seams": s,
                          "summary": summary(d, s)}
    result = {"config": {"frames": args.frames, "size": args.size, "batch": 1, "precision": "fp32",
                         "prompts": [p.caption for p in prompts], "prompt_set": "tuning_prompts(n, seed=1)",
                         "segments": args.segments, "window_starts": window_starts(args.frames, args.segments),
                         "scored_frames": SCORED_FRAMES, "distances": [d for d in DISTANCES if d < args.frames],
                         "pairs_per_distance": PAIRS_PER_DISTANCE, "histogram": f"per-channel {HIST_BINS}-bin RGB "
                         "histograms, total variation, mean over channels", "stories": [[a.caption, b.caption]
                                                                                        for a, b in pairs],
                         "story_frames": args.story_frames, "modes": list(MODES)},
              "real_reference": real_reference(prompts, args.size, DISTANCES), "pipelines": rows}
    path = write_result(args.out, result, threads=args.threads)
    for name, row in rows.items():
        print(name, ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in row["summary"].items()))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

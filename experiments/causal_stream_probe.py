"""Why the shipped causal pipeline's long streams and stories go black (issue 85 item 4, first step; no training).

Measures, on the CPU (fp32, 1 thread), with ``pretrained/shapes-causal`` as shipped:

* ``data``: how the training clips end (``ShapesDataset("train", num_frames=17)``, the 8192 clips
  ``configs/shapes-causal/stage1.yaml`` encodes): how much of the shape is inside the frame at each clip's last frame,
  whether any frame of any clip lacks the shape, and, for translations, after how many frames from a clip's first
  frame the shape would be wholly outside if its motion went on (what a stream that keeps the motion must do);
* ``streams``: 200-frame streams, 8 motions x 2 seeds (plus the issue's prompt): per-frame foreground fraction
  (pixels farther than 0.25 from the frame's median colour), the frame the object is last seen, the share of 17-frame
  windows that hold an object, and per chunk what the rolling KV cache holds (the sink chunk's and the window's
  foreground) against what the chunk draws;
* ``interventions`` on a left-moving circle: ``window_chunks`` 1 and 2, no sink (``sink_chunks`` 0, set on the loaded
  model only), and a fresh sink every 16 frames (the same prompt re-given with ``prompt_switch="reset"``);
* ``stories``: the shipped-frames story (red circle / blue square / white star, 49 frames), the same with 32-frame
  segments (97 frames), the issue's ``{0: red right, 49: blue up}`` (97 frames), and a still -> still story whose
  object never leaves, each with ``prompt_switch`` "recache" and "reset": per segment, frames holding an object and
  the share whose colour is the prompt's;
* a check that the code ran gives the shipped frames: the ``causal-200`` case of ``tests/data/shipped_frames``
  (thumbnail within eval/shipped_frames.THUMB_ATOL).

Writes ``experiments/results/causal_stream_probe.json`` and a few contact sheets under
``experiments/results/causal_stream_probe/``.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/causal_stream_probe.py        # ~15 min on 1 thread
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.results import write_result  # noqa: E402  (import first: it reads the start load average)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vidgen.data.shapes import COLORS, MOTIONS, ShapesDataset  # noqa: E402
from vidgen.io.images import contact_sheet  # noqa: E402

FOLDER = ROOT / "pretrained" / "shapes-causal"
OUT = ROOT / "experiments" / "results" / "causal_stream_probe.json"
PNG = ROOT / "experiments" / "results" / "causal_stream_probe"
FG_DIFF = 0.25  # a pixel is foreground when a channel is this far from the frame's median colour ([0, 1] scale)
PRESENT = 0.01  # a frame holds an object when at least this share of its pixels is foreground (a shape is >= 3 %)
WINDOW = 17  # frames: one training clip; the sink + 3 window chunks + the chunk drawn are 5 latent frames = 17
PALETTE = {name: np.array(rgb) for name, rgb in COLORS.items()}
THREADS = 1


def save_image(path: Path, sheet: np.ndarray) -> None:
    """A contact sheet as a 64-colour PNG (the sheets are flat colours: a few tens of KB each)."""
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(sheet)).quantize(64, dither=Image.Dither.NONE).save(path, optimize=True)


# ----------------------------------------------------------------------------------------------------------- metrics
def foreground(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) bool: pixels far from their frame's median colour. ``frames`` (T, H, W, 3) in [0, 1]."""
    med = np.median(frames.reshape(frames.shape[0], -1, 3), axis=1)[:, None, None, :]
    return np.abs(frames - med).max(-1) > FG_DIFF


def frame_colours(frames: np.ndarray, mask: np.ndarray) -> list:
    """Per frame, the palette colour nearest the mean foreground colour (None when no object)."""
    out = []
    for f, m in zip(frames, mask):
        if m.mean() < PRESENT:
            out.append(None)
            continue
        mean = f[m].mean(0)
        out.append(min(PALETTE, key=lambda k: float(((PALETTE[k] - mean) ** 2).sum())))
    return out


def chunk_frames(k: int) -> list[int]:
    """Output frames of latent chunk ``k`` (1 latent frame a chunk, 4x temporal compression)."""
    return [0] if k == 0 else list(range(4 * k - 3, 4 * k + 1))


def video_metrics(frames: np.ndarray, per_frame: bool = True) -> dict:
    mask = foreground(frames)
    fg = mask.mean((1, 2))
    present = fg >= PRESENT
    t = len(frames)
    wins = [present[s:s + WINDOW] for s in range(0, t - WINDOW + 1)]
    last = int(np.nonzero(present)[0].max()) if present.any() else None
    first_absent = int(np.argmin(present)) if not present.all() else None
    xs = np.arange(frames.shape[2]) + 0.5
    cx = [float((m.sum(0) * xs).sum() / m.sum()) if m.sum() else None for m in mask]
    out = {"frames": t, "frames_with_object": int(present.sum()), "share_frames_with_object": round(present.mean(), 4),
           "first_frame_without_object": first_absent, "last_frame_with_object": last,
           "windows17_every_frame_holds_object": round(float(np.mean([w.all() for w in wins])), 4) if wins else None,
           "windows17_some_frame_holds_object": round(float(np.mean([w.any() for w in wins])), 4) if wins else None}
    if per_frame:
        out["fg_per_frame"] = [round(float(v), 4) for v in fg]
        out["centroid_x_per_frame"] = [None if v is None else round(v, 1) for v in cx]
    return out, mask, fg


def cache_view(fg: np.ndarray, window: int = 3, sink: int = 1) -> list:
    """Per chunk i >= 1: the foreground of what its KV cache holds (the sink chunk(s), the ``window`` chunks before it)
    against the chunk's own frames."""
    rows = []
    chunks = 1 + (len(fg) - 1 + 3) // 4
    for i in range(1, chunks):
        win = list(range(max(sink, i - window), i))
        own = [f for f in chunk_frames(i) if f < len(fg)]
        rows.append({"chunk": i, "sink_fg": round(float(np.mean([fg[f] for k in range(min(sink, i))
                                                                  for f in chunk_frames(k)])), 4) if sink else None,
                     "window_fg": round(float(np.mean([fg[f] for k in win for f in chunk_frames(k)])), 4) if win else None,
                     "window_min_fg": round(float(min(fg[f] for k in win for f in chunk_frames(k))), 4) if win else None,
                     "chunk_fg": round(float(np.mean([fg[f] for f in own])), 4)})
    return rows


# -------------------------------------------------------------------------------------------------------------- data
def data_endings(n: int = 8192) -> dict:
    """How the 17-frame training clips end: the shape's visible share (coverage in the frame / its full area, taken at
    the clip's middle frame, which always holds it whole) at the last frame, and for translations the frame (counted
    from the clip's first frame) at which the shape would be wholly outside if its motion continued."""
    ds = ShapesDataset("train", num_frames=17, size=64, num_samples=n, with_coverage=True)
    visible_last, min_visible, any_empty, exit_frame, speeds, per_motion = [], [], 0, [], [], {}
    for i in range(n):
        item = ds[i]
        cov = item["coverage"]  # (T, H, W)
        area = cov.sum((1, 2))
        full = float(area[8])  # the middle frame: centre in [0.35, 0.65] of the frame, radius <= 0.2 -> whole
        any_empty += int((area < 1.0).any())
        if item["motion"] in ("grow", "shrink"):
            continue  # their area changes: the share below is for shapes of constant area
        vis = (area / full).clamp(max=1.0)
        visible_last.append(float(vis[-1]))
        min_visible.append(float(vis.min()))
        per_motion.setdefault(item["motion"], []).append(float(vis[-1]))
        if item["motion"] in ("left", "right", "up", "down"):
            coords = torch.arange(64, dtype=torch.float32) + 0.5
            line = cov.sum(1) if item["motion"] in ("left", "right") else cov.sum(2)  # (T, 64) along the motion
            centre = (line * coords).sum(1) / line.sum(1)
            speed = float((centre[12] - centre[4]).abs() / 8)  # from frames that hold the shape whole: exact
            occupied = (line[8] > 1e-3).nonzero()
            extent = float(occupied.max() - occupied.min() + 1) / 2  # half its extent along the motion
            c8 = float(centre[8])
            to_go = (c8 + extent) if item["motion"] in ("left", "up") else (64 - c8 + extent)
            exit_frame.append(8 + to_go / speed)  # frame (from the clip's first) it is wholly outside, motion kept
            speeds.append(speed)
    vl = np.array(visible_last)
    ef = np.array(exit_frame)
    return {
        "clips": n, "num_frames": 17, "split": "train", "seed": 0,
        "clips_with_a_frame_without_the_shape": any_empty,
        "min_visible_share_any_frame": round(float(np.min(min_visible)), 4),
        "last_frame_visible_share": {"min": round(float(vl.min()), 4), "p05": round(float(np.percentile(vl, 5)), 4),
                                     "median": round(float(np.median(vl)), 4),
                                     "share_of_clips_fully_visible": round(float((vl > 0.99).mean()), 4),
                                     "share_of_clips_under_half_visible": round(float((vl < 0.5).mean()), 4)},
        "last_frame_visible_share_by_motion": {m: round(float(np.mean(v)), 4) for m, v in sorted(per_motion.items())},
        "translations": {"clips": len(ef), "speed_px_per_frame": {"min": round(float(np.min(speeds)), 3),
                                                                   "max": round(float(np.max(speeds)), 3)},
                         "frame_wholly_outside_if_motion_continued": {
                             "min": round(float(ef.min()), 1), "median": round(float(np.median(ef)), 1),
                             "max": round(float(ef.max()), 1), "share_within_24": round(float((ef <= 24).mean()), 4),
                             "share_within_40": round(float((ef <= 40).mean()), 4)}},
    }


def training_sheet() -> np.ndarray:
    """The first clip of each translation in the training data, then the same clips with ``wrap=True``."""
    rows, labels = [], []
    for wrap in (False, True):
        ds = ShapesDataset("train", num_frames=17, size=64, num_samples=8192, wrap=wrap)
        seen = set()
        for i in range(200):
            item = ds[i]
            if item["motion"] in ("left", "right", "up", "down") and item["motion"] not in seen:
                seen.add(item["motion"])
                rows.append(item["video"])
                labels.append(f"train {i}: {item['motion']}" + (" wrap=True" if wrap else ""))
            if len(seen) == 4:
                break
    return contact_sheet(rows, labels, frames_per_row=17)


# ------------------------------------------------------------------------------------------------------------ model
def run(pipe, prompt, num_frames, seed, **settings) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    parts = list(pipe.stream(prompt, num_frames=num_frames, generator=g, **settings))
    return np.concatenate(parts, axis=1)[0].astype(np.float32)  # (T, H, W, 3)


def as_video(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(3, 0, 1, 2) * 2 - 1


def segment_report(frames, mask, schedule: dict, colours_wanted: dict) -> list:
    starts = sorted(schedule)
    cols = frame_colours(frames, mask)
    present = mask.mean((1, 2)) >= PRESENT
    out = []
    for a, b in zip(starts, starts[1:] + [len(frames)]):
        want = colours_wanted[a]
        seg_cols = [c for c in cols[a:b] if c is not None]
        counts = {c: seg_cols.count(c) for c in sorted(set(seg_cols))}
        out.append({"frames": [a, b - 1], "prompt": schedule[a], "frames_with_object": int(present[a:b].sum()),
                    "share_frames_prompt_colour": round(sum(c == want for c in cols[a:b]) / (b - a), 4),
                    "colours_seen": counts})
    return out


def shipped_check(frames: np.ndarray) -> dict:
    from eval.shipped_frames import THUMB_ATOL, load, thumbnail
    records, thumbs = load()
    diff = float(np.abs(thumbnail(frames) - thumbs["causal-200"]).max())
    return {"case": "causal-200", "thumbnail_max_abs_diff": diff, "bound": THUMB_ATOL, "ok": diff <= THUMB_ATOL,
            "recorded_commit": records["causal-200"]["commit"], "recorded_threads": records["causal-200"]["threads"]}


def code_state() -> dict:
    files = ["vidgen/generators/causal_stream.py", "vidgen/generators/causal.py", "vidgen/pipelines/causal.py",
             "vidgen/generators/flow_sampler.py", "vidgen/data/shapes.py"]
    return {f: ("same as HEAD" if subprocess.run(["git", "diff", "--quiet", "HEAD", "--", f], cwd=ROOT).returncode == 0
                else "uncommitted changes") for f in files}


def main() -> None:
    torch.set_num_threads(THREADS)
    t_start = time.time()
    PNG.mkdir(parents=True, exist_ok=True)
    result: dict = {"settings": {"fg_pixel_threshold": FG_DIFF, "object_present_if_fg_share_at_least": PRESENT,
                                 "window_frames": WINDOW, "seeds": [0, 1]}, "code_state": code_state()}

    print("data ...", flush=True)
    result["data"] = data_endings()
    save_image(PNG / "training_clips.png", training_sheet())
    print(result["data"], flush=True)

    from vidgen.pipelines import load_pipeline
    pipe = load_pipeline(FOLDER, dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    model = pipe.transformer
    result["model_chunking"] = dict(zip(("chunk_frames", "window_chunks", "sink_chunks"), model.chunking))
    result["sampling"] = {"num_inference_steps": pipe.sampling_config.num_inference_steps,
                          "guidance_scale": pipe.sampling_config.guidance_scale,
                          "prompt_switch": pipe.sampling_config.prompt_switch}

    # ---- long streams, 8 motions x 2 seeds
    streams, sheet_rows, sheet_labels, cache_rows = {}, [], [], []
    motion_prompts = {m: f"a {c} {s} {phrase} on a black background" for m, c, s, phrase in [
        ("left", "green", "circle", "moving left"), ("right", "red", "square", "moving right"),
        ("up", "blue", "triangle", "moving up"), ("down", "yellow", "hexagon", "moving down"),
        ("grow", "cyan", "star", "growing"), ("shrink", "orange", "square", "shrinking"),
        ("rotate", "white", "star", "rotating"), ("still", "purple", "hexagon", "standing still")]}
    assert set(motion_prompts) == set(MOTIONS)
    jobs = [("issue: a green circle moving left", "a green circle moving left", s) for s in (0, 1)]
    jobs += [(m, p, s) for m, p in motion_prompts.items() for s in (0, 1)]
    for name, prompt, seed in jobs:
        t0 = time.time()
        frames = run(pipe, prompt, 200, seed)
        metrics, mask, fg = video_metrics(frames)
        view = cache_view(fg)
        cache_rows += view
        metrics.update(prompt=prompt, seed=seed, seconds=round(time.time() - t0, 1), cache_per_chunk=view)
        if name.startswith("issue") and seed == 0:
            result["shipped_frames_check"] = shipped_check(frames)
        streams[f"{name} / seed {seed}"] = metrics
        if seed == 0:
            sheet_rows.append(as_video(frames))
            sheet_labels.append(f"{name[:28]}")
        print(name, seed, {k: metrics[k] for k in ("last_frame_with_object", "windows17_every_frame_holds_object")},
              metrics["seconds"], flush=True)
    save_image(PNG / "streams_200.png", contact_sheet(sheet_rows, sheet_labels, frames_per_row=14))
    result["streams"] = streams

    # what a chunk draws against what its cache holds (all long streams, chunks 1..50)
    cache_rows = [r for r in cache_rows if r["window_fg"] is not None]  # chunk 1 has no window yet

    def share(rows):
        return {"chunks": len(rows), "share_drawing_an_object": round(float(np.mean([r["chunk_fg"] >= PRESENT
                                                                                     for r in rows])), 4) if rows else None}
    result["cache_vs_output"] = {
        "window_empty_sink_holds_object": share([r for r in cache_rows if r["window_fg"] < PRESENT / 2
                                                 and r["sink_fg"] >= PRESENT]),
        "window_holds_object": share([r for r in cache_rows if r["window_min_fg"] >= PRESENT]),
        "window_partly_empty": share([r for r in cache_rows if r["window_min_fg"] < PRESENT
                                      and r["window_fg"] >= PRESENT / 2]),
        "note": "window_fg: mean foreground over the 3 window chunks' frames; empty = below half the presence bar"}

    # ---- interventions on the left-moving circle
    prompt = motion_prompts["left"]
    inter, inter_rows, inter_labels = {}, [], []
    reset_schedule = {0: prompt, **{4 * k - 3: prompt for k in range(4, 51, 4)}}  # chunk boundaries: 13, 29, ...
    variants = [("window_chunks=1", dict(window_chunks=1)), ("window_chunks=2", dict(window_chunks=2)),
                ("sink_chunks=0 (window 3)", "nosink"),
                ("fresh sink every 16 frames (reset)", "periodic")]
    for name, how in variants:
        for seed in (0, 1):
            t0 = time.time()
            if how == "nosink":
                model.register_to_config(sink_chunks=0)
                try:
                    frames = run(pipe, prompt, 200, seed)
                finally:
                    model.register_to_config(sink_chunks=1)
                assert model.chunking == (1, 3, 1)
            elif how == "periodic":
                frames = run(pipe, reset_schedule, 200, seed, prompt_switch="reset")
            else:
                frames = run(pipe, prompt, 200, seed, **how)
            metrics, mask, fg = video_metrics(frames)
            metrics.update(seed=seed, seconds=round(time.time() - t0, 1))
            inter[f"{name} / seed {seed}"] = metrics
            if seed == 0:
                inter_rows.append(as_video(frames))
                inter_labels.append(name[:30])
            print(name, seed, metrics["last_frame_with_object"], metrics["windows17_every_frame_holds_object"],
                  flush=True)
    result["interventions"] = {"prompt": prompt, "reset_schedule_frames": sorted(reset_schedule), "runs": inter}
    save_image(PNG / "interventions_200.png", contact_sheet(inter_rows, inter_labels, frames_per_row=14))

    # ---- stories, recache against reset
    stories = {
        "shipped-frames story (49)": ({0: "a red circle moving right", 17: "a blue square moving up",
                                       33: "a white star rotating"}, 49, {0: "red", 17: "blue", 33: "white"}),
        "3-prompt story, 32-frame segments (97)": ({0: "a red circle moving right", 33: "a blue square moving up",
                                                    65: "a white star rotating"}, 97,
                                                   {0: "red", 33: "blue", 65: "white"}),
        "issue: red right, 49 blue up (97)": ({0: "a red circle moving right", 49: "a blue square moving up"}, 97,
                                              {0: "red", 49: "blue"}),
        "still -> still, switch at 17 (49)": ({0: "a red square standing still", 17: "a blue square standing still"},
                                              49, {0: "red", 17: "blue"}),
    }
    story_out, st_rows, st_labels = {}, [], []
    for name, (schedule, n, want) in stories.items():
        for mode in ("recache", "reset"):
            for seed in (0, 1):
                frames = run(pipe, schedule, n, seed, prompt_switch=mode)
                metrics, mask, fg = video_metrics(frames, per_frame=False)
                segs = segment_report(frames, mask, schedule, want)
                switches = {}
                for f in sorted(schedule)[1:]:
                    k = (f + 3) // 4
                    held = [0] + list(range(max(1, k - 3), k))
                    switches[f] = {"chunk": k, "cached_chunks": held,
                                   "cached_fg": [round(float(np.mean([fg[x] for x in chunk_frames(j)])), 4)
                                                 for j in held]}
                story_out[f"{name} / {mode} / seed {seed}"] = {
                    "segments": segs, "at_switch": switches,
                    "every_segment_shows_its_colour": all(s["share_frames_prompt_colour"] > 0 for s in segs),
                    "fg_per_frame": [round(float(v), 4) for v in fg]}
                if seed == 0 and n == 97 or (seed == 0 and name.startswith("still")):
                    st_rows.append(as_video(frames))
                    st_labels.append(f"{name[:24]} {mode}")
                print(name, mode, seed, [(s["frames_with_object"], s["share_frames_prompt_colour"]) for s in segs],
                      flush=True)
    result["stories"] = story_out
    save_image(PNG / "stories.png", contact_sheet(st_rows, st_labels, frames_per_row=14))
    result["wall_s"] = round(time.time() - t_start, 1)
    write_result(OUT, result, threads=THREADS, weights=[FOLDER], precision="fp32")
    print("wrote", OUT)


if __name__ == "__main__":
    main()

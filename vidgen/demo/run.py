"""The main job behind ``make demo``: text -> video with the shipped pipelines, scored for prompt adherence.

1. Check the attribute scorer on real held-out clips (it must reach ``--scorer-threshold`` on colour and motion
   before it may score anything generated).
2. For a prompt set (half seen colour x motion pairs, half held-out ones), generate one video per prompt with each
   pipeline in ``pretrained/`` (one seeded generator per video), time it, write MP4s and a contact sheet.
3. Score every video (colour / motion / shape), compute FVD of each pipeline's videos against real clips of the same
   prompts (with the measured noise floor).
4. A short story per pipeline (:mod:`vidgen.demo.story`: 8 prompts cycling colour and motion, one every 18 frames),
   streamed to an MP4 and scored segment by segment; write ``metrics.json`` and ``index.html``.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from vidgen.demo.prompts import prompt_groups
from vidgen.errors import InvalidInputError, MissingWeightsError, VidgenError
from vidgen.io.folders import make_folder
from vidgen.io.weights import weights_digest
from vidgen.pipelines.registry import PIPELINE_REGISTRY

#: pipeline name -> folder under ``--pretrained`` (from :data:`vidgen.pipelines.PIPELINE_REGISTRY`)
PIPELINES = {name: spec.folder for name, spec in PIPELINE_REGISTRY.items()}
NUM_FRAMES, SIZE, FPS = 17, 64, 8.0
STORY_SEGMENTS, STORY_FRAMES_PER_SEGMENT = 8, 18
# Each pipeline samples with the settings saved in its folder (sampling_config.json, recorded in metrics.json as
# "sampling"); they are chosen by experiments/sweep_sampling.py on tuning prompts (vidgen.demo.prompts.tuning_prompts:
# seen pairs, no caption of this evaluation). Their measured effect is in each card.


def check_scorer(scorer, num_clips: int, threshold: float) -> dict:
    """Accuracy of ``scorer`` on real clips of the held-out split; raises if colour or motion is below threshold."""
    from vidgen.data import ShapesDataset
    from vidgen.metrics.adherence import SCORER_CHECK_SEED, adherence
    data = ShapesDataset("test", num_frames=NUM_FRAMES, size=SIZE, num_samples=num_clips, seed=SCORER_CHECK_SEED)
    detected, expected = [], []
    for i in tqdm(range(len(data)), desc="scorer on real held-out clips", dynamic_ncols=True):
        item = data[i]
        detected.append(scorer(item["video"]))
        expected.append({k: item[k] for k in ("color", "motion", "shape")})
    result = {**adherence(detected, expected), "split": "test (held-out colour x motion pairs)", "threshold": threshold}
    result["passed"] = result["color"] >= threshold and result["motion"] >= threshold
    if not result["passed"]:
        raise VidgenError(f"the attribute scorer reaches only {result['color']:.1%} colour / {result['motion']:.1%} "
                          f"motion accuracy on real held-out clips (< {threshold:.0%}): it must not score generated "
                          "videos")
    return result


def load_pipelines(root: Path, names: list[str], precision: str = "auto") -> dict:
    from vidgen.pipelines import load_pipeline
    missing = [str(root / PIPELINES[n]) for n in names if not (root / PIPELINES[n] / "model_index.json").exists()]
    if missing:
        raise MissingWeightsError(f"no shipped pipeline at {', '.join(missing)}; they come with the repository "
                                  "(or rebuild them with `make pretrained`)")
    pipes = {}
    for name in names:
        pipe = load_pipeline(root / PIPELINES[name], dtype=precision)
        pipe.set_progress_bar_config(disable=True)
        pipes[name] = pipe
    return pipes


def generate(pipe, prompts, batch: int, **sampling) -> tuple[torch.Tensor, float]:
    """(N, 3, T, H, W) in [-1, 1] for ``prompts`` (one generator per video) and the seconds it took per video.
    ``sampling``: settings that override the folder's ``pipe.sampling_config`` (none: the shipped settings)."""
    videos, start = [], time.perf_counter()
    for s in tqdm(range(0, len(prompts), batch), desc=f"{type(pipe).__name__}", dynamic_ncols=True):
        part = prompts[s:s + batch]
        out = pipe(prompt=[p.caption for p in part], num_frames=NUM_FRAMES, height=SIZE, width=SIZE,
                   generator=[torch.Generator().manual_seed(p.seed) for p in part], output_type="pt", **sampling).frames
        videos.append(out.permute(0, 2, 1, 3, 4) * 2 - 1)  # (B, T, 3, H, W) [0, 1] -> (B, 3, T, H, W) [-1, 1]
    return torch.cat(videos), (time.perf_counter() - start) / len(prompts)


def write_outputs(out: Path, name: str, videos: torch.Tensor, prompts) -> list[str]:
    """One MP4 per video under ``out/name/`` and ``out/name.png`` (a contact sheet); returns the MP4 paths."""
    from vidgen.io import contact_sheet, save_image, write_video
    files = []
    for i, video in enumerate(videos):
        path = out / name / f"{i:03d}.mp4"
        write_video(path, video, fps=FPS)
        files.append(str(path.relative_to(out)))
    labels = [("[held-out] " if p.held_out else "") + p.caption for p in prompts]
    save_image(out / f"{name}.png", contact_sheet(list(videos), labels=labels, scale=1))
    return files


def save_comparison(path: Path, videos: dict, prompts, per_group: int = 3) -> None:
    """A contact sheet of the first ``per_group`` seen and held-out prompts, one row per source (real first)."""
    from vidgen.io import contact_sheet, save_image
    groups = prompt_groups(prompts)
    picks = groups["seen"][:per_group] + groups["held_out"][:per_group]
    rows, labels = [], []
    for i in picks:
        for name, vids in videos.items():
            rows.append(vids[i])
            labels.append(f"{name}: {prompts[i].caption}" + (" [held-out pair]" if prompts[i].held_out else ""))
    save_image(path, contact_sheet(rows, labels=labels, frames_per_row=9, scale=2))


def score(scorer, videos: torch.Tensor, prompts) -> tuple[list, dict]:
    from vidgen.metrics.adherence import adherence
    detected = [scorer(v) for v in videos]
    groups = prompt_groups(prompts)
    result = {group: adherence([detected[i] for i in rows], [prompts[i].expected() for i in rows])
              for group, rows in groups.items() if rows}
    result["all"] = adherence(detected, [p.expected() for p in prompts])
    return [d.to_dict() for d in detected], result


def turning(detected: list[dict], prompts) -> dict:
    """Of the rotating prompts with a non-round shape (a circle cannot be seen to turn), how many videos the scorer
    reads as rotating: its turn test, which a shape that wobbles or drifts does not pass."""
    rows = [i for i, p in enumerate(prompts) if p.attributes.motion == "rotate" and p.attributes.shape != "circle"]
    turned = sum(detected[i]["motion"] == "rotate" for i in rows)
    return {"n": len(rows), "turned": turned, "fraction": turned / len(rows) if rows else None}


def shapes_read(detected: list[dict], prompts) -> dict:
    """Per asked-for shape: how many of its videos the scorer reads as that shape, and what the others were read as
    (``{"right": "right/asked", "read_as": {shape: count}}``): which shapes a shape score misses."""
    asked, read = collections.Counter(), collections.defaultdict(collections.Counter)
    for d, p in zip(detected, prompts):
        asked[p.attributes.shape] += 1
        read[p.attributes.shape][d["shape"]] += 1
    return {shape: {"right": f"{read[shape][shape]}/{n}",
                    "read_as": {k: v for k, v in read[shape].most_common() if k != shape}}
            for shape, n in sorted(asked.items())}


def fvd_against(metric, videos: torch.Tensor) -> dict:
    metric.reset(keep_real=True)
    metric.update(videos, real=False)
    result = metric.compute()
    floor = result.get("noise_floor")
    return {"value": result["value"], "n_real": metric.real.count, "n_fake": metric.fake.count,
            "noise_floor": floor, "protocol": result["protocol"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidgen.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--pretrained", default="pretrained", help="folder holding the shapes-* pipeline folders")
    parser.add_argument("--prompts", type=int, default=48, help="prompts (half held-out colour x motion pairs)")
    parser.add_argument("--full", action="store_true", help="the full evaluation: 128 prompts, 512 scorer clips")
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--scorer-clips", type=int, default=256, help="real held-out clips to check the scorer on")
    parser.add_argument("--scorer-threshold", type=float, default=0.98)
    parser.add_argument("--no-fvd", action="store_true", help="skip FVD (the I3D features are the slowest part)")
    parser.add_argument("--no-story", action="store_true", help="skip the short story per pipeline")
    parser.add_argument("--story-segments", type=int, default=STORY_SEGMENTS,
                        help=f"prompts in each story, {STORY_FRAMES_PER_SEGMENT} frames each")
    parser.add_argument("--batch", type=int, default=8, help="videos per pipeline call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="pipelines' compute precision (auto: bf16 where the CPU multiplies bf16 fast)")
    args = parser.parse_args(argv)
    try:
        return run(args, sys.argv[1:] if argv is None else argv)
    except VidgenError as err:
        print(f"vidgen demo: error: {err}", file=sys.stderr)
        return 2


def run(args, argv: list[str]) -> int:
    from vidgen.demo.prompts import EVALUATION_PROMPTS, demo_prompts, real_clip
    from vidgen.demo.report import write_page
    from vidgen.metrics.adherence import AttributeScorer
    if args.full:
        args.prompts, args.scorer_clips = max(args.prompts, EVALUATION_PROMPTS), max(args.scorer_clips, 512)
    for name in ("batch", "scorer_clips", "story_segments"):
        if getattr(args, name) < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = make_folder(args.out, "--out")
    prompts = demo_prompts(args.prompts, args.seed)
    pipes = load_pipelines(Path(args.pretrained), args.pipelines, args.precision)  # fail early, before slow work
    scorer = AttributeScorer()
    # the scorer before its turn test, reported beside it so the change of scorer stays visible
    silhouette_only = scorer.silhouette_only()
    metrics = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join(["python -m vidgen.demo", *argv]),
               "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                           "precision": {name: pipe.precision for name, pipe in pipes.items()},
                           "python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
               "settings": {"prompts": len(prompts), "held_out_prompts": sum(p.held_out for p in prompts),
                            "num_frames": NUM_FRAMES, "size": SIZE, "seed": args.seed},
               "scorer": {"real_held_out": check_scorer(scorer, args.scorer_clips, args.scorer_threshold),
                          "settings": dataclasses.asdict(scorer.settings)}}

    real = torch.stack([real_clip(p, NUM_FRAMES, SIZE) for p in prompts])
    files = {"real": write_outputs(out, "real", real, prompts)}
    generated = {"real": real}
    detections, real_detected = {}, score(scorer, real, prompts)
    detections["real"] = real_detected[0]
    metrics["scorer"]["real_same_prompts"] = real_detected[1]
    metrics["scorer"]["real_same_prompts_turning"] = turning(real_detected[0], prompts)
    fvd_metric = None
    if not args.no_fvd:
        from vidgen.metrics import FrechetVideoDistance
        fvd_metric = FrechetVideoDistance(batch_size=4)
        fvd_metric.update(real, real=True)
        second = torch.stack([real_clip(p, NUM_FRAMES, SIZE, stream="demo/real-b") for p in prompts])
        metrics["fvd_floor"] = {**fvd_against(fvd_metric, second),
                                "what": "FVD between the real clips and a second, independently rendered real set "
                                        "of the same prompts: the sampling-noise floor at this size"}
    metrics["pipelines"] = {}
    for name, pipe in pipes.items():
        videos, seconds = generate(pipe, prompts, args.batch)
        if tuple(videos.shape[1:]) != (3, NUM_FRAMES, SIZE, SIZE):
            raise VidgenError(f"{name}: generated videos of shape {tuple(videos.shape[1:])}, expected "
                              f"{(3, NUM_FRAMES, SIZE, SIZE)}")
        files[name] = write_outputs(out, name, videos, prompts)
        generated[name] = videos
        detections[name], adherence_result = score(scorer, videos, prompts)
        folder = Path(args.pretrained) / PIPELINES[name]
        entry = {"folder": str(folder), "class": type(pipe).__name__, "weights_sha256": weights_digest(folder),
                 "sampling": pipe.sampling_config.to_dict(), "seconds_per_video": seconds, "adherence": adherence_result,
                 "adherence_silhouette_only": score(silhouette_only, videos, prompts)[1],
                 "turning": turning(detections[name], prompts),
                 "contact_sheet": f"{name}.png"}
        if fvd_metric is not None:
            entry["fvd"] = fvd_against(fvd_metric, videos)
        metrics["pipelines"][name] = entry
    if not args.no_story:
        metrics["stories"] = {name: demo_story(out, name, pipe, scorer, args.seed, args.story_segments)
                              for name, pipe in pipes.items()}
    save_comparison(out / "comparison.png", generated, prompts)
    metrics["comparison"] = "comparison.png"
    metrics["videos"] = [{"prompt": p.caption, "held_out": p.held_out, "seed": p.seed, **p.expected(),
                          "files": {k: v[i] for k, v in files.items()},
                          "detected": {k: v[i] for k, v in detections.items()}} for i, p in enumerate(prompts)]
    metrics["wall_time_s"] = time.perf_counter() - started
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    page = write_page(out, metrics)
    print_summary(out, page, metrics)
    return 0


def demo_story(out: Path, name: str, pipe, scorer, seed: int, segments: int = STORY_SEGMENTS) -> dict:
    """The pipeline's story of ``segments`` prompts: streamed to ``out/stories/<name>.mp4`` and scored per segment
    (vidgen.demo.story)."""
    from vidgen.demo.story import run_story, story_prompts
    from vidgen.io import VideoWriter
    attributes = story_prompts(segments)
    num_frames = segments * STORY_FRAMES_PER_SEGMENT
    path, start = out / "stories" / f"{name}.mp4", time.perf_counter()
    with VideoWriter(path, fps=FPS) as writer:
        scored = [s.to_dict() for s in tqdm(run_story(pipe, attributes, STORY_FRAMES_PER_SEGMENT, num_frames, seed,
                                                      SIZE, on_frames=writer.write, scorer=scorer),
                                            total=segments, desc=f"{name} story", dynamic_ncols=True)]
    return {"file": str(path.relative_to(out)), "num_frames": num_frames, "frames_per_segment": STORY_FRAMES_PER_SEGMENT,
            "context_frames": getattr(pipe.sampling_config, "context_frames", None),  # none: the causal KV cache
            "seconds": time.perf_counter() - start,
            "segments": scored,
            "color_motion": sum(s["color_motion"] for s in scored) / len(scored)}


def print_summary(out: Path, page: Path, metrics: dict) -> None:
    s = metrics["scorer"]["real_held_out"]
    print(f"\nscorer on {s['n']} real held-out clips: colour {s['color']:.1%}, motion {s['motion']:.1%}, "
          f"shape {s['shape']:.1%}")
    print(f"{'pipeline':16s} {'seen c+m':>9s} {'held-out c+m':>13s} {'shape':>6s} {'turns':>6s} {'FVD':>8s} "
          f"{'s/video':>8s}")
    for name, entry in metrics["pipelines"].items():
        a, turns = entry["adherence"], entry["turning"]
        fvd = f"{entry['fvd']['value']:.0f}" if "fvd" in entry else "-"
        print(f"{name:16s} {a['seen']['color_motion']:9.1%} {a['held_out']['color_motion']:13.1%} "
              f"{a['all']['shape']:6.1%} {turns['turned']:>3d}/{turns['n']:<2d} {fvd:>8s} {entry['seconds_per_video']:8.2f}")
    for name, story in metrics.get("stories", {}).items():
        print(f"story {name:10s} {story['num_frames']} frames, {len(story['segments'])} prompts: colour+motion per "
              f"segment {story['color_motion']:.0%} ({story['seconds']:.0f} s)")
    print(f"\nvideos: {out}/<pipeline>/*.mp4   contact sheets: {out}/<pipeline>.png")
    print(f"metrics: {out / 'metrics.json'}")
    print(f"page:    {page}  (open it in a browser)")
    print(f"took {metrics['wall_time_s']:.0f} s")

"""Does FVD move the right way, and how far above its noise floor? Plus feature-network timings on this CPU.

Real clips: camera paths over held-out photographs (vidgen.data.NaturalClips, test split), two disjoint draws
A and B. Compared: FVD(A, B) (same distribution: only sampling noise), FVD(A, degraded B) for spatial
(blur, noise) and temporal (frozen, shuffled frames) degradations, next to the split-half noise floor of A.
Prints a JSON report and writes it as a results file (``docs/results/fvd_sanity.json``, the README tables); the
features go to ``--features`` for re-analysis without the networks.

    python eval/fvd_sanity.py --clips 32 --size 64 --frames 16 --threads 2
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vidgen.data.natural import NaturalClips
from vidgen.metrics.fid import FrechetInceptionDistance
from vidgen.metrics.frechet import FeatureStats, fd_from_stats, noise_floor
from vidgen.metrics.fvd import FrechetVideoDistance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

COMPARISONS = {"same_distribution": "A vs B, same distribution", "blur": "A vs blurred B (4x down/up)",
               "noise": "A vs noisy B (sigma = 0.2)", "frozen": "A vs frozen B (first frame repeated)",
               "shuffled": "A vs shuffled-frame B"}


def degrade(videos: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    if kind == "blur":
        b, c, t, h, w = videos.shape
        frames = videos.transpose(1, 2).reshape(b * t, c, h, w)
        frames = F.interpolate(F.interpolate(frames, scale_factor=0.25, mode="area"), size=(h, w), mode="bilinear")
        return frames.reshape(b, t, c, h, w).transpose(1, 2)
    if kind == "noise":
        return (videos + 0.2 * torch.randn(videos.shape, generator=generator)).clamp(-1, 1)
    if kind == "frozen":
        return videos[:, :, :1].expand_as(videos).clone()
    if kind == "shuffled":
        return videos[:, :, torch.randperm(videos.shape[2], generator=generator)]
    raise ValueError(f"unknown degradation {kind!r}")


def readme_table(results: dict) -> str:
    """The README tables (``<!-- table:fvd_sanity -->``) from ``docs/results/fvd_sanity.json``."""
    n = results["clips_per_set"]
    floor = results["noise_floor"]
    lines = [f"| comparison ({n} vs {n} clips) | FVD |", "|---|---|"]
    lines += [f"| {COMPARISONS[k]} | {v:.0f} |" for k, v in results["fvd"].items()]
    halves = " vs ".join(str(x) for x in floor["split_half_sizes"])
    lines += [f"| noise floor: split-half FD of A ({halves}), upper bound | {floor['split_half_fd']:.0f} |",
              f"| noise floor: estimate at {n} vs {n} (`reliable: {str(floor['reliable']).lower()}`) | "
              f"{floor['estimate']:.0f} |"]
    lines += ["", f"| feature network, {results['threads']} thread(s) | first call (weights + warm-up) | per item |",
              "|---|---|---|",
              f"| I3D, {results['frames']}x{results['size']}² clips resized to 224² | "
              f"{results['i3d_first_call_seconds']:.1f} s | {results['i3d_seconds_per_clip']:.2f} s / clip |",
              f"| Inception, frames resized to 299² | {results['inception_first_call_seconds']:.1f} s | "
              f"{results['inception_seconds_per_image']:.3f} s / image |",
              "", f"{results['date'][:10]}, load average {results['loadavg_start'][0]:.2f} at start; "
              f"`{results['command']}`."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--results", default="docs/results/fvd_sanity.json", help="results file ('' to skip)")
    parser.add_argument("--features", default="runs/fvd_sanity.features.pt", help="where the I3D features go")
    args = parser.parse_args()
    report = {"clips_per_set": args.clips, "size": args.size, "frames": args.frames}
    Path(args.features).parent.mkdir(parents=True, exist_ok=True)

    data = NaturalClips("test", num_frames=args.frames, size=args.size, num_clips=2 * args.clips, seed=0)
    videos = torch.stack([data[i]["video"] for i in range(2 * args.clips)])
    set_a, set_b = videos[::2], videos[1::2]  # interleaved: both sets see every source photograph
    metric = FrechetVideoDistance(num_threads=args.threads, progress=True)

    start = time.perf_counter()
    metric.features(set_a[:1])  # weight loading and warm-up, timed apart from the per-clip time
    report["i3d_first_call_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    feats_a = metric.features(set_a)
    report["i3d_seconds_per_clip"] = (time.perf_counter() - start) / args.clips
    report["threads"] = metric.num_threads
    stats_a = FeatureStats(400).update(feats_a)
    features = {"A": feats_a}

    generator = torch.Generator().manual_seed(0)
    results = {}
    for kind in ("same_distribution", "blur", "noise", "frozen", "shuffled"):
        fake = set_b if kind == "same_distribution" else degrade(set_b, kind, generator)
        features[kind] = metric.features(fake)
        stats_b = FeatureStats(400).update(features[kind])
        results[kind] = fd_from_stats(stats_a, stats_b)
        print(kind, round(results[kind], 2), flush=True)
    report["fvd"] = results
    halves = FeatureStats(400).update(feats_a[::2]), FeatureStats(400).update(feats_a[1::2])
    report["noise_floor"] = noise_floor(*halves, args.clips, args.clips)
    torch.save(features, args.features)  # for re-analysis without the network
    report["protocol"] = metric.protocol()

    fid_metric = FrechetInceptionDistance(num_threads=args.threads, progress=False)
    images = set_a[:8, :, 0]
    start = time.perf_counter()
    fid_metric.features(images[:1])
    report["inception_first_call_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    fid_metric.features(images)
    report["inception_seconds_per_image"] = (time.perf_counter() - start) / images.shape[0]

    print(json.dumps(report, indent=2))
    if args.results:
        print(f"wrote {write_result(args.results, report, threads=metric.num_threads)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Seconds per clip of FVD's I3D (or FID's Inception) features in the two memory layouts, side by side in one run,
against the fp32 GEMM ceiling measured in the same run.

Why: the I3D is the slowest part of ``make demo`` (five 48-clip sets), and per-frame FID runs the Inception on every
frame. Both layouts run the same trained weights on the same seeded clips through the metric's ``features``
(:class:`vidgen.metrics.FrechetVideoDistance`: preprocessing to 224x224; :class:`~vidgen.metrics.
FrechetInceptionDistance`: every frame resized to 299x299), in batches of ``--batch``, fp32:

* ``contiguous``: ``channels_last=False``, the plain reference path;
* ``channels_last_3d`` (FVD) / ``channels_last`` (FID): weights and inputs in that memory format (the default
  since this benchmark).

What differs: only the layout. The largest feature difference between the two is reported beside the speed. The
network's FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on one clip (convolutions and matrix
products), so each case's achieved GFLOP/s is a fraction of the fp32 ``2048^3`` GEMM rate (``eval/ceiling.py``),
timed before and after.

    python eval/bench_fvd_features.py [--clips 16] [--frames 17] [--size 64] [--batch 4] [--threads 2]
    python eval/bench_fvd_features.py --metric fid --clips 4 --batch 16

Results: ``docs/results/fvd_features_speed.json`` / ``fid_features_speed.json``. Run on idle cores only.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceiling import gemm_ceilings  # noqa: E402
from results import write_result  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
FAST_LAYOUT = {"fvd": "channels_last_3d", "fid": "channels_last"}  # metric -> the name of its fast layout


def gflops_per_clip(metric, frames: int, size: int) -> float:
    """The network's GFLOP for one clip through the metric's own ``features`` (FID: every frame is an image; the
    resize has no FLOP formula, so only the network's convolutions and matrix products count)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        metric.features(torch.zeros(1, 3, frames, size, size))
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64, help="clip side before the I3D's resize to 224")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3, help="timed passes per layout (interleaved; median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--metric", choices=sorted(FAST_LAYOUT), default="fvd")
    parser.add_argument("--out", default=None, help="default: docs/results/<metric>_features_speed.json")
    args = parser.parse_args()
    args.out = args.out or str(RESULTS / f"{args.metric}_features_speed.json")
    torch.set_num_threads(args.threads)
    from vidgen.metrics import FrechetInceptionDistance, FrechetVideoDistance
    metric_class = {"fvd": FrechetVideoDistance, "fid": FrechetInceptionDistance}[args.metric]
    fast = FAST_LAYOUT[args.metric]
    layouts = {"contiguous": False, fast: True}

    clips = torch.rand(args.clips, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(0))
    clips = clips * 2 - 1
    metrics = {name: metric_class(batch_size=args.batch, channels_last=flag, num_threads=args.threads,
                                  progress=False) for name, flag in layouts.items()}
    ceiling_before = gemm_ceilings(dtypes=("fp32",))["fp32"]
    features = {name: metric.features(clips[:args.batch]) for name, metric in metrics.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in layouts}
    for _ in range(args.reps):  # interleaved, so drifting load hits both layouts
        for name, metric in metrics.items():
            start = time.perf_counter()
            features[name] = metric.features(clips)
            times[name].append((time.perf_counter() - start) / args.clips)
    ceiling_after = gemm_ceilings(dtypes=("fp32",))["fp32"]
    ceiling = min(ceiling_before["gflops"], ceiling_after["gflops"])
    flops = gflops_per_clip(metrics["contiguous"], args.frames, args.size)  # the network already loaded
    cases = {}
    for name in layouts:
        seconds = statistics.median(times[name])
        cases[name] = {"seconds_per_clip": seconds, "times_s": times[name], "gflops": flops / seconds,
                       "fraction_of_fp32_ceiling": flops / seconds / ceiling}
    reference = features["contiguous"]
    summary = {"speedup_channels_last": cases["contiguous"]["seconds_per_clip"] / cases[fast]["seconds_per_clip"],
               "max_abs_feature_difference": (features[fast] - reference).abs().max().item(),
               "max_abs_feature": reference.abs().max().item()}
    payload = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "metric": metric_class.name,
               f"{'i3d' if args.metric == 'fvd' else 'inception'}_gflops_per_clip": flops,
               "fp32_ceiling": {"before": ceiling_before, "after": ceiling_after, "used_gflops": ceiling},
               "cases": cases, **summary,
               "matched": "same weights, clips, batch size, threads, fp32; only the memory layout differs"}
    write_result(args.out, payload, threads=args.threads)
    print(f"fp32 GEMM ceiling {ceiling:.0f} GFLOP/s; {metric_class.name} network {flops:.1f} GFLOP per "
          f"{args.frames}-frame clip")
    for name, case in cases.items():
        print(f"{name:18s} {case['seconds_per_clip']:.3f} s/clip  {case['fraction_of_fp32_ceiling']:.0%} of ceiling")
    print(f"{fast} speed-up {summary['speedup_channels_last']:.2f}x; features differ by at most "
          f"{summary['max_abs_feature_difference']:.1e} (largest |feature| {summary['max_abs_feature']:.1f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Seconds per clip of FVD's I3D features in the two memory layouts, side by side in one run, against the fp32 GEMM
ceiling measured in the same run.

Why: the I3D is the slowest part of ``make demo`` (five 48-clip sets). Both layouts run the same trained Kinetics-400
weights on the same seeded clips through :class:`vidgen.metrics.FrechetVideoDistance` (its ``features``: preprocessing
to 224x224, batches of ``--batch``, fp32):

* ``contiguous``: ``channels_last=False``, the plain reference path;
* ``channels_last_3d``: weights and inputs in ``torch.channels_last_3d`` (the default since this benchmark).

What differs: only the layout. The largest feature difference between the two is reported beside the speed. The
I3D's FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on one clip (convolutions only), so each case's
achieved GFLOP/s is a fraction of the fp32 ``2048^3`` GEMM rate (``eval/ceiling.py``), timed before and after.

    python eval/bench_fvd_features.py [--clips 16] [--frames 17] [--size 64] [--batch 4] [--threads 2]

Results: ``docs/results/fvd_features_speed.json``. Run on idle cores only.
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

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "fvd_features_speed.json"
LAYOUTS = {"contiguous": False, "channels_last_3d": True}


def i3d_gflops_per_clip(network: torch.nn.Module, frames: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from vidgen.metrics.fvd import preprocess_for_i3d
    clip = preprocess_for_i3d(torch.zeros(1, 3, frames, 224, 224))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(clip)
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64, help="clip side before the I3D's resize to 224")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3, help="timed passes per layout (interleaved; median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from vidgen.metrics import FrechetVideoDistance

    clips = torch.rand(args.clips, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(0))
    clips = clips * 2 - 1
    metrics = {name: FrechetVideoDistance(batch_size=args.batch, channels_last=flag, num_threads=args.threads,
                                          progress=False) for name, flag in LAYOUTS.items()}
    ceiling_before = gemm_ceilings(dtypes=("fp32",))["fp32"]
    features = {name: metric.features(clips[:args.batch]) for name, metric in metrics.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for _ in range(args.reps):  # interleaved, so drifting load hits both layouts
        for name, metric in metrics.items():
            start = time.perf_counter()
            features[name] = metric.features(clips)
            times[name].append((time.perf_counter() - start) / args.clips)
    ceiling_after = gemm_ceilings(dtypes=("fp32",))["fp32"]
    ceiling = min(ceiling_before["gflops"], ceiling_after["gflops"])
    flops = i3d_gflops_per_clip(metrics["contiguous"].network, args.frames)  # the I3D already loaded
    cases = {}
    for name in LAYOUTS:
        seconds = statistics.median(times[name])
        cases[name] = {"seconds_per_clip": seconds, "times_s": times[name], "gflops": flops / seconds,
                       "fraction_of_fp32_ceiling": flops / seconds / ceiling}
    reference = features["contiguous"]
    summary = {"speedup_channels_last": cases["contiguous"]["seconds_per_clip"]
               / cases["channels_last_3d"]["seconds_per_clip"],
               "max_abs_feature_difference": (features["channels_last_3d"] - reference).abs().max().item(),
               "max_abs_feature": reference.abs().max().item()}
    payload = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "i3d_gflops_per_clip": flops,
               "fp32_ceiling": {"before": ceiling_before, "after": ceiling_after, "used_gflops": ceiling},
               "cases": cases, **summary,
               "matched": "same weights, clips, batch size, threads, fp32; only the memory layout differs"}
    write_result(args.out, payload, threads=args.threads)
    print(f"fp32 GEMM ceiling {ceiling:.0f} GFLOP/s; I3D {flops:.1f} GFLOP per {args.frames}-frame clip")
    for name, case in cases.items():
        print(f"{name:18s} {case['seconds_per_clip']:.3f} s/clip  {case['fraction_of_fp32_ceiling']:.0%} of ceiling")
    print(f"channels_last_3d speed-up {summary['speedup_channels_last']:.2f}x; features differ by at most "
          f"{summary['max_abs_feature_difference']:.1e} (largest |feature| {summary['max_abs_feature']:.1f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""How the attribute scorer's still / rotate measure behaves on real clips that drift by a fraction of a pixel.

The scorer calls a shape rotating when its silhouette, re-centred on its centroid, changes by more than
``rotate_change`` (1 - IoU) from the first frame. Generated "still" shapes are mostly read as rotating (the largest
error of every shipped pipeline), and their centroids drift by tenths of a pixel. This script measures, on real still
and rotating clips of both splits, the scorer's measure once as rendered and once after a sub-pixel drift (the clip
rendered 4x larger, frame t moved by up to ``--drift`` px in quarter-pixel steps in one random direction, then
box-averaged back to 64x64), and beside it an alternative that aligns by the best of the whole-pixel offsets next to
the centroid offset instead of the rounded one, and the turn ratio the scorer now also asks for (how much of the
change a rotation explains, :func:`_turn_ratio`), whose threshold is set here, midway between the largest still and
the smallest rotating value. Finally it reads every clip's motion with the full scorer, once with the silhouette
test alone (``rotate_turn=None``, the scorer before the turn test) and once as shipped.
Results: ``docs/results/scorer_calibration.json``.

    python eval/calibrate_scorer.py --clips 400
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from vidgen.data import ShapesDataset
from vidgen.data.common import make_generator
from vidgen.data.shapes import render_shape_video
from vidgen.errors import InvalidInputError
from vidgen.metrics.adherence import AttributeScorer, _radial_profile, _recentred_change, _turn_ratio, profile_variation

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402


def drifted_clip(attributes, seed: int, pixels: float, generator: torch.Generator, factor: int = 4) -> torch.Tensor:
    """The clip of ``attributes`` rendered ``factor`` times larger, frame t rolled by ``round(pixels * factor * t /
    (T - 1))`` of those pixels in one random direction, then box-averaged back to 64x64: a shape that drifts by up to
    ``pixels`` in steps of ``1 / factor`` px, antialiased as a camera would see it."""
    big = render_shape_video(attributes, 17, (64 * factor, 64 * factor), make_generator(seed, "calibrate", 0))
    angle = torch.rand((), generator=generator).item() * 2 * math.pi
    frames = []
    for i in range(big.shape[1]):
        d = pixels * factor * i / (big.shape[1] - 1)
        frames.append(torch.roll(big[:, i], (round(d * math.sin(angle)), round(d * math.cos(angle))), dims=(1, 2)))
    return torch.nn.functional.avg_pool2d(torch.stack(frames, dim=1), factor).clamp(-1, 1)


def best_neighbour_change(masks: torch.Tensor) -> float:
    """The alternative: align each later silhouette by the best of the (up to 4) whole-pixel offsets next to the
    sub-pixel centroid offset, not by the rounded one (rounding jumps by a pixel when the centroid crosses a
    half-pixel boundary, whatever the drift)."""
    def centroid(mask):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        return ys.float().mean().item(), xs.float().mean().item()
    first, change = masks[0], 0.0
    cy0, cx0 = centroid(first)
    for mask in masks[1:]:
        cy, cx = centroid(mask)
        best = 1.0
        for sy in {math.floor(cy0 - cy), math.ceil(cy0 - cy)}:
            for sx in {math.floor(cx0 - cx), math.ceil(cx0 - cx)}:
                moved = torch.roll(mask, (sy, sx), dims=(0, 1))
                best = min(best, 1 - (first & moved).sum().item() / (first | moved).sum().item())
        change = max(change, best)
    return change


def silhouettes(scorer: AttributeScorer, video: torch.Tensor) -> torch.Tensor:
    frames = ((video.clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0)
    assigned = scorer.color_masks(frames)
    k = int(torch.bincount(assigned[assigned >= 0]).argmax())
    masks = assigned == k
    return masks[masks.flatten(1).any(1)]


def summary(values: list[float]) -> dict:
    v = torch.tensor(values)
    return {"n": len(values), "min": v.min().item(), "max": v.max().item(), "median": v.median().item()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=400, help="real clips per split (all motions)")
    parser.add_argument("--drift", type=float, default=0.6, help="sub-pixel drift over the clip, in pixels")
    parser.add_argument("--out", default="docs/results/scorer_calibration.json")
    args = parser.parse_args(argv)
    if args.clips < 1:
        raise InvalidInputError(f"--clips must be a positive number of clips per split, got {args.clips}")
    scorer = AttributeScorer()
    silhouette_only = scorer.silhouette_only()
    measures = ("scorer", "best_neighbour", "turn")
    rows = {(motion, variant, measure): [] for motion in ("still", "rotate") for variant in ("rendered", "drifted")
            for measure in measures}
    variation = {True: [], False: []}  # is a circle -> first-frame radial-profile variation
    verdicts = {(motion, variant, name): [] for motion in ("still", "rotate") for variant in ("rendered", "drifted")
                for name in ("silhouette_only", "shipped")}
    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        data = ShapesDataset(split, num_frames=17, size=64, num_samples=args.clips, seed=20261124)
        for i in tqdm(range(len(data)), desc=f"real {split} clips", dynamic_ncols=True):
            motion = data.attributes(i).motion
            if motion not in ("still", "rotate"):
                continue
            drifted = drifted_clip(data.attributes(i), i, args.drift, g)
            for variant, clip in (("rendered", data[i]["video"]), ("drifted", drifted)):
                masks = silhouettes(scorer, clip)
                rows[(motion, variant, "scorer")].append(_recentred_change(masks))
                rows[(motion, variant, "best_neighbour")].append(best_neighbour_change(masks))
                rows[(motion, variant, "turn")].append(_turn_ratio(masks, scorer.settings.round_variation))
                variation[data.attributes(i).shape == "circle"].append(profile_variation(_radial_profile(masks[0], 360)))
                verdicts[(motion, variant, "silhouette_only")].append(silhouette_only(clip).motion)
                verdicts[(motion, variant, "shipped")].append(scorer(clip).motion)
    missing = [name for name, values in (("still clips", rows[("still", "rendered", "turn")]),
                                         ("rotating clips", rows[("rotate", "rendered", "turn")]),
                                         ("circles", variation[True]), ("other shapes", variation[False]))
               if not values]
    if missing:
        raise InvalidInputError(f"--clips {args.clips}: the sample holds no {' and no '.join(missing)} to calibrate "
                                f"on; use more clips per split (about 60 or more; 400 by default)")
    largest_still = max(max(rows[("still", v, "turn")]) for v in ("rendered", "drifted"))
    smallest_rotating = min(min(rows[("rotate", v, "turn")]) for v in ("rendered", "drifted"))
    print(f"profile variation: circles <= {max(variation[True]):.4f}, other shapes >= {min(variation[False]):.4f} -> "
          f"midpoint {(max(variation[True]) + min(variation[False])) / 2:.4f} (ScorerSettings.round_variation = "
          f"{scorer.settings.round_variation})")
    thresholds = {"scorer": scorer.settings.rotate_change, "best_neighbour": scorer.settings.rotate_change,
                  "turn": scorer.settings.rotate_turn}
    table = {}
    for (motion, variant, measure), values in rows.items():
        wrong = sum((v > thresholds[measure]) != (motion == "rotate") for v in values)
        table[f"{motion}/{variant}/{measure}"] = {**summary(values), "misread_at_threshold": wrong}
    for key, entry in table.items():
        print(f"{key:28s} n={entry['n']:4d} min {entry['min']:.3f} median {entry['median']:.3f} "
              f"max {entry['max']:.3f}  misread: {entry['misread_at_threshold']}")
    motion_read = {f"{motion}/{variant}/{name}": {"n": len(v), "correct": sum(m == motion for m in v)}
                   for (motion, variant, name), v in verdicts.items()}
    for key, entry in motion_read.items():
        print(f"full scorer, {key:34s} motion read right {entry['correct']}/{entry['n']}")
    print(f"turn: largest still {largest_still:.3f}, smallest rotating {smallest_rotating:.3f} -> midpoint "
          f"{(largest_still + smallest_rotating) / 2:.3f} (ScorerSettings.rotate_turn = {scorer.settings.rotate_turn})")
    write_result(args.out, {"clips_per_split": args.clips, "drift_px": args.drift, "thresholds": thresholds,
                            "measures": {"scorer": "largest 1 - IoU against the first silhouette after re-centring, "
                                                   "offset rounded to whole pixels (the scorer's silhouette test)",
                                         "best_neighbour": "the same, best of the whole-pixel offsets next to the centroid offset",
                                         "turn": "the share of the change a rotation explains (the scorer's turn test, _turn_ratio)"},
                            "turn_midpoint": (largest_still + smallest_rotating) / 2,
                            "profile_variation": {"circles_max": max(variation[True]), "other_shapes_min": min(variation[False]),
                                                  "round_variation": scorer.settings.round_variation},
                            "rows": table, "full_scorer_motion": motion_read}, threads=torch.get_num_threads())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

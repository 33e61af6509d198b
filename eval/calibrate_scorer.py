"""Derives every threshold of the attribute scorer (:class:`vidgen.metrics.adherence.ScorerSettings`) from real clips,
then checks the scorer with those thresholds on *other* real clips.

* **Calibration clips**: ``--clips`` real clips of the train split, seed ``SCORER_CALIBRATION_SEED``, with their
  silhouettes (``ShapesDataset(with_coverage=True)``). Every still and rotating clip is also measured drifted: rendered
  4x larger, moved by up to ``--drift`` px in quarter-pixel steps in one random direction, box-averaged back (generated
  still shapes drift by tenths of a pixel, and a whole-pixel re-centring reads such a drift as a changed silhouette).
* **Check clips**: the real held-out clips the demo checks the scorer on before it scores anything
  (``vidgen.demo.run.check_scorer``: test split, seed ``SCORER_CHECK_SEED``). A different split and seed: no check
  clip is a calibration clip (``tests/unit/test_adherence.py`` compares them).

Each threshold is the midpoint between the real values of the two classes it separates (the largest of one, the
smallest of the other), rounded to 3 significant digits; ``ScorerSettings``' defaults must equal them
(``tests/unit/test_adherence.py`` reads this script's results file):

==================  ===========================================================================================
``move_fraction``    fitted centroid displacement / frame size: moving (left, right, up, down) vs the other motions
``area_ratio``       exp of |fitted change of log area|: grow / shrink vs still / rotate
``rotate_change``    re-centred 1 - IoU against the first silhouette: rotating vs still, as rendered
``rotate_turn``      the turn ratio (:func:`~vidgen.metrics.adherence._turn_ratio`): rotating vs still, rendered and drifted
``round_variation``  the first silhouette's radial-profile variation: circles vs other shapes, still and rotating
``circle_harmonic``  the largest radial-profile harmonic 3-6: circles vs other shapes
``color_radius``     RGB distance: fully covered shape pixels to their palette colour vs background pixels to the
                     nearest palette colour
==================  ===========================================================================================

Each cut's record names the two clips its class extremes come from (``low_source`` / ``high_source``: the clip's
index in the calibration sample, and for a drifted clip which draw of the drift generator moved it), so each cut can be
derived again from just those two clips (:func:`remeasure`; ``tests/unit/test_adherence.py`` does it on every run).

The measures are taken with a fixed scorer, ``MEASURING`` (stated, not the defaults): some measures depend on
settings this script derives (the colour masks on ``color_radius``, the turn ratio on ``round_variation``), so
measuring with the defaults would make each run move the next one's clips. ``MEASURING`` is ``ScorerSettings`` with
the wide colour radius 0.3 and ``round_variation`` 0.029, the scorer these cuts were first derived with.

``band_fraction``, ``min_pixels`` and ``angle_bins`` are chosen rules, not cuts between measured classes (``RULES``
says why each); the results file lists them under ``rules``. The band rule has a measured guard: the largest share of
a row any real shape covers (and the clip it comes from) must stay below ``band_fraction``.
Results: ``docs/results/scorer_calibration.json``.

    python eval/calibrate_scorer.py             # 1200 calibration clips, 512 check clips, ~10 min on 2 cores
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from vidgen.data import ShapesDataset
from vidgen.data.common import make_generator
from vidgen.data.shapes import COLORS, render_shape_video
from vidgen.errors import InvalidInputError
from vidgen.metrics.adherence import (_PALETTE, SCORER_CALIBRATION_SEED, SCORER_CHECK_SEED, AttributeScorer,
                                      ScorerSettings)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

MOVING = ("left", "right", "up", "down")
RESULTS = "docs/results/scorer_calibration.json"
DRIFT_SEED = 0  # the generator of the drift directions, drawn once per drifted clip in calibration order
#: the scorer every calibration clip is measured with (see the module docstring)
MEASURING = ScorerSettings(color_radius=0.3, round_variation=0.029)
#: the settings that are chosen, not derived: name -> why (the results file records them with these reasons)
RULES = {
    "band_fraction": "a row or column more than this full of one colour is background: a band spans a row, a shape "
                     "does not (guarded: the largest real row share must stay below it)",
    "min_pixels": "fewer assigned pixels per frame on average means no shape was found: a shape needs some pixels to "
                  "be seen",
    "angle_bins": "angular bins of the radial profile whose harmonics 3-6 tell the shapes apart: more than 12 resolve "
                  "harmonic 6 (Nyquist); 48 give 8 samples a period of it",
}


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


def color_distances(item: dict) -> tuple[float, float, float]:
    """(largest distance of a fully covered shape pixel to its palette colour, smallest distance of an uncovered
    pixel to any palette colour, largest share of a row or column the shape covers)."""
    frames = ((item["video"].clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0)  # (T, H, W, 3)
    coverage = item["coverage"]
    inside = frames[coverage >= 0.999]
    shape = (inside - torch.tensor(COLORS[item["color"]])).norm(dim=1).max().item() if len(inside) else 0.0
    background = torch.cdist(frames[coverage <= 0.001], _PALETTE).min(1).values.min().item()
    covered = coverage > 0.5
    row_share = max(covered.float().mean(2).max().item(), covered.float().mean(1).max().item())
    return shape, background, row_share


def midpoint(low: list[tuple[float, dict]], high: list[tuple[float, dict]], name: str, low_class: str,
             high_class: str) -> dict:
    """The cut between two classes of real ``(value, source)`` pairs, ``low`` below ``high``; raises if they overlap.
    The record keeps both extremes and the clips they come from."""
    (top, top_source), (bottom, bottom_source) = max(low, key=_value), min(high, key=_value)
    if top >= bottom:
        raise InvalidInputError(f"{name}: the real {low_class} values (up to {top:.4g}) overlap the {high_class} "
                                f"values (from {bottom:.4g}): no threshold separates them")
    return {"value": cut_value(name, top, bottom), "low_class": low_class, "low_max": top, "low_source": top_source,
            "n_low": len(low), "high_class": high_class, "high_min": bottom, "high_source": bottom_source,
            "n_high": len(high)}


def _value(pair: tuple[float, dict]) -> float:
    return pair[0]


def cut_value(name: str, low_max: float, high_min: float) -> float:
    """The threshold between two class extremes: their midpoint to 3 significant digits (``area_ratio`` cuts the log
    of an area ratio, so it is the exp of the midpoint)."""
    middle = (low_max + high_min) / 2
    return float(f"{math.exp(middle) if name == 'area_ratio' else middle:.3g}")


#: threshold -> the measure of :meth:`AttributeScorer.measure` it cuts (``color_radius``: :func:`color_distances`)
MEASURES = {"move_fraction": "displacement", "area_ratio": "growth", "rotate_change": "change", "rotate_turn": "turn",
            "round_variation": "variation", "circle_harmonic": "harmonic"}


def calibration_data(clips: int) -> ShapesDataset:
    return ShapesDataset("train", num_frames=17, size=64, num_samples=clips, seed=SCORER_CALIBRATION_SEED,
                         with_coverage=True)


def remeasure(source: dict, name: str, side: str, drift: float) -> float:
    """The value of threshold ``name``'s measure on the one clip ``source`` names (a ``low_source`` / ``high_source``
    of the results file; ``side`` "low" or "high"), measured again from scratch."""
    index = source["clip"]
    data = calibration_data(index + 1)  # the sample's first clips do not depend on its size
    item = data[index]
    if name in ("color_radius", "largest_row_share_of_a_shape"):
        shape, background, row_share = color_distances(item)
        return row_share if name != "color_radius" else shape if side == "low" else background
    video = item["video"]
    if "drift_draw" in source:
        g = torch.Generator().manual_seed(DRIFT_SEED)
        for _ in range(source["drift_draw"]):  # the draws of the drifted clips before it
            torch.rand((), generator=g)
        video = drifted_clip(data.attributes(index), index, drift, g)
    return AttributeScorer(MEASURING).measure(video)[MEASURES[name]]


def calibrate(clips: int, drift: float) -> tuple[dict, dict]:
    """-> (``{threshold: midpoint record}``, other measured facts) from the calibration clips."""
    scorer = AttributeScorer(MEASURING)
    data = calibration_data(clips)
    by_motion: dict[str, list[dict]] = {}
    drifted: dict[str, list[dict]] = {"still": [], "rotate": []}
    shapes: dict[bool, list[dict]] = {True: [], False: []}  # is a circle -> measures, every motion
    turnable: dict[bool, list[dict]] = {True: [], False: []}  # the same, still and rotating clips (the turn test's)
    shape_px, background_px, row_share = [], [], []  # (value, source) pairs
    g = torch.Generator().manual_seed(DRIFT_SEED)
    for i in tqdm(range(len(data)), desc="calibration clips (train split)", dynamic_ncols=True):
        item, attributes = data[i], data.attributes(i)
        m = scorer.measure(item["video"])
        if m is None:
            raise InvalidInputError(f"calibration clip {i} ({item['caption']!r}): the scorer finds no shape in a real "
                                    "clip; the colour settings cannot be calibrated from it")
        m["source"] = {"clip": i}
        by_motion.setdefault(attributes.motion, []).append(m)
        if attributes.motion in drifted:
            moved = scorer.measure(drifted_clip(attributes, i, drift, g))
            moved["source"] = {"clip": i, "drift_draw": sum(map(len, drifted.values()))}
            drifted[attributes.motion].append(moved)
        shapes[attributes.shape == "circle"].append(m)
        if attributes.motion in drifted:
            turnable[attributes.shape == "circle"].append(m)
        for values, value in zip((shape_px, background_px, row_share), color_distances(item)):
            values.append((value, {"clip": i}))
    missing = [name for name, values in (("still clips", by_motion.get("still")),
                                         ("rotating clips", by_motion.get("rotate")),
                                         ("growing or shrinking clips", by_motion.get("grow", []) + by_motion.get("shrink", [])),
                                         ("moving clips", [m for k in MOVING for m in by_motion.get(k, [])]),
                                         ("still or rotating circles", turnable[True]),
                                         ("still or rotating other shapes", turnable[False]))
               if not values]
    if missing:
        raise InvalidInputError(f"--clips {clips}: the sample holds no {' and no '.join(missing)} to calibrate on; "
                                f"use more clips (about 200 or more; 1200 by default)")

    def values(groups, name):
        key = MEASURES[name]
        return [(m[key], m["source"]) for group in groups for m in group if m[key] is not None]
    moving = [by_motion.get(k, []) for k in MOVING]
    others = [v for k, v in by_motion.items() if k not in MOVING]
    resizing = [by_motion.get("grow", []), by_motion.get("shrink", [])]
    unmoved = [by_motion["still"], by_motion["rotate"]]
    thresholds = {
        "move_fraction": midpoint(values(others, "move_fraction"), values(moving, "move_fraction"), "move_fraction",
                                  "not moving", "moving"),
        "area_ratio": midpoint(values(unmoved, "area_ratio"), values(resizing, "area_ratio"), "area_ratio",
                               "still / rotate", "grow / shrink"),
        "rotate_change": midpoint(values([by_motion["still"]], "rotate_change"),
                                  values([by_motion["rotate"]], "rotate_change"), "rotate_change", "still", "rotating"),
        "rotate_turn": midpoint(values([by_motion["still"], drifted["still"]], "rotate_turn"),
                                values([by_motion["rotate"], drifted["rotate"]], "rotate_turn"), "rotate_turn",
                                "still (rendered and drifted)", "rotating (rendered and drifted)"),
        "round_variation": midpoint(values([turnable[True]], "round_variation"),
                                    values([turnable[False]], "round_variation"), "round_variation", "circle",
                                    "other shape"),
        "circle_harmonic": midpoint(values([shapes[True]], "circle_harmonic"),
                                    values([shapes[False]], "circle_harmonic"), "circle_harmonic", "circle",
                                    "other shape"),
        "color_radius": midpoint(shape_px, background_px, "color_radius", "fully covered shape pixel",
                                 "background pixel"),
    }
    widest = max(row_share, key=_value)
    facts = {"drifted_still_change_max": max(m["change"] for m in drifted["still"] if m["change"] is not None),
             "largest_row_share_of_a_shape": widest[0], "largest_row_share_source": widest[1],
             "clips_by_motion": {k: len(v) for k, v in by_motion.items()}}
    return thresholds, facts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1200, help="real calibration clips (train split)")
    parser.add_argument("--check-clips", type=int, default=512, help="real check clips (test split; the demo's)")
    parser.add_argument("--drift", type=float, default=0.6, help="sub-pixel drift of the drifted clips, in pixels")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    if args.clips < 1 or args.check_clips < 1:
        raise InvalidInputError(f"--clips must be a positive number of clips, got {args.clips} and {args.check_clips}")
    from vidgen.demo.run import check_scorer
    thresholds, facts = calibrate(args.clips, args.drift)
    derived = ScorerSettings(**{k: v["value"] for k, v in thresholds.items()})
    unclassified = {f.name for f in dataclasses.fields(ScorerSettings)} - set(thresholds) - set(RULES)
    if unclassified:
        raise InvalidInputError(f"ScorerSettings.{', '.join(sorted(unclassified))}: neither derived here nor a chosen "
                                "rule in RULES; say which it is")
    if facts["largest_row_share_of_a_shape"] >= derived.band_fraction:
        raise InvalidInputError(f"a real shape covers {facts['largest_row_share_of_a_shape']:.0%} of a row: the band "
                                f"rule (band_fraction {derived.band_fraction}) would remove it")
    for name, t in thresholds.items():
        print(f"{name:16s} {t['low_class']} <= {t['low_max']:.4g} | {t['high_class']} >= {t['high_min']:.4g} "
              f"-> {t['value']} (ScorerSettings: {getattr(ScorerSettings(), name)})")
    check = check_scorer(AttributeScorer(derived), args.check_clips, threshold=0.98)
    print(f"check on {check['n']} real held-out clips (test split, seed {SCORER_CHECK_SEED}): colour "
          f"{check['color']:.1%}, motion {check['motion']:.1%}, shape {check['shape']:.1%}")
    write_result(args.out, {
        "calibration": {"split": "train", "seed": SCORER_CALIBRATION_SEED, "clips": args.clips, "drift_px": args.drift,
                        "measured_with": dataclasses.asdict(MEASURING)},
        "check": {"split": "test", "seed": SCORER_CHECK_SEED, "clips": args.check_clips,
                  "note": "the clips vidgen.demo checks the scorer on; disjoint from the calibration clips"},
        "thresholds": thresholds, "rules": {name: {"value": getattr(derived, name), "why": why}
                                            for name, why in RULES.items()},
        "settings": dataclasses.asdict(derived), "facts": facts,
        "check_accuracy": {k: check[k] for k in ("n", "color", "motion", "color_motion", "shape", "all")}},
        threads=torch.get_num_threads())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The adherence ceiling a tokenizer puts on every generator decoded through it: the attribute scorer on real
held-out shapes clips, before and after each shipped pipeline's tokenizer round trip (encode, decode).

    python eval/tokenizer_ceiling.py            # -> docs/results/tokenizer_ceiling.json
    python eval/tokenizer_ceiling.py --tokenizer "fsq stage 1=runs/fsq_shapes/final"   # extra rows, any tokenizer
    python eval/tokenizer_ceiling.py --evaluation-prompts   # the full evaluation's 128 prompts, seen / held-out
    python eval/tokenizer_ceiling.py --tuning-prompts 96    # prompts for choices: seen pairs, no evaluation caption

Choose a tokenizer on ``--tuning-prompts`` (``vidgen.demo.prompts.tuning_prompts``); ``--evaluation-prompts`` reports
the ceiling under the final evaluation's numbers and must not inform a choice.

A generator whose samples were perfect token for token could still score no better than the round trip of real clips
(up to sampling luck), so a target above this ceiling is a tokenizer target, not a generator one.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch

from vidgen.cli.eval_recon import reconstruct
from vidgen.data import ShapesDataset
from vidgen.demo.prompts import EVALUATION_PROMPTS, EVALUATION_SEED, demo_prompts, prompt_groups, real_clip, tuning_prompts
from vidgen.demo.run import NUM_FRAMES, SIZE
from vidgen.metrics.adherence import AttributeScorer, adherence
from vidgen.tokenizers import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

TOKENIZERS = {"fsq (masked, autoregressive)": "shapes-masked/vqvae", "vae (flow)": "shapes-flow/vae"}


def score(scorer, videos, expected) -> dict:
    """The scorer's adherence, motion and shape confusions and, per shape, how many rotating clips still turn; beside
    them the colour+motion of the silhouette test alone (the scorer before its turn test)."""
    detected = [scorer(v) for v in videos]
    result = adherence(detected, expected)
    confusions = collections.Counter(f"{e['motion']} -> {d.motion}" for d, e in zip(detected, expected)
                                     if d.motion != e["motion"])
    shapes = collections.Counter(f"{e['shape']} -> {d.shape}" for d, e in zip(detected, expected)
                                 if d.shape != e["shape"])
    asked, kept = collections.Counter(), collections.Counter()
    for d, e in zip(detected, expected):
        if e["motion"] == "rotate":
            asked[e["shape"]] += 1
            kept[e["shape"]] += d.motion == "rotate"
    strict = scorer.silhouette_only()
    return {**result, "motion_confusions": dict(confusions.most_common()),
            "shape_confusions": dict(shapes.most_common()),
            "turns_kept_by_shape": {shape: f"{kept[shape]}/{n}" for shape, n in sorted(asked.items())},
            "color_motion_silhouette_only": adherence([strict(v) for v in videos], expected)["color_motion"]}


def score_groups(scorer, videos, expected, groups: dict) -> dict:
    """``score`` over all clips, plus one entry per named group of clip indices (e.g. seen / held-out prompts)."""
    row = score(scorer, videos, expected)
    for name, rows in groups.items():
        row[name] = score(scorer, videos[rows], [expected[i] for i in rows])
    return row


def real_clips(args) -> tuple[torch.Tensor, list[dict], dict, str]:
    """(clips, expected attributes, groups, description): ``--clips`` of the held-out split, or the real clips the
    demo renders for the full evaluation's prompts (``--evaluation-prompts``) or for ``--tuning-prompts N``."""
    if args.evaluation_prompts or args.tuning_prompts:
        if args.evaluation_prompts:
            prompts = demo_prompts(EVALUATION_PROMPTS, EVALUATION_SEED)
            described = f"the full evaluation's {len(prompts)} prompts (report only: no choice may be made on them)"
        else:
            prompts = tuning_prompts(args.tuning_prompts)
            described = f"{len(prompts)} tuning prompts (seen pairs, no caption of the evaluation set)"
        x = torch.stack([real_clip(p, NUM_FRAMES, SIZE) for p in prompts])
        groups = {k: v for k, v in prompt_groups(prompts).items() if v}
        return x, [p.expected() for p in prompts], groups, described
    data = ShapesDataset("test", num_frames=NUM_FRAMES, size=SIZE, num_samples=args.clips, seed=7)
    items = [data[i] for i in range(len(data))]
    expected = [{k: it[k] for k in ("color", "motion", "shape")} for it in items]
    return torch.stack([it["video"] for it in items]), expected, {}, "test (held-out colour x motion pairs)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--pretrained", default="pretrained", help="folder of the shipped pipelines ('' to skip them)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokenizer", action="append", default=[], metavar="LABEL=FOLDER",
                        help="also score this saved tokenizer's round trip (repeatable)")
    prompts = parser.add_mutually_exclusive_group()
    prompts.add_argument("--evaluation-prompts", action="store_true",
                         help="use the real clips of the full evaluation's prompts, scored per seen / held-out group "
                              "(reported beside the evaluation; never for choosing)")
    prompts.add_argument("--tuning-prompts", type=int, default=0, metavar="N",
                         help="use the real clips of N tuning prompts (what a tokenizer is chosen on)")
    parser.add_argument("--out", default=None, help="results file (default docs/results/tokenizer_ceiling.json, "
                        "tokenizer_ceiling_demo.json or tokenizer_ceiling_tuning.json)")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.tokenizer):
        parser.error("--tokenizer takes LABEL=FOLDER")
    suffix = "_demo" if args.evaluation_prompts else "_tuning" if args.tuning_prompts else ""
    out = args.out or f"docs/results/tokenizer_ceiling{suffix}.json"
    torch.set_num_threads(args.threads)
    x, expected, groups, described = real_clips(args)
    scorer = AttributeScorer()
    rows = {"real clips": score_groups(scorer, x, expected, groups)}
    extra = dict(item.split("=", 1) for item in args.tokenizer)
    shipped = {name: Path(args.pretrained) / folder for name, folder in TOKENIZERS.items()} if args.pretrained else {}
    folders = {**shipped, **extra}
    for name, folder in folders.items():
        recon = reconstruct(load_tokenizer(folder), x, batch=16, chunk_frames=None)[0]
        rows[name] = score_groups(scorer, recon, expected, groups)
    for name, r in rows.items():
        for group, g in [("all", r), *((k, r[k]) for k in groups)]:
            print(f"{name:30s} {group:9s} colour {g['color']:.1%}  motion {g['motion']:.1%}  colour+motion "
                  f"{g['color_motion']:.1%}  (silhouette test only {g['color_motion_silhouette_only']:.1%})  "
                  f"{g['motion_confusions']}  turns kept {g['turns_kept_by_shape']}")
    write_result(out, {"clips": len(x), "split": described, "rows": rows}, threads=args.threads)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The adherence ceiling a tokenizer puts on every generator decoded through it: the attribute scorer on real
held-out shapes clips, before and after each shipped pipeline's tokenizer round trip (encode, decode).

    python eval/tokenizer_ceiling.py            # -> docs/results/tokenizer_ceiling.json
    python eval/tokenizer_ceiling.py --tokenizer "fsq stage 1=runs/fsq_shapes/final"   # extra rows, any tokenizer

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
from vidgen.metrics.adherence import AttributeScorer, adherence
from vidgen.tokenizers import load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

TOKENIZERS = {"fsq (masked, autoregressive)": "shapes-masked/vqvae", "vae (flow)": "shapes-flow/vae"}


def score(scorer, videos, expected) -> dict:
    """The scorer's adherence and motion confusions, and beside them the colour+motion of the silhouette test alone
    (the scorer before its turn test)."""
    detected = [scorer(v) for v in videos]
    result = adherence(detected, expected)
    confusions = collections.Counter(f"{e['motion']} -> {d.motion}" for d, e in zip(detected, expected)
                                     if d.motion != e["motion"])
    strict = scorer.silhouette_only()
    return {**result, "motion_confusions": dict(confusions.most_common()),
            "color_motion_silhouette_only": adherence([strict(v) for v in videos], expected)["color_motion"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--pretrained", default="pretrained", help="folder of the shipped pipelines ('' to skip them)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokenizer", action="append", default=[], metavar="LABEL=FOLDER",
                        help="also score this saved tokenizer's round trip (repeatable)")
    parser.add_argument("--out", default="docs/results/tokenizer_ceiling.json")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.tokenizer):
        parser.error("--tokenizer takes LABEL=FOLDER")
    torch.set_num_threads(args.threads)
    data = ShapesDataset("test", num_frames=17, size=64, num_samples=args.clips, seed=7)
    items = [data[i] for i in range(len(data))]
    x = torch.stack([it["video"] for it in items])
    expected = [{k: it[k] for k in ("color", "motion", "shape")} for it in items]
    scorer = AttributeScorer()
    rows = {"real clips": score(scorer, x, expected)}
    extra = dict(item.split("=", 1) for item in args.tokenizer)
    shipped = {name: Path(args.pretrained) / folder for name, folder in TOKENIZERS.items()} if args.pretrained else {}
    folders = {**shipped, **extra}
    for name, folder in folders.items():
        recon = reconstruct(load_tokenizer(folder), x, batch=16, chunk_frames=None)[0]
        rows[name] = score(scorer, recon, expected)
    for name, r in rows.items():
        print(f"{name:30s} colour {r['color']:.1%}  motion {r['motion']:.1%}  colour+motion {r['color_motion']:.1%}  "
              f"(silhouette test only {r['color_motion_silhouette_only']:.1%})  {r['motion_confusions']}")
    write_result(args.out, {"clips": len(x), "split": "test (held-out colour x motion pairs)", "rows": rows},
                 threads=args.threads)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

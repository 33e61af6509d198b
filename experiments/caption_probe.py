"""Does a generator know what it fails to draw? Its own loss as a classifier of real clips (a diffusion classifier).

    python experiments/caption_probe.py   # shipped flow pipeline, motion words -> experiments/results/caption_probe_flow.json
    python experiments/caption_probe.py --attribute shape --pretrained /tmp/candidate

A prompt the generator gets wrong may name something it never learned, or something it learned and cannot draw.
For real training-split shapes clips, the flow transformer's denoising error is measured under the clip's own
caption and under that caption with its motion (or shape) phrase replaced by every other one: same noise, same noise
levels, same clip for every variant. The caption with the lowest error is the model's guess. A class it guesses right
on real clips but misses when sampling is a sampling / drawing failure, not a conditioning one.

Also reported per noise level: how much worse the best wrong caption explains the clip than the right one
(relative), which says at which noise levels the model uses the word.
"""
from __future__ import annotations

import argparse
import collections
import sys
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from vidgen.data import ShapesDataset
from vidgen.data.shapes import MOTIONS, SHAPES, ShapeAttributes
from vidgen.demo.run import load_pipelines
from vidgen.generators import FlowVideoTransformer
from vidgen.generators.flow import flow_matching_pair

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))  # eval/results.py
from results import write_result  # noqa: E402

CLASSES = {"motion": MOTIONS, "shape": SHAPES}


def variants(attributes: ShapeAttributes, attribute: str) -> tuple[list[str], list[str]]:
    """(class names, the clip's caption rewritten for each class); the clip's own class is among them. A rotating
    clip is never offered "circle" (the data has no rotating circles: that caption would be false either way)."""
    names = [c for c in CLASSES[attribute] if not (c == "circle" and attributes.motion == "rotate")]
    return names, [replace(attributes, **{attribute: c}).caption for c in names]


@torch.no_grad()
def denoising_errors(pipe, video: torch.Tensor, captions: list[str], levels: list[float],
                     generator: torch.Generator) -> torch.Tensor:
    """(len(captions), len(levels)) mean squared flow-matching error of the clip under each caption."""
    model: FlowVideoTransformer = pipe.transformer
    x0 = model.encode_videos(pipe.vae, video[None].to(model.device, model.dtype))  # (1, C, t, h, w)
    noise = torch.randn(len(levels), *x0.shape[1:], generator=generator).to(x0)
    xt, target, timestep = flow_matching_pair(x0, noise, torch.tensor(levels, dtype=x0.dtype))  # (L, C, t, h, w)
    cond = pipe.encode_prompt(captions)[0]
    errors = []
    for i in range(len(captions)):  # one caption per pass keeps the batch at len(levels) clips
        pred = model(xt, timestep, cond.index(slice(i, i + 1)).repeat(len(levels))).sample
        errors.append(((pred.float() - target.float()) ** 2).flatten(1).mean(1))
    return torch.stack(errors)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", default="pretrained", help="folder holding shapes-flow/")
    parser.add_argument("--attribute", choices=list(CLASSES), default="motion")
    parser.add_argument("--clips-per-class", type=int, default=16)
    parser.add_argument("--levels", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
                        help="noise levels s (x_s = (1 - s) x0 + s noise), comma-separated, each in (0, 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="default experiments/results/caption_probe_flow[_shape].json")
    args = parser.parse_args(argv)
    levels = [float(v) for v in args.levels.split(",")]
    if not levels or not all(0 < v < 1 for v in levels):
        parser.error(f"--levels must be numbers in (0, 1), got {args.levels!r}")
    if args.clips_per_class < 1:
        parser.error(f"--clips-per-class must be >= 1, got {args.clips_per_class}")
    torch.set_num_threads(args.threads)
    pipe = load_pipelines(Path(args.pretrained), ["flow"])["flow"]
    if pipe.transformer.config.prediction_type != "flow":
        parser.error("the probe measures flow-matching error; this transformer predicts "
                     f"{pipe.transformer.config.prediction_type!r}")
    pipe.transformer.eval()

    data = ShapesDataset("train", num_frames=17, size=64, num_samples=100_000, seed=7)  # not the training clips
    wanted = collections.Counter({c: args.clips_per_class for c in CLASSES[args.attribute]})
    confusion: dict = collections.defaultdict(collections.Counter)
    gap = collections.defaultdict(lambda: torch.zeros(len(levels)))
    g = torch.Generator().manual_seed(0)
    total = sum(wanted.values())
    with tqdm(total=total, desc="clips", dynamic_ncols=True) as bar:
        for index in range(len(data)):
            if not +wanted:
                break
            attributes = data.attributes(index)
            own = getattr(attributes, args.attribute)
            if wanted[own] <= 0:
                continue
            wanted[own] -= 1
            names, captions = variants(attributes, args.attribute)
            errors = denoising_errors(pipe, data[index]["video"], captions, levels, g)  # (classes, levels)
            confusion[own][names[int(errors.mean(1).argmin())]] += 1
            k = names.index(own)
            wrong = errors.index_fill(0, torch.tensor([k]), float("inf")).min(0).values  # best wrong caption
            gap[own] += (wrong - errors[k]) / errors[k] / args.clips_per_class
            bar.update()
    classes = list(CLASSES[args.attribute])
    accuracy = {c: confusion[c][c] / max(1, sum(confusion[c].values())) for c in classes}
    print(f"{args.attribute} chosen by the flow model's loss on real clips ({args.clips_per_class} per class):")
    for c in classes:
        row = ", ".join(f"{k} {v}" for k, v in confusion[c].most_common())
        print(f"  {c:>9}: {accuracy[c]:6.1%}   [{row}]")
    print("relative error gap, best wrong caption vs right one, per noise level s:")
    print("  " + " ".join(f"{'s=' + format(s, 'g'):>7}" for s in levels))
    for c in classes:
        print(f"  {c:>9} " + " ".join(f"{v:7.3f}" for v in gap[c].tolist()))
    suffix = "" if args.attribute == "motion" else f"_{args.attribute}"
    out = args.out or f"experiments/results/caption_probe_flow{suffix}.json"
    write_result(out, {"pretrained": str(args.pretrained), "attribute": args.attribute,
                       "clips_per_class": args.clips_per_class, "levels": levels, "accuracy": accuracy,
                       "confusion": {c: dict(confusion[c]) for c in classes},
                       "relative_gap_by_level": {c: gap[c].tolist() for c in classes}}, threads=args.threads)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does a flow pipeline draw shapes leaving the frame? A look at a teacher for the causal stream's Self-Forcing++
(experiments/configs/generators/flow_shapes_wrap_teacher.yaml), beside the shipped shapes-flow and the training clips.

For the first tuning prompt of each translation (left, right, up, down) x ``--seeds``, one 17-frame clip at the
folder's own sampling settings; per clip, whether some frame shows the shape at the frame's edge (a foreground pixel in
the outer pixel ring) or not at all (under 1 % foreground, as in experiments/causal_stream_probe.py). The same measure
on ``ShapesDataset`` clips of those motions, with ``wrap`` off and on, says what each training set shows.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/flow_exit_look.py --folder wrap=runs/wrap_teacher/shapes-flow

Writes ``experiments/results/flow_exit_look_<name>.json`` and ``.png`` (seeds 0-3 of each motion, per folder).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.results import write_result  # noqa: E402
from experiments.causal_ship_rule import prompts_by_motion  # noqa: E402
from experiments.causal_stream_probe import PRESENT, as_video, foreground, save_image  # noqa: E402

TRANSLATIONS = ("left", "right", "up", "down")


def at_edge(frames: np.ndarray) -> dict:
    """``frames`` (T, H, W, 3) in [0, 1]: per frame, whether the shape is at the edge or absent."""
    fg = foreground(frames)
    ring = fg[:, 0].any(1) | fg[:, -1].any(1) | fg[:, :, 0].any(1) | fg[:, :, -1].any(1)
    absent = fg.mean((1, 2)) < PRESENT
    return {"frames_at_edge": int(ring.sum()), "frames_absent": int(absent.sum()),
            "exits": bool((ring | absent).any())}


def data_share(wrap: bool, n: int) -> float:
    """Share of the first ``n`` translating training clips (17 frames, 64 px) that show an exit."""
    from vidgen.data.shapes import ShapesDataset
    data, hits, seen, i = ShapesDataset("train", num_frames=17, size=64, wrap=wrap), 0, 0, 0
    while seen < n:
        item = data[i]
        i += 1
        if item["motion"] not in TRANSLATIONS:
            continue
        frames = ((item["video"].permute(1, 2, 3, 0).numpy() + 1) / 2).astype(np.float32)
        hits += at_edge(frames)["exits"]
        seen += 1
    return round(hits / n, 4)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", action="append", default=[], metavar="NAME=FOLDER",
                        help="a flow pipeline folder (shapes-flow is always read first)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from vidgen.demo.prompts import tuning_prompts
    from vidgen.io.images import contact_sheet
    from vidgen.pipelines import load_pipeline
    prompts = prompts_by_motion(tuning_prompts(192))
    folders = [("shapes-flow", "pretrained/shapes-flow"), *(f.split("=", 1) for f in args.folder)]
    result = {"data_share_with_exits": {"wrap_false": data_share(False, 256), "wrap_true": data_share(True, 256)},
              "pipelines": {}}
    rows, labels, weights = [], [], []
    for name, folder in folders:
        pipe = load_pipeline(folder, dtype="fp32")
        pipe.set_progress_bar_config(disable=True)
        weights += sorted((Path(folder) / "transformer").glob("*.safetensors"))
        clips = []
        for motion in TRANSLATIONS:
            for seed in range(args.seeds):
                out = pipe(prompt=prompts[motion].caption, generator=torch.Generator().manual_seed(seed),
                           output_type="np").frames[0].astype(np.float32)  # (T, H, W, 3) in [0, 1]
                clips.append({"motion": motion, "seed": seed, **at_edge(out)})
                if seed < 4:
                    rows.append(as_video(out))
                    labels.append(f"{name} {motion} seed {seed}: {'exit' if clips[-1]['exits'] else '-'}")
        share = round(float(np.mean([c["exits"] for c in clips])), 4)
        result["pipelines"][name] = {"folder": folder, "share_with_exits": share, "clips": clips}
        print(name, "share of clips with an exit:", share, flush=True)
    out = ROOT / "experiments" / "results" / f"flow_exit_look_{args.name}.json"
    write_result(out, result, command=" ".join(["python", "experiments/flow_exit_look.py", *(argv or sys.argv[1:])]),
                 weights=weights, precision="fp32", threads=args.threads)
    save_image(out.with_suffix(".png"), contact_sheet(rows, labels, frames_per_row=17))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A quick look at a causal candidate's long streams (a run's checkpoint, not the ship rule's read): 257-frame streams
of the first tuning prompt of a few motions, at the seeds given (0 by default), fp32, with the ship rule's window
measure, beside a contact sheet. A distilled student (Self-Forcing) samples as its own pipeline does.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/causal_stream_look.py runs/self_forcing_long_shapes/checkpoints/step_00000200 \\
        --name sfpp_step200

Writes ``experiments/results/causal_stream_look_<name>.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.results import write_result  # noqa: E402
from experiments.causal_ship_rule import STREAM_FRAMES, prompts_by_motion, window_rule, with_transformer  # noqa: E402
from experiments.causal_stream_probe import as_video, run, save_image  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("transformer", help="a saved CausalFlowVideoTransformer (a run's final/ or checkpoint)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--motions", default="left,shrink,right,still")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one stream per motion each (one seed "
                                                     "is one draw: its first chunk decides much of a stream)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from vidgen.demo.prompts import tuning_prompts
    from vidgen.io.images import contact_sheet
    from vidgen.pipelines import load_pipeline
    pipe = load_pipeline("pretrained/shapes-causal", dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    pipe = with_transformer(pipe, args.transformer)
    prompts = prompts_by_motion(tuning_prompts(192))
    seeds = [int(s) for s in args.seeds.split(",")]
    streams, rows, labels = [], [], []
    for motion in args.motions.split(","):
        for seed in seeds:
            frames = run(pipe, prompts[motion].caption, STREAM_FRAMES, seed)
            streams.append({"motion": motion, "prompt": prompts[motion].caption, "seed": seed, **window_rule(frames)})
            rows.append(as_video(frames))
            labels.append(f"{motion} seed {seed}: {streams[-1]['min_frames_held_in_a_window']}/17 min, "
                          f"{streams[-1]['windows_passing']:.0%} pass")
            print(streams[-1], flush=True)
    out = ROOT / "experiments" / "results" / f"causal_stream_look_{args.name}.json"
    write_result(out, {"transformer": args.transformer, "stream_frames": STREAM_FRAMES, "streams": streams,
                       "distillation": pipe.transformer.config.distillation},
                 command=" ".join(["python", "experiments/causal_stream_look.py", *(argv or sys.argv[1:])]),
                 weights=sorted(Path(args.transformer).glob("*.safetensors")), precision="fp32", threads=args.threads)
    save_image(out.with_suffix(".png"), contact_sheet(rows, labels, frames_per_row=16))
    return 0


if __name__ == "__main__":
    sys.exit(main())

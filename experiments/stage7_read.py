"""Stage 7's reads by its ship rule (experiments/configs/generators/flow_shapes_stage7.yaml, fixed before its first
step): the EMA weights of a run's checkpoints at every 1000 steps (and its final/), in step order, each on
``tuning_prompts(192)`` (seen pairs, never an evaluation caption) at guidance 3 and 25 steps in fp32, against stage
6's read (``experiments/results/ship_flow_gpu_gpu_192.json``). A checkpoint ships if all hold:

* shape >= 60 %;
* colour+motion no more than 2 points below stage 6's;
* turns (rotating prompts whose motion the scorer reads as rotating, ``sweep_sampling.motion_right``) not fewer
  than stage 6's.

The first that passes ships and the reads stop there; otherwise every read is the curve of shape against steps.
Writes the results file after every read (a stopped run keeps what it read), and beside it the curve as a picture
(``.png``: shape, colour+motion and turns against steps, with the rule's lines and stage 6's values). Rows already in
``--out`` (read with the same prompts and sampling, on an earlier machine) are kept and their steps not read again:
the file is the curve.

    HF_HUB_OFFLINE=1 python experiments/stage7_read.py runs/flow_shapes_stage7 --out experiments/results/stage7_read.json
    python experiments/stage7_read.py --plot-only --out experiments/results/stage7_read.json   # the picture alone
    python experiments/device/run_offline.py experiments/stage7_read.py runs/flow_shapes_stage7 --device cuda ...
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from results import weights_digest, write_result  # noqa: E402  (first: the start load)
sys.path.insert(0, str(ROOT / "experiments"))
from sweep_sampling import motion_right  # noqa: E402  (how stage 6's read counted turns)

import torch  # noqa: E402

from vidgen.demo.prompts import tuning_prompts  # noqa: E402
from vidgen.demo.run import generate, score, shapes_read  # noqa: E402
from vidgen.metrics.adherence import AttributeScorer  # noqa: E402

STAGE6 = ROOT / "experiments" / "results" / "ship_flow_gpu_gpu_192.json"
SHAPE_AT_LEAST, COLOR_MOTION_POINTS, READ_EVERY = 0.60, 0.02, 1000
SAMPLING = dict(guidance_scale=3.0, num_inference_steps=25)


def reference() -> dict:
    """Stage 6's colour+motion, shape and turns on the same prompts and settings (its one row)."""
    row = json.loads(STAGE6.read_text())["rows"][0]
    turned, rotating = map(int, row["motion_right"]["rotate"].split("/"))
    return {"color_motion": row["seen"]["color_motion"], "shape": row["seen"]["shape"], "turned": turned,
            "rotating": rotating}


def checkpoints(run: Path, every: int) -> list[tuple[int, Path]]:
    """(step, folder) of the run's checkpoints at multiples of ``every`` and its final/, in step order."""
    found = []
    for folder in sorted((run / "checkpoints").glob("step_*")):
        step = int(folder.name.split("_")[1])
        if step % every == 0:
            found.append((step, folder))
    if (run / "final" / "config.json").is_file():
        status = json.loads((run / "status.json").read_text()) if (run / "status.json").is_file() else {}
        step = int(status.get("step", found[-1][0] if found else 0))
        found = [f for f in found if f[0] != step] + [(step, run / "final")]
    return sorted(found, key=lambda f: f[0])


def earlier_rows(out: Path, prompts: int, sampling: dict) -> list[dict]:
    """The rows of an earlier results file read with the same prompts and sampling (the curve across machines:
    ``runs/`` is not kept, so each session reads its own checkpoints and adds them to the file)."""
    if not out.is_file():
        return []
    old = json.loads(out.read_text())
    if old.get("prompts") != prompts or old.get("sampling") != sampling:
        raise SystemExit(f"{out}: read with other prompts or sampling ({old.get('prompts')}, {old.get('sampling')}); "
                         "pass another --out")
    return old.get("rows", [])


def read_clips(pipe, scorer, prompts, batch: int, sampling: dict) -> dict:
    """Shape, colour+motion, turns and seconds per video of ``pipe`` on ``prompts``, and what each shape was read as."""
    videos, seconds = generate(pipe, prompts, batch, **sampling)
    detected, result = score(scorer, videos.cpu(), prompts)
    turned, rotating = map(int, motion_right(detected, prompts).get("rotate", "0/0").split("/"))
    return {"shape": result["all"]["shape"], "color_motion": result["all"]["color_motion"], "turned": turned,
            "rotating": rotating, "seconds_per_video": seconds, "shapes": shapes_read(detected, prompts)}


def first_shipping(rows: list[dict]) -> int | None:
    """The step of the first row that ships (None if none does)."""
    return next((r["step"] for r in rows if r["verdict"]["ships"]), None)


def best_read(rows: list[dict], ref: dict) -> dict | None:
    """The row with the highest shape score (the later one on a tie) and how far it is from each check of the rule
    (points of the 192 prompts for shape and colour+motion, prompts for turns; 0 where it passes): the shortfall a
    run that never ships reports."""
    if not rows:
        return None
    best = max(rows, key=lambda r: (r["shape"], r["step"]))
    short = {"shape_points": round(100 * max(0.0, SHAPE_AT_LEAST - best["shape"]), 1),
             "color_motion_points": round(100 * max(0.0, ref["color_motion"] - COLOR_MOTION_POINTS
                                                    - best["color_motion"]), 1),
             "turns": max(0, ref["turned"] - best["turned"])}
    return {"step": best["step"], "shape": best["shape"], "color_motion": best["color_motion"],
            "turned": best["turned"], "ships": judge(best, ref)["ships"], "short_by": short}


def judge(row: dict, ref: dict) -> dict:
    checks = {"shape": row["shape"] >= SHAPE_AT_LEAST,
              "color_motion": row["color_motion"] >= ref["color_motion"] - COLOR_MOTION_POINTS,
              "turns": row["turned"] >= ref["turned"]}
    return {**checks, "ships": all(checks.values())}


def plot(rows: list[dict], ref: dict, path: Path) -> None:
    """The curve: shape and colour+motion (left), turns (right) against steps, the rule's thresholds dashed and stage
    6's values dotted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r["step"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label, colour, need in (("shape", "shape", "tab:blue", SHAPE_AT_LEAST),
                                     ("color_motion", "colour+motion", "tab:orange",
                                      ref["color_motion"] - COLOR_MOTION_POINTS)):
        left.plot(steps, [100 * r[key] for r in rows], "o-", color=colour, label=label)
        left.axhline(100 * need, color=colour, ls="--", lw=1)
        left.axhline(100 * ref[key], color=colour, ls=":", lw=1)
    left.set(xlabel="step", ylabel="% of 192 tuning prompts", ylim=(0, 100), title="dashed: rule; dotted: stage 6")
    left.legend(loc="lower right")
    right.plot(steps, [r["turned"] for r in rows], "o-", color="tab:green")
    right.axhline(ref["turned"], color="tab:green", ls="--", lw=1)
    right.set(xlabel="step", ylabel=f"rotating prompts turned (of {ref['rotating']})", ylim=(0, ref["rotating"]),
              title="dashed: rule (stage 6's)")
    for ax in (left, right):
        ax.set_xlim(0, max(6000, max(steps, default=0)))
        ax.grid(alpha=0.3)
    fig.suptitle("Stage 7 (1x1x1 patches) by its ship rule")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?", help="the stage-7 run folder (its checkpoints/ and final/)")
    parser.add_argument("--plot-only", action="store_true", help="draw --out's curve (.png beside it), read nothing")
    parser.add_argument("--prompts", type=int, default=192)
    parser.add_argument("--every", type=int, default=READ_EVERY, help="read checkpoints at multiples of this step")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=SAMPLING["num_inference_steps"],
                        help="sampling steps (25 is the rule's; fewer only for a dry run)")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "stage7_read.json")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(json.loads(args.out.read_text())["rows"], reference(), args.out.with_suffix(".png"))
        return 0
    if args.run is None:
        parser.error("the run folder is needed (or --plot-only)")
    from vidgen.generators.flow import FlowVideoTransformer
    from vidgen.pipelines import load_pipeline
    from vidgen.training.checkpoint import load_trained
    torch.manual_seed(0)
    ref, prompts, scorer = reference(), tuning_prompts(args.prompts, seed=1), AttributeScorer()
    pipe = load_pipeline(ROOT / "pretrained" / "shapes-flow", dtype="fp32").to(args.device)
    pipe.set_progress_bar_config(disable=True)
    sampling = {**SAMPLING, "num_inference_steps": args.steps}
    rows = earlier_rows(args.out, args.prompts, sampling)
    payload = {"rule": {"shape_at_least": SHAPE_AT_LEAST, "color_motion_points_below_stage6": COLOR_MOTION_POINTS,
                        "turns_at_least_stage6": True}, "stage6": ref,
               "prompts": args.prompts, "prompt_seed": 1, "sampling": sampling, "rows": rows}
    found = checkpoints(args.run, args.every)
    if not found:
        raise SystemExit(f"{args.run}: no checkpoint at a multiple of {args.every} steps and no final/")
    if first_shipping(rows) is not None:
        print(f"step {first_shipping(rows)} ships ({args.out}): nothing more to read")
        return 0
    read = {r["step"] for r in rows}
    for step, folder in found:
        if step in read:
            print(f"step {step:5d}: read before ({args.out})", flush=True)
            continue
        model = load_trained(FlowVideoTransformer, folder).to(args.device)
        pipe.register_modules(transformer=model)
        row = {"step": step, "folder": str(folder), "weights_sha256": weights_digest(folder),
               **read_clips(pipe, scorer, prompts, args.batch, sampling)}
        row["verdict"] = judge(row, ref)
        rows.append(row)
        rows.sort(key=lambda r: r["step"])
        payload["ships"], payload["best"] = first_shipping(rows), best_read(rows, ref)
        write_result(args.out, payload, weights=[ROOT / "pretrained" / "shapes-flow"], precision="fp32")
        plot(rows, ref, args.out.with_suffix(".png"))
        print(f"step {step:5d}: shape {row['shape']:.1%}  colour+motion {row['color_motion']:.1%}  turns "
              f"{row['turned']} of {row['rotating']}  {'SHIPS' if row['verdict']['ships'] else 'does not ship'}",
              flush=True)
        if row["verdict"]["ships"]:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

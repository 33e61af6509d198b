#!/usr/bin/env python
"""Same recipe, same budget: vidgen's CausalVAE vs diffusers' AutoencoderKLCogVideoX, trained by one script.

Both architectures are matched (4x8x8, 16 latent channels, widths 64,128,256,256) and trained by
``tokenizers/train_tokenizer.py`` with identical configs (``experiments/configs/tokenizers/compare/``: data, crops,
batches, losses, optimizer, schedule and steps; only ``model.kind`` differs), one after the other on the same machine.
Then both are evaluated on the same held-out NaturalClips with the same PSNR / SSIM code.

    python experiments/compare_vae_recipe.py [--steps 300] [--threads 1] [--clips 32] [--out outputs/compare_vae_recipe]

Prints PSNR at every in-loop evaluation step (equal steps) beside the time per training step of each run.
``--equal-time`` then trains vidgen once more, from scratch with the same recipe, for as many steps as fit in
CogVideoX's training time (equal budget; the cosine schedule is stretched to that step count).
``--skip-training --at-step N`` compares the two existing runs at their step-N checkpoints (for runs stopped early).
``--cogvideox-lrs 2.5e-4 5e-4 1e-3`` gives the anchor the best of a learning-rate sweep at the same step budget
(vidgen keeps the recipe's 5e-4); every run of the sweep is reported. Results: ``docs/results/compare_vae_recipe.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from results import write_result  # noqa: E402  (imported first: the run's start load)

RUNS = {"vidgen_base": "experiments/configs/tokenizers/compare/recipe_vidgen_base.yaml",
        "cogvideox": "experiments/configs/tokenizers/compare/recipe_cogvideox.yaml"}


def train(name: str, config: str, steps: int, threads: int, run_root: Path, extra: tuple = ()) -> float:
    run_dir = run_root / name
    cmd = [sys.executable, str(ROOT / "tokenizers/train_tokenizer.py"), "--config", str(ROOT / config),
           f"steps={steps}", f"threads={threads}", f"run_dir={run_dir}", f"eval_every={max(100, steps // 6)}", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t0


def _recipe_lr(config: str) -> float:
    import yaml
    return float(yaml.safe_load((ROOT / config).read_text())["optim"]["lr"])


def eval_psnr_curve(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["eval_psnr"] for r in rows if "eval_psnr" in r}


def seconds_per_step(run_dir: Path) -> float:
    """Median training-step time from the logged throughput (excludes evaluation and checkpoint time)."""
    cfg = json.loads((run_dir / "config.yaml").read_text())  # the loop writes the resolved config as JSON
    data = cfg["data"]
    frames = data["video_batch"] * data["num_frames"] + data["image_batch"]
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    times = sorted(frames * r["processes"] / r["frames_per_s"] for r in rows if r.get("frames_per_s"))
    return times[len(times) // 2]


def final_metrics(run_dir: Path, clips: int, threads: int, step: int | None = None) -> dict:
    import torch

    from vidgen.data import NaturalClips
    from vidgen.metrics.reconstruction import psnr, ssim
    from vidgen.tokenizers.loading import load_tokenizer
    from vidgen.training.reference_models import CogVideoXReferenceVAE
    from vidgen.training.samples import reconstruct_mode

    torch.set_num_threads(threads)
    final = run_dir / "final" if step is None else run_dir / "checkpoints" / f"step_{step:08d}"
    is_anchor = json.loads((final / "config.json").read_text())["_class_name"] == CogVideoXReferenceVAE.__name__
    model = CogVideoXReferenceVAE.from_pretrained(final).eval() if is_anchor else load_tokenizer(final)
    data = NaturalClips("test", num_frames=17, size=64, num_clips=clips)
    videos = torch.stack([data[i]["video"] for i in range(len(data))])
    recon = reconstruct_mode(model, videos)
    return {"psnr": psnr(videos, recon).mean().item(), "ssim": ssim(videos, recon).mean().item(),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "sec_per_step": seconds_per_step(run_dir)}


def readme_table(results: dict) -> str:
    """The README tables (``<!-- table:vae_recipe -->``) from ``docs/results/compare_vae_recipe.json``."""
    a, b = results["vidgen_base"], results["cogvideox"]
    lines = ["| step | vidgen `base` PSNR (16 clips) | CogVideoX PSNR (16 clips, best lr) |", "|---|---|---|"]
    for step in sorted(set(a["curve"]) & set(b["curve"]), key=int):
        lines.append(f"| {step} | {a['curve'][step]:.2f} | {b['curve'][step]:.2f} |")
    lines += ["", f"| run | lr | params | steps | PSNR / SSIM ({results['clips']} held-out clips) | s / training step |",
              "|---|---|---|---|---|---|"]
    sweep = b.get("best_of_lr_sweep", {})
    for name, r in results.items():
        if not isinstance(r, dict) or "psnr" not in r or (name == "cogvideox" and sweep):
            continue  # with a sweep, the "cogvideox" entry repeats its best run
        lr = r["lr"]
        best = " (best)" if sweep and name in sweep and sweep[name]["lr"] == b["lr"] else ""
        bold = "**" if name == "vidgen_base" else ""
        lines.append(f"| {name}{best} | {lr:g} | {r['params_m']:.1f} M | {r.get('steps', results['steps'])} | "
                     f"{bold}{r['psnr']:.2f} dB{bold} / {r['ssim']:.3f} | {r['sec_per_step']:.2f} |")
    ratio = b["sec_per_step"] / a["sec_per_step"]
    lines += ["", f"{results['threads']} thread(s) per run; s / training step is the median over the run's logged "
              f"intervals (robust to the few that held a pause); ratio CogVideoX / vidgen {ratio:.1f}x. "
              f"{results['date'][:10]}, load average "
              f"{results['loadavg_start'][0]:.2f} at the evaluation's start; "
              f"`{results['command'].replace('eval/compare_vae_recipe.py', 'experiments/compare_vae_recipe.py')}` "
              f"(the script's current path; the file records the command as run)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clips", type=int, default=32, help="held-out clips for the final evaluation")
    ap.add_argument("--run-root", default="runs/compare")
    ap.add_argument("--out", default="outputs/compare_vae_recipe")
    ap.add_argument("--skip-training", action="store_true", help="only evaluate existing runs")
    ap.add_argument("--equal-time", action="store_true",
                    help="also train vidgen for CogVideoX's wall time; with --skip-training the two equal-step "
                         "runs and their wall times are read from an earlier run")
    ap.add_argument("--cogvideox-lrs", type=float, nargs="+", default=None,
                    help="learning rates for the anchor (best final PSNR is compared); default: the recipe's")
    ap.add_argument("--results", default="docs/results/compare_vae_recipe.json", help="results file ('' to skip)")
    ap.add_argument("--at-step", type=int, default=None,
                    help="with --skip-training: compare both runs at this checkpoint (for runs stopped early)")
    args = ap.parse_args()
    if args.at_step is not None and not args.skip_training:
        ap.error("--at-step compares existing checkpoints: use it with --skip-training")
    run_root, out = Path(args.run_root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, sweep = {}, {}
    jobs = [("vidgen_base", RUNS["vidgen_base"], ())]
    if args.cogvideox_lrs:  # one run per learning rate; the best final PSNR is the anchor's entry
        jobs += [(f"cogvideox_lr{lr:g}", RUNS["cogvideox"], (f"optim.lr={lr}",)) for lr in args.cogvideox_lrs]
    else:
        jobs.append(("cogvideox", RUNS["cogvideox"], ()))
    for name, config, extra in jobs:
        wall = None if args.skip_training else train(name, config, args.steps, args.threads, run_root, extra)
        curve = {k: v for k, v in eval_psnr_curve(run_root / name).items() if k <= (args.at_step or k)}
        lr = float(extra[0].split("=")[1]) if extra else _recipe_lr(config)
        results[name] = {"train_wall_s": wall, "curve": curve, "lr": lr,
                         **final_metrics(run_root / name, args.clips, args.threads, args.at_step)}
        if extra:
            sweep[name] = {"lr": lr, "psnr": results[name]["psnr"]}
        print(name, json.dumps(results[name]), flush=True)
    if sweep:
        best = max(sweep, key=lambda n: sweep[n]["psnr"])
        results["cogvideox"] = {**results[best], "best_of_lr_sweep": sweep, "lr": sweep[best]["lr"]}
    a, b = results["vidgen_base"], results["cogvideox"]
    if args.equal_time:
        # as many vidgen steps as CogVideoX's training steps took, from the logged per-step times
        steps = int((args.at_step or args.steps) * b["sec_per_step"] / a["sec_per_step"])
        name = "vidgen_base_equal_time"
        done = (run_root / name / "final").exists()  # --skip-training skips only the two equal-step runs
        wall = None if done else train(name, RUNS["vidgen_base"], steps, args.threads, run_root)
        results[name] = {"train_wall_s": wall, "steps": steps, "curve": eval_psnr_curve(run_root / name),
                         "lr": _recipe_lr(RUNS["vidgen_base"]),
                         **final_metrics(run_root / name, args.clips, args.threads)}
        print(name, json.dumps(results[name]), flush=True)
    summary = {"steps": args.at_step or args.steps, "threads": args.threads, "clips": args.clips, **results}
    record = json.loads(write_result(args.results or out / "results.json", summary, threads=args.threads).read_text())
    table = readme_table(record)
    print(table)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(record, indent=2))  # the same record as the results file
    if args.results:
        print(f"wrote {args.results}")

if __name__ == "__main__":
    main()

"""Does bf16 training reach the loss fp32 training reaches? Flow and masked generators, 1,000 steps each precision.

Each generator's shipped shapes config is trained from scratch (no ``init_from``) twice with everything equal but
``precision``: same seed, same data order, the same per-step randomness (mask ratios, noise levels), batch 16 of
320-token clips (5x8x8 latent grid of 17x64x64 videos). The target (issue 32): the mean loss of the last 100 steps in
bf16 within 2 % of fp32's. Steady-state tokens/s of each run are recorded too (the first step, which includes
warm-up, is excluded by the training loop), but this is a numerics check, not the speed benchmark: the speed
targets are measured by ``eval/bench_generators.py`` against GEMM ceilings.

Runs are resumable (checkpoints every 250 steps under ``--run-root``); a finished run is not repeated.

    python eval/bf16_training_parity.py                   # -> docs/results/bf16_training_parity.json
    python eval/bf16_training_parity.py --steps 40 --tail 10 --clips 64 --out /tmp/parity.json   # smoke run
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

# generator -> (shipped training config, tokenizer folder it trains on, preset overrides for 320 tokens / batch 16)
RUNS = {
    "flow": ("configs/shapes-flow/stage2.yaml", "pretrained/shapes-flow/vae", []),
    "masked": ("configs/shapes-masked/stage1.yaml", "pretrained/shapes-masked/vqvae", []),
}


def train(generator: str, precision: str, args) -> Path:
    config, tokenizer, extra = RUNS[generator]
    run_dir = Path(args.run_root) / f"{generator}_{precision}"
    if (run_dir / "final").exists():
        return run_dir
    cmd = [sys.executable, str(ROOT / "pipelines/train_generator.py"), "--config", str(ROOT / config),
           f"run_dir={run_dir}", f"video_tokenizer={ROOT / tokenizer}", "init_from=", f"steps={args.steps}",
           f"precision={precision}", f"threads={args.threads}", "sample_every=0", "log_every=1", "ckpt_every=250",
           "data.batch=16", f"data.num_clips={args.clips}", f"data.cache_dir={args.cache_dir}",
           "optim.warmup_steps=100", *extra]
    print(" ".join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"{generator} {precision}: {time.time() - start:.0f} s", flush=True)
    return run_dir


def read_log(run_dir: Path) -> tuple[dict[int, float], list[float]]:
    """(step -> loss, steady tokens/s values) from ``log.jsonl`` (a resumed run's later lines win)."""
    losses, speeds = {}, []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if isinstance(rec, dict) and "loss" in rec and "step" in rec:
            losses[rec["step"]] = rec["loss"]
            if rec["step"] > 1:
                speeds.append(rec["tokens_per_s"])
    return losses, speeds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--tail", type=int, default=100, help="mean loss over the last N steps")
    parser.add_argument("--clips", type=int, default=2048, help="shapes clips encoded for training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run-root", default="runs/bf16_parity")
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache/vidgen/encoded"), help="pre-encoded clips")
    parser.add_argument("--tolerance", type=float, default=0.02, help="target: |bf16 - fp32| / fp32 of the tail mean")
    parser.add_argument("--out", default=str(ROOT / "docs/results/bf16_training_parity.json"))
    args = parser.parse_args(argv)

    results = {}
    for generator in args.generators:
        row = {}
        for precision in ("fp32", "bf16"):
            losses, speeds = read_log(train(generator, precision, args))
            tail = [losses[s] for s in sorted(losses)[-args.tail:]]
            row[precision] = {"tail_mean_loss": statistics.fmean(tail), "tail_std_loss": statistics.stdev(tail),
                              "first_loss": losses[min(losses)], "steps": max(losses),
                              "tokens_per_s_median": statistics.median(speeds) if speeds else None}
        a, b = row["fp32"]["tail_mean_loss"], row["bf16"]["tail_mean_loss"]
        row["relative_difference"] = (b - a) / a
        row["within_tolerance"] = abs(b - a) / a <= args.tolerance
        # the spread of one step's loss is large (random mask ratio / noise level): the standard error of the tail
        # mean says how much of the difference the step-to-step noise alone explains
        row["standard_error_of_difference"] = (row["fp32"]["tail_std_loss"] ** 2 / len(tail)
                                               + row["bf16"]["tail_std_loss"] ** 2 / len(tail)) ** 0.5 / a
        results[generator] = row
        print(f"{generator}: last-{args.tail} mean loss fp32 {a:.4f}, bf16 {b:.4f} "
              f"({100 * row['relative_difference']:+.2f} %, target within {100 * args.tolerance:.0f} %: "
              f"{'met' if row['within_tolerance'] else 'NOT met'}); tokens/s fp32 "
              f"{row['fp32']['tokens_per_s_median']:.0f}, bf16 {row['bf16']['tokens_per_s_median']:.0f}", flush=True)
    write_result(args.out, {"steps": args.steps, "tail": args.tail, "clips": args.clips, "batch": 16,
                            "tokens_per_clip": 320, "tolerance": args.tolerance, "generators": results},
                 threads=args.threads)
    return 0


def readme_table(results: dict) -> str:
    """The README table (``<!-- table:bf16_parity -->``) from ``docs/results/bf16_training_parity.json``."""
    lines = ["| generator | fp32: mean loss, last 100 steps | bf16 | difference | target (within 2 %) | tokens/s fp32 / bf16 "
             "(median of logged steps) |", "|---|---|---|---|---|---|"]
    for name, row in results["generators"].items():
        a, b = row["fp32"], row["bf16"]
        lines.append(f"| {name} | {a['tail_mean_loss']:.4f} | {b['tail_mean_loss']:.4f} | "
                     f"{100 * row['relative_difference']:+.2f} % (± {100 * row['standard_error_of_difference']:.2f} % "
                     f"one s.e.) | {'met' if row['within_tolerance'] else '**not met**'} | "
                     f"{a['tokens_per_s_median']:.0f} / {b['tokens_per_s_median']:.0f} |")
    lines += ["", f"{results['steps']} steps from scratch, batch {results['batch']} of {results['tokens_per_clip']}-token "
              f"clips, same seed, data order and per-step randomness in both precisions; {results['threads']} threads, "
              f"{results['date'][:10]}; `{results['command']}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

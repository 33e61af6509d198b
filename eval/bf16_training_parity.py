"""Does bf16 training reach the loss fp32 training reaches? Flow and masked generators, 1,000 steps each precision.

The recipe each shipped pipeline's generator ends with (``RUNS``: its last stage's config, on the tokenizer the
shipped folder carries) is trained from scratch (no ``init_from``) twice with everything equal but ``precision``: same
seed, same data order, the same per-step randomness (mask ratios, noise levels), batch ``--batch`` (16). The token
counts are not written down here: each run's token grid is read from its own log (the grid of the clips it encoded)
and its batch from the configuration it saved, so the results file says what was trained. The target: the mean loss
of the last 100 steps in bf16 within 2 % of fp32's. Steady-state tokens/s of each run are recorded too (the first step, which includes
warm-up, is excluded by the training loop), but this is a numerics check, not the speed benchmark: the speed
targets are measured by ``eval/bench_generators.py`` against GEMM ceilings.

Runs are resumable (checkpoints every 250 steps under ``--run-root``); a finished run is not repeated.

    python eval/bf16_training_parity.py                   # -> docs/results/bf16_training_parity.json
    python eval/bf16_training_parity.py --steps 40 --tail 10 --clips 64 --out /tmp/parity.json   # smoke run
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

# generator -> (the last stage of the shipped recipe, the tokenizer folder the shipped pipeline carries, overrides)
RUNS = {
    "flow": ("configs/shapes-flow/stage8.yaml", "pretrained/shapes-flow/vae", ["data.encode_batch=32"]),
    "masked": ("configs/shapes-masked/stage3.yaml", "pretrained/shapes-masked/vqvae", []),
}
GRID = re.compile(r"token grid \((\d+), (\d+), (\d+)\)")


def train(generator: str, precision: str, args) -> Path:
    config, tokenizer, extra = RUNS[generator]
    run_dir = Path(args.run_root) / f"{generator}_{precision}"
    if (run_dir / "final").exists():
        return run_dir
    cmd = [sys.executable, str(ROOT / "pipelines/train_generator.py"), "--config", str(ROOT / config),
           f"run_dir={run_dir}", f"video_tokenizer={ROOT / tokenizer}", "init_from=", f"steps={args.steps}",
           f"precision={precision}", f"threads={args.threads}", "sample_every=0", "log_every=1", "ckpt_every=250",
           f"data.batch={args.batch}", f"data.num_clips={args.clips}", f"data.cache_dir={args.cache_dir}",
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
            if rec["step"] > 1 and rec.get("tokens_per_s") is not None:  # the first timed step of a segment has none
                speeds.append(rec["tokens_per_s"])
    return losses, speeds


def measured_tokens(run_dir: Path) -> dict:
    """What a run trained on, read from the run itself: the token grid of its encoded clips (its log), the batch and
    the transformer's patch (the configuration it saved), and from them tokens per clip and per batch."""
    grid = None
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        found = GRID.search(str(json.loads(line).get("info", "")))
        grid = [int(n) for n in found.groups()] if found else grid
    if grid is None:
        raise SystemExit(f"{run_dir}/log.jsonl names no token grid: not a generator run")
    config = json.loads((run_dir / "config.yaml").read_text())
    patch = (config["model"].get("overrides") or {}).get("patch_size", [1, 1, 1])
    tokens = math.prod(grid)
    return {"token_grid": grid, "tokens_per_clip": tokens, "patch_size": patch,
            "transformer_positions_per_clip": tokens // math.prod(patch), "batch": config["data"]["batch"],
            "tokens_per_batch": tokens * config["data"]["batch"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--tail", type=int, default=100, help="mean loss over the last N steps")
    parser.add_argument("--clips", type=int, default=2048, help="shapes clips encoded for training")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run-root", default="runs/bf16_parity")
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache/vidgen/encoded"), help="pre-encoded clips")
    parser.add_argument("--tolerance", type=float, default=0.02, help="target: |bf16 - fp32| / fp32 of the tail mean")
    parser.add_argument("--out", default=str(ROOT / "docs/results/bf16_training_parity.json"))
    args = parser.parse_args(argv)

    results = {}
    for generator in args.generators:
        row = {"config": RUNS[generator][0], "tokenizer": RUNS[generator][1]}
        for precision in ("fp32", "bf16"):
            run_dir = train(generator, precision, args)
            losses, speeds = read_log(run_dir)
            tail = [losses[s] for s in sorted(losses)[-args.tail:]]
            row[precision] = {"tail_mean_loss": statistics.fmean(tail), "tail_std_loss": statistics.stdev(tail),
                              "first_loss": losses[min(losses)], "steps": max(losses),
                              "tokens_per_s_median": statistics.median(speeds) if speeds else None,
                              **measured_tokens(run_dir)}
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
    write_result(args.out, {"steps": args.steps, "tail": args.tail, "clips": args.clips,
                            "tolerance": args.tolerance, "generators": results}, threads=args.threads)
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
    if "stale" in results:  # a file written before the shipped recipes, kept with what it measured
        shipped = ", ".join(f"{name} `{config}`" for name, (config, _, _) in RUNS.items())
        trained = (f"Batch {results['batch']} of {results['tokens_per_clip']}-token clips. **Not the shipped "
                   f"recipes:** {results['stale']} The shipped recipes end with {shipped}; "
                   "`python eval/bf16_training_parity.py` trains them.")
    else:
        trained = "; ".join(f"{name}: `{row['config']}`, batch {row['fp32']['batch']} of "
                            f"{row['fp32']['tokens_per_clip']:,}-token clips ({row['fp32']['transformer_positions_per_clip']} "
                            "transformer positions), as the runs logged" for name, row in results["generators"].items()) + "."
    lines += ["", f"{results['steps']} steps from scratch, same seed, data order and per-step randomness in both "
              f"precisions; {results['threads']} threads, {results['date'][:10]}; `{results['command']}`. {trained}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

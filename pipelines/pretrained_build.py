"""Building ``pretrained/``: train every recipe stage (resumable), then assemble the shipped folders.

``train``: the shapes tokenizers side by side (``tokenizers/train_tokenizer.py``; stage 2 trains the decoder only, so
every latent the generators see is stage 1's), then the masked, flow and autoregressive generators
(``pipelines/train_generator.py``, ``jobs`` at a time, each stage after the one its ``init_from`` names), then the
pipelines that start from a shipped one (the distilled and block-causal ones: ``pipelines/distill.py`` or
``pipelines/train_generator.py`` per stage, after that pipeline is assembled into ``pretrained/``, the folder their
recipes name), then the general tokenizers (``natural-*``). Every run resumes from its last checkpoint, so an interrupted build continues
where it stopped; finished runs (their trainer's ``complete`` marker) are skipped.

``assemble``: one diffusers-layout folder per generator (``model_index.json``, safetensors stored in float16, and
``sampling_config.json`` copied from the recipe), loadable offline with ``vidgen.pipelines.load_pipeline``; the
general tokenizers are shipped by ``tokenizers/ship_tokenizer.py``'s logic. ``assemble_candidate`` builds one
pipeline folder from an experiment's run instead, to compare before it replaces the shipped one.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pretrained_recipes as recipes

from vidgen.training import run_status
from vidgen.training.release import store_half

TOKENIZER_SCRIPT, GENERATOR_SCRIPT = "tokenizers/train_tokenizer.py", "pipelines/train_generator.py"
DISTILL_SCRIPT = "pipelines/distill.py"


def _launch(script: str, config: str, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  start {config} (log: {log.relative_to(recipes.ROOT)})", flush=True)
    return subprocess.Popen([sys.executable, str(recipes.ROOT / script), "--config", str(recipes.ROOT / config)],
                            cwd=recipes.ROOT, stdout=log.open("a"), stderr=subprocess.STDOUT)


def _wait(name: str, proc: subprocess.Popen) -> None:
    if proc.wait() != 0:
        raise recipes.fail(f"training {name} failed (exit {proc.returncode}); see its log")


def stage_script(config: str) -> str:
    """The trainer of a generator recipe's stage: ``pipelines/distill.py`` for a config with a ``distill:`` section."""
    return DISTILL_SCRIPT if "distill" in recipes.config(config) else GENERATOR_SCRIPT


def train_chains(artifacts, script, jobs: int, may_start=lambda artifact, running: True) -> None:
    """Every unfinished stage of ``artifacts``, at most ``jobs`` runs at a time; an artifact's next stage starts
    when its previous one has finished. ``script``: the trainer, or config -> its trainer."""
    pending = [a for a in artifacts if recipes.next_stage(a)]
    running: dict = {}
    while pending or running:
        for artifact in list(pending):
            if len(running) < jobs and may_start(artifact, running):
                pending.remove(artifact)
                config = recipes.next_stage(artifact)
                running[artifact] = _launch(script(config) if callable(script) else script, config,
                                            recipes.run_dir(config).with_suffix(".out"))
                time.sleep(5)
        for artifact in [a for a, p in running.items() if p.poll() is not None]:
            _wait(artifact, running.pop(artifact))
            if recipes.next_stage(artifact):  # a later stage (init_from the one just finished) goes next
                pending.insert(0, artifact)
        time.sleep(2)


def shares_cache_being_written(artifact: str, running: dict) -> bool:
    """True while a running generator on the same tokenizer is still pre-encoding the clips both would encode (its
    trainer marks the run ``training`` once its data is ready): start after it and reuse its cache."""
    by_artifact = {a: n for n, a in recipes.GENERATORS.items()}

    def current(a: str) -> str:  # a's next (or running) stage
        return recipes.next_stage(a) or recipes.stages(a)[-1]

    def stage_tokenizer(a: str) -> str:
        return recipes.tokenizer_of(by_artifact[a], recipes.stages(a).index(current(a)))

    return any(stage_tokenizer(other) == stage_tokenizer(artifact)
               and run_status(recipes.run_dir(current(other))) not in ("training", "complete") for other in running)


def train(jobs: int) -> None:
    """Shapes tokenizers (side by side), generators (``jobs`` at a time), general tokenizers (side by side)."""
    print("stage train: shapes tokenizers", flush=True)
    train_chains(recipes.SHAPES_TOKENIZERS, TOKENIZER_SCRIPT, jobs=len(recipes.SHAPES_TOKENIZERS))
    print("stage train: generators", flush=True)
    train_chains([recipes.GENERATORS[n] for n in recipes.trained()], GENERATOR_SCRIPT, jobs,
                 shares_cache_being_written)
    later = [n for n in recipes.GENERATORS if n not in recipes.trained()]
    if any(recipes.next_stage(recipes.GENERATORS[n]) for n in later):
        print("stage train: pipelines that start from a shipped one (distilled, block-causal; that one assembled "
              "first)", flush=True)
        assemble(recipes.ROOT / "pretrained", sorted({recipes.upstream(n) for n in later}))
        train_chains([recipes.GENERATORS[n] for n in later], stage_script, jobs=1)
    print("stage train: general tokenizers", flush=True)
    train_chains(recipes.NATURAL_TOKENIZERS, TOKENIZER_SCRIPT, jobs=len(recipes.NATURAL_TOKENIZERS))


def tokenizer_folder(name: str, config_path: str) -> Path:
    """The tokenizer folder pipeline ``name`` ships with the generator of ``config_path``: the recipe tokenizer's last
    stage when the config trains on the recipe's tokenizer (its stage-1 run, or the shipped copy when an experiment's
    tokenizer runs are gone: same weights, in float16). An experiment (``--candidate``) on another tokenizer gets its
    own ``video_tokenizer`` folder as it is, so a generator on a new tokenizer can be compared before its tokenizer
    joins the recipe."""
    root, artifact = recipes.ROOT, recipes.GENERATORS[name]
    tok, source = recipes.tokenizer_of(name), recipes.video_tokenizer(config_path)
    shipped_stage = config_path == recipes.stages(artifact)[-1]
    shipped_tokenizer = Path("pretrained") / artifact / recipes.SHAPES_TOKENIZERS[tok]
    if recipes.upstream(name) and Path(source).parts[:2] == ("pretrained", recipes.GENERATORS[recipes.upstream(name)]):
        return root / source  # the tokenizer of the shipped pipeline the recipe starts from, as it trained on
    if source in (recipes.stage1_final(tok), str(shipped_tokenizer)):
        decoder = recipes.run_dir(recipes.stages(tok)[-1]) / "final"
        return root / shipped_tokenizer if not decoder.exists() and not shipped_stage else decoder
    if shipped_stage:
        raise recipes.fail(f"{config_path}: video_tokenizer {source!r} is not the tokenizer of "
                           f"{recipes.CONFIGS}/{tok}/; a shipped stage trains on its recipe's tokenizer")
    if not (root / source / "config.json").is_file():
        raise recipes.fail(f"{config_path}: its video_tokenizer {source!r} is no tokenizer folder (config.json "
                           "missing); train it first, or restore its run's final/ folder there")
    return root / source


def build_pipeline(name: str, config_path: str | None = None, weights: str | Path | None = None):
    """The pipeline of generator ``name`` with its tokenizer's last stage. The generator comes from the run of
    ``config_path`` (default: the recipe's last stage): its ``final`` folder, or ``weights`` (a ``checkpoints/step_*``
    folder of that run gives its EMA weights)."""
    from vidgen.generators import generator_class, make_scheduler
    from vidgen.pipelines import (AutoregressiveVideoPipeline, CausalVideoPipeline, FlowVideoPipeline,
                                  MaskedVideoPipeline)
    from vidgen.tokenizers import load_tokenizer
    from vidgen.training.checkpoint import load_trained
    shipped_config = recipes.stages(recipes.GENERATORS[name])[-1]
    config_path = config_path or shipped_config
    if "distill" in recipes.config(config_path):
        return student_pipeline(config_path, weights)
    generator = recipes.generator(config_path)
    if generator != recipes.generator(recipes.stages(recipes.GENERATORS[name])[0]):
        raise recipes.fail(f"{config_path} trains a {generator} generator, not the {name} pipeline's")
    tokenizer = load_tokenizer(tokenizer_folder(name, config_path))
    model = load_trained(generator_class(generator), weights or recipes.run_dir(config_path) / "final")
    if generator == "causal":
        return CausalVideoPipeline(tokenizer, model, model.default_scheduler())
    if name == "masked":
        return MaskedVideoPipeline(tokenizer, model, make_scheduler(model))
    if name == "flow":
        scheduler = model.default_scheduler()
        return FlowVideoPipeline(tokenizer, model,
                                 type(scheduler).from_config(scheduler.config, **recipes.FLOW_SCHEDULER))
    return AutoregressiveVideoPipeline(tokenizer, model)


def student_pipeline(config_path: str, weights: str | Path | None = None):
    """A distilled pipeline: the teacher folder that ``config_path`` (a ``pipelines/distill.py`` config) names, with
    the student of its run (``final/``, or ``weights``: a checkpoint's EMA weights) as its transformer."""
    from vidgen.pipelines import load_pipeline
    from vidgen.pipelines.loading import student_class, with_student
    from vidgen.training.checkpoint import load_trained
    teacher = load_pipeline(recipes.ROOT / recipes.config(config_path)["distill"]["teacher"], dtype="fp32")
    folder = weights or recipes.run_dir(config_path) / "final"
    return with_student(teacher, load_trained(student_class(folder), folder))


def save(name: str, pipe, folder: Path) -> None:
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.copyfile(recipes.ROOT / recipes.CONFIGS / recipes.GENERATORS[name] / "sampling_config.json",
                    folder / "sampling_config.json")
    store_half(folder)  # loading upcasts to float32; the evaluation runs on these stored weights


def assemble(out: Path, names: list[str] | None = None, stages_of=None) -> None:
    """Every pipeline folder and general tokenizer under ``out``; with ``names``, only those pipelines (the other
    folders stay as they are, e.g. when one pipeline is replaced and the others' runs are gone). ``stages_of``:
    artifact -> the training stages its card lists (``pretrained_cards.recipe_stages``; default: the run's own,
    followed back through ``init_from``); the pipelines' cards are written afterwards (``write_cards``)."""
    for name, artifact in recipes.GENERATORS.items():
        if names is not None and name not in names:
            continue
        folder = out / artifact
        save(name, build_pipeline(name), folder)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"  {folder}: {size / 2**20:.1f} MiB", flush=True)
    if names is not None:
        return
    ship = recipes.ship_tokenizer_script()
    results = recipes.TOKENIZER_RESULTS
    for artifact in recipes.NATURAL_TOKENIZERS:
        ship.ship(recipes.run_dir(recipes.stages(artifact)[-1]) / "final", out / artifact, results,
                  stages=stages_of(artifact) if stages_of else None)
        print(f"  {out / artifact} (its card reads {results.relative_to(recipes.ROOT)}: benchmark a rebuilt "
              "tokenizer with eval/bench_tokenizers.py, then --stage cards)", flush=True)


def assemble_candidate(spec: str, out: Path, weights: str | None = None) -> Path:
    """``NAME=CONFIG``: one pipeline folder under ``out`` from an experiment's run instead of the shipped stage, to
    compare on the tuning prompts (experiments/sweep_sampling.py) before it replaces the shipped one."""
    name, sep, config_path = spec.partition("=")
    if not sep or name not in recipes.GENERATORS or not (recipes.ROOT / config_path).is_file():
        raise recipes.fail(f"--candidate {spec!r} must be NAME=CONFIG with NAME one of {sorted(recipes.GENERATORS)} "
                           "and CONFIG an existing config file")
    if out == (recipes.ROOT / "pretrained").resolve():
        raise recipes.fail("--candidate writes a trial folder; pass --out elsewhere than pretrained/")
    folder = out / recipes.GENERATORS[name]
    save(name, build_pipeline(name, config_path, weights), folder)  # as shipped: the comparison measures that
    source = {"config": config_path,
              "weights": os.path.relpath(weights or recipes.run_dir(config_path) / "final", recipes.ROOT),
              "video_tokenizer": os.path.relpath(tokenizer_folder(name, config_path), recipes.ROOT)}
    (folder / "candidate.json").write_text(json.dumps(source, indent=2) + "\n")  # what the trial folder was built from
    print(f"  candidate {name}: generator {source['weights']}, tokenizer {source['video_tokenizer']}", flush=True)
    grid = json.dumps({key: [value] for key, value in recipes.sampling_config(name).items()})
    print(f"  {folder}\n  compare with the shipped one on the tuning prompts:\n  python experiments/sweep_sampling.py "
          f"{name} --pretrained {out} --prompts 192 --grid '{grid}' --out <results.json>", flush=True)
    return folder

"""The recipes behind ``pretrained/`` and their runs, shared by ``pretrained_build.py`` and ``pretrained_cards.py``
(``make_pretrained.py`` runs both).

A recipe is ``configs/<artifact>/stage1.yaml, stage2.yaml, ...``, each a complete training config whose
``init_from`` (a Self-Forcing stage: ``distill.student``) names the previous stage's run; ``<artifact>`` is the
shipped folder's name. A *distilled* pipeline's stages are ``pipelines/distill.py`` configs (a ``distill:`` section
whose ``teacher`` is another shipped pipeline's folder): they train after their teacher is assembled, and their
pipeline is the teacher's with the student in it. A recipe may also *start from* a shipped pipeline (stage 1's
``init_from`` names its transformer, as the block-causal model starts from the flow model's): it trains after that
pipeline is assembled too (:func:`upstream`). ``shapes-vae`` and
``shapes-fsq`` are the pipelines' tokenizers (shipped inside the pipeline folders); a generator's tokenizer is the one
whose stage-1 run its ``video_tokenizer`` names. A run has finished when its trainer has marked it complete
(``vidgen.training.run_status``).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vidgen.generators import generator_name  # noqa: E402
from vidgen.pipelines.registry import PIPELINE_REGISTRY  # noqa: E402
from vidgen.training import run_status  # noqa: E402
from vidgen.training.config import current_keys  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = "configs"
# artifact -> its folder in the pipelines that ship it
SHAPES_TOKENIZERS = {"shapes-vae": "vae", "shapes-fsq": "vqvae", "shapes-fsq4": "vqvae", "shapes-vae4": "vae"}
GENERATORS = {name: spec.folder for name, spec in PIPELINE_REGISTRY.items()}  # pipeline name -> artifact
NATURAL_TOKENIZERS = ("natural-vae-small", "natural-fsq-small")
ALL_ARTIFACTS = (*SHAPES_TOKENIZERS, *GENERATORS.values(), *NATURAL_TOKENIZERS)
RESULTS = ROOT / "docs" / "results" / "demo_full.json"  # the full evaluation of the assembled pipelines
TOKENIZER_RESULTS = ROOT / "docs" / "results" / "bench_tokenizers.json"  # the general tokenizers' benchmark
# The flow pipeline's scheduler time shift: the plain schedule, re-swept on the shipped model and tuning_prompts(192)
# by experiments/sweep_sampling.py (FLOW_SHIFT_SWEEP: shifts 0.5 and 2.0, against ship_flow_vae4_long2_192.json at 1.0;
# experiments/log.md). The flow card cites the file.
FLOW_SCHEDULER = {"shift": 1.0}
FLOW_SHIFT_SWEEP = "experiments/results/ship_flow_shift_192.json"


def fail(message: str) -> SystemExit:
    return SystemExit(f"make_pretrained: {message}")


def config(path: str) -> dict:
    """The config file ``path`` (relative to the repository root) as written."""
    import yaml
    return yaml.safe_load((ROOT / path).read_text())


def video_tokenizer(path: str) -> str:
    """The video tokenizer the generator config ``path`` trains on (a deprecated key read by the config's owner)."""
    return current_keys(config(path)).get("video_tokenizer", "")


def generator(path: str) -> str:
    """The generator the config ``path`` trains (a deprecated name resolved by ``vidgen.generators``)."""
    return generator_name(config(path)["model"]["generator"], "model.generator")


def run_dir(config_path: str) -> Path:
    return ROOT / config(config_path)["run_dir"]


def done(config_path: str) -> bool:
    """Whether the run of ``config_path`` has finished: its trainer wrote the ``complete`` marker (after ``final/``).
    A run that ended before trainers wrote the marker is started again: it resumes from its last checkpoint, at its
    last step, saves ``final/`` again and marks itself complete."""
    return run_status(run_dir(config_path)) == "complete"


def stages(artifact: str) -> list[str]:
    """The recipe of ``artifact``, first stage first: ``configs/<artifact>/stage<N>.yaml``, N = 1, 2, ... without
    gaps, each stage after the first starting from the previous one's run (``init_from: <its run_dir>/final``; a
    distillation stage may start from the previous run's last checkpoint instead, which also holds its critic:
    ``<its run_dir>/checkpoints/step_<its steps>``)."""
    found = {int(p.stem[len("stage"):]): f"{CONFIGS}/{artifact}/{p.name}"
             for p in (ROOT / CONFIGS / artifact).glob("stage*.yaml") if p.stem[len("stage"):].isdigit()}
    if not found or sorted(found) != list(range(1, len(found) + 1)):
        raise fail(f"{CONFIGS}/{artifact}/ must hold stage1.yaml, stage2.yaml, ... without gaps; found {sorted(found)}")
    chain = [found[i] for i in sorted(found)]
    start = config(chain[0]).get("init_from")
    if start is not None and _shipped_pipeline(start) is None:
        raise fail(f"{chain[0]}: a first stage starts from scratch, from a shipped pipeline's transformer "
                   f"(pretrained/<folder>/transformer) or from a stage of its recipe (<run_dir>/final); init_from is "
                   f"{start!r}")
    for before, after in zip(chain, chain[1:]):
        want = [f"{config(before)['run_dir']}/final"]
        if "distill" in config(after):
            want.append(f"{config(before)['run_dir']}/checkpoints/step_{config(before)['steps']:08d}")
        if config(after).get("distill", {}).get("student"):  # Self-Forcing: the previous stage's block-causal model
            if config(after)["distill"]["student"] != want[0] or config(after).get("init_from"):
                raise fail(f"{after} must roll out the previous stage: set distill.student: {want[0]} (no init_from)")
        elif config(after).get("init_from") not in want:
            raise fail(f"{after} must start from the previous stage: set init_from: {' or '.join(want)}")
    return chain


def _shipped_pipeline(path: str) -> str | None:
    """The shipped pipeline whose folder ``path`` is or lies in (``pretrained/shapes-flow/transformer`` -> flow), or
    whose recipe has a stage that ends in ``path`` (``<its run_dir>/final``: a recipe that must start from an earlier
    stage of a pipeline than the one it ships, e.g. with the patch size it was made for)."""
    parts = Path(path).parts
    if len(parts) >= 2 and parts[0] == "pretrained":
        return next((n for n, artifact in GENERATORS.items() if artifact == parts[1]), None)
    for name, artifact in GENERATORS.items():
        for stage in (ROOT / CONFIGS / artifact).glob("stage*.yaml"):  # not stages(): that validates, and calls this
            if path == f"{config(stage.relative_to(ROOT).as_posix())['run_dir']}/final":
                return name
    return None


def next_stage(artifact: str) -> str | None:
    """The first stage of ``artifact`` without a finished run, or None when all are done."""
    return next((c for c in stages(artifact) if not done(c)), None)


def teacher_of(name: str) -> str | None:
    """The shipped pipeline that pipeline ``name`` is distilled from (its recipe's ``distill.teacher`` folder), or
    None for a pipeline trained by ``pipelines/train_generator.py``."""
    first = config(stages(GENERATORS[name])[0])
    if "distill" not in first:
        return None
    folder = Path(first["distill"]["teacher"]).name
    names = [n for n, artifact in GENERATORS.items() if artifact == folder]
    if not names:
        raise fail(f"{stages(GENERATORS[name])[0]}: distill.teacher {first['distill']['teacher']!r} is no shipped "
                   f"pipeline's folder ({', '.join(GENERATORS.values())})")
    return names[0]


def upstream(name: str) -> str | None:
    """The shipped pipeline that pipeline ``name``'s recipe starts from: its teacher, or the pipeline whose
    transformer stage 1's ``init_from`` names (which must be assembled before the recipe trains); None for a recipe
    that starts from scratch."""
    return teacher_of(name) or _shipped_pipeline(config(stages(GENERATORS[name])[0]).get("init_from") or "")


def trained(names=None) -> list[str]:
    """The pipelines (of ``names``, default all) whose recipes start from scratch (no :func:`upstream`)."""
    return [n for n in (names or GENERATORS) if upstream(n) is None]


def stage1_final(artifact: str) -> str:
    """``<run_dir>/final`` of the first stage of ``artifact``: what a generator on that tokenizer names."""
    return f"{config(stages(artifact)[0])['run_dir']}/final"


def tokenizer_of(name: str, stage: int = -1) -> str:
    """The shapes tokenizer artifact generator ``name``'s recipe stage ``stage`` trains on (default: the last, the
    shipped one): the one whose stage-1 run that stage's ``video_tokenizer`` names (later stages of a tokenizer keep
    stage 1's encoder). A generator may change tokenizers between stages (``load_other_ids``). A distilled pipeline
    keeps its teacher's, and a stage on a shipped pipeline's tokenizer folder has that pipeline's."""
    teacher = teacher_of(name)
    if teacher is not None:
        return tokenizer_of(teacher)
    path = stages(GENERATORS[name])[stage]
    source = video_tokenizer(path)
    if _shipped_pipeline(source) is not None:  # a shipped pipeline's tokenizer folder: that pipeline's tokenizer
        return tokenizer_of(_shipped_pipeline(source))
    for artifact in SHAPES_TOKENIZERS:
        if source == stage1_final(artifact):
            return artifact
    raise fail(f"{path}: video_tokenizer {source!r} is no shapes tokenizer's stage-1 run "
               f"({', '.join(SHAPES_TOKENIZERS)})")


def sampling_config(name: str) -> dict:
    """The recipe's sampling settings of pipeline ``name`` (``configs/shapes-<name>/sampling_config.json``)."""
    return json.loads((ROOT / CONFIGS / GENERATORS[name] / "sampling_config.json").read_text())


def ship_tokenizer_script():
    """``tokenizers/ship_tokenizer.py`` (a script, not a module): it ships and describes the general tokenizers."""
    spec = importlib.util.spec_from_file_location("_vidgen_ship_tokenizer", ROOT / "tokenizers" / "ship_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

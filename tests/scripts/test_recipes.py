"""The shipped recipes (``configs/<artifact>/stageN.yaml``): every stage parses into the trainer's schema with the
current key names and builds its model, stages chain by ``init_from``, every shipped artifact in ``pretrained/`` has a
recipe and every recipe an artifact (so ``make pretrained`` rebuilds exactly what ships), and each pipeline's
sampling settings in the recipe equal the shipped folder's. A typo in a recipe fails here, not an hour into a run."""
from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from vidgen.tokenizers import CausalVAE, CausalVQVAE
from vidgen.training import GeneratorTrainConfig, TrainConfig, load_config
from vidgen.training.generator_task import build_generator

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.parent.name for p in (ROOT / "configs").glob("*/stage1.yaml"))
STAGES = sorted((ROOT / "configs").glob("*/stage*.yaml"))


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _is_generator(path: Path) -> bool:
    return "generator" in _yaml(path).get("model", {})


def _is_distillation(path: Path) -> bool:
    return "distill" in _yaml(path)


@pytest.fixture(scope="module")
def make_pretrained(load_script):
    return load_script("pipelines/make_pretrained.py")


@pytest.fixture(scope="module")
def recipes(make_pretrained):
    """``pipelines/pretrained_recipes.py``, as ``make pretrained`` reads the recipes."""
    return make_pretrained.recipes


def test_there_are_recipes_to_check():
    assert len(RECIPES) == 11 and len(STAGES) >= 20
    assert sum(map(_is_generator, STAGES)) == 16  # masked 3, autoregressive 4, flow 8, causal 1
    assert sum(map(_is_distillation, STAGES)) >= 1  # flow-distilled


@pytest.mark.parametrize("path", STAGES, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_stage_parses_with_the_current_keys(path):
    raw = _yaml(path)
    assert "tokenizer" not in raw, "recipes name the video tokenizer video_tokenizer:"
    assert raw.get("model", {}).get("generator") != "diffusion", "recipes name the flow generator flow"
    from vidgen.distillation.task import DistillTrainConfig
    schema = (DistillTrainConfig if _is_distillation(path) else GeneratorTrainConfig if _is_generator(path)
              else TrainConfig)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a deprecated key or name would warn
        cfg = load_config(str(path), schema=schema)
    assert cfg.steps > 0 and cfg.run_dir.startswith("runs/")
    if _is_distillation(path):  # the teacher is a shipped pipeline, whose tokenizer the student keeps
        assert cfg.distill.teacher.startswith("pretrained/") and cfg.video_tokenizer == cfg.distill.teacher + "/vae"
    elif _is_generator(path) and cfg.init_from.startswith("pretrained/"):  # starts from a shipped pipeline: its VAE
        assert cfg.init_from.endswith("/transformer") and cfg.video_tokenizer == cfg.init_from[:-len("transformer")] + "vae"
    elif _is_generator(path):
        assert cfg.video_tokenizer.startswith("runs/") and cfg.video_tokenizer.endswith("/final")


@pytest.mark.parametrize("path", [p for p in STAGES if _is_generator(p)], ids=lambda p: p.parent.name + "/" + p.name)
def test_generator_stage_builds_its_model(path):
    cfg = load_config(str(path), schema=GeneratorTrainConfig)
    torch.manual_seed(0)
    if cfg.model.generator in ("flow", "causal"):
        tokenizer = CausalVAE.from_preset("tiny")
    else:
        tokenizer = CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4))
    model = build_generator(cfg, text_dim=384, tokenizer=tokenizer)

    def plain(v):
        return list(v) if isinstance(v, (list, tuple)) else v
    for key, value in cfg.model.overrides.items():  # every override reached the model
        held = model.config.get(key, model.config.get("architecture", {}).get(key))
        assert plain(held) == plain(value), (key, held, value)


@pytest.mark.parametrize("artifact", RECIPES)
def test_stages_chain_by_init_from(artifact, recipes):
    chain = [ROOT / c for c in recipes.stages(artifact)]
    assert chain == sorted((ROOT / "configs" / artifact).glob("stage*.yaml"), key=lambda p: int(p.stem[5:]))
    start = _yaml(chain[0]).get("init_from")  # stage 1 starts from scratch, or from a shipped pipeline's transformer
    shipped_stages = {_yaml(p)["run_dir"] + "/final" for p in STAGES if p.parent.name in recipes.GENERATORS.values()}
    assert start is None or (((start.startswith("pretrained/shapes-") and start.endswith("/transformer"))
                              or start in shipped_stages)  # ... or from a stage of one's recipe
                             and recipes.upstream(next(n for n, a in recipes.GENERATORS.items() if a == artifact)))
    for before, after in zip(chain, chain[1:]):  # a distillation may continue the last checkpoint (with its critic)
        allowed = {_yaml(before)["run_dir"] + "/final"}
        if _is_distillation(after) and _yaml(after)["distill"].get("student"):  # Self-Forcing rolls out the previous
            assert _yaml(after)["distill"]["student"] in allowed and "init_from" not in _yaml(after)
            continue
        if _is_distillation(after):
            allowed.add(f"{_yaml(before)['run_dir']}/checkpoints/step_{_yaml(before)['steps']:08d}")
        assert _yaml(after)["init_from"] in allowed
    runs = [_yaml(p)["run_dir"] for p in STAGES]
    assert len(set(runs)) == len(runs)  # no two stages share a run folder


def test_every_shipped_artifact_has_a_recipe_and_every_recipe_ships(recipes):
    mp = recipes
    shipped = {p.name for p in (ROOT / "pretrained").iterdir() if p.is_dir()}
    # tokenizers ship inside the pipeline folders (the last stage's), or train an earlier generator stage
    components = {mp.tokenizer_of(name, i) for name in mp.GENERATORS for i in range(len(mp.stages(mp.GENERATORS[name])))}
    assert set(RECIPES) == shipped | components
    built = {*mp.SHAPES_TOKENIZERS, *mp.GENERATORS.values(), *mp.NATURAL_TOKENIZERS}
    assert built == set(RECIPES)  # make pretrained trains every recipe, and nothing else
    records = json.loads((ROOT / "pipelines" / "training_runs.json").read_text())["runs"]
    for artifact in RECIPES:  # every stage has a run record: cards can be written without runs/
        assert all(_yaml(ROOT / c)["run_dir"] in records for c in mp.stages(artifact)), artifact


def test_a_distilled_recipe_matches_its_shipped_folder(recipes):
    """The distilled pipeline ships its teacher's tokenizer and scheduler class, a student of the recipe's step
    counts and guidance, and the recipe's sampling settings (at one of those step counts, guidance 1)."""
    folder = ROOT / "pretrained" / "shapes-flow-distilled"
    first = _yaml(ROOT / recipes.stages("shapes-flow-distilled")[0])
    teacher = ROOT / first["distill"]["teacher"]
    assert recipes.teacher_of("flow-distilled") == "flow" and recipes.tokenizer_of("flow-distilled") == \
        recipes.tokenizer_of("flow")
    student = json.loads((folder / "transformer" / "config.json").read_text())
    assert student["distillation"]["steps"] == first["distill"]["steps"]
    bench = json.loads((ROOT / "docs" / "results" / "bench_few_step.json").read_text())
    key = "pretrained/shapes-flow/transformer/diffusion_pytorch_model.safetensors"
    if bench["weights_sha256"][key] == hashlib.sha256((ROOT / key).read_bytes()).hexdigest():
        guidance = json.loads((teacher / "sampling_config.json").read_text())["guidance_scale"]
    else:  # distilled from an earlier teacher, which its card names: that teacher's guidance, as it was measured
        guidance = next(r for r in bench["rows"] if r["name"] == "teacher")["settings"]["guidance_scale"]
    assert student["distillation"]["guidance_scale"] == guidance
    from safetensors.torch import load_file
    mine, theirs = (load_file(str(f / "vae" / "diffusion_pytorch_model.safetensors")) for f in (folder, teacher))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    recipe = json.loads((ROOT / "configs" / "shapes-flow-distilled" / "sampling_config.json").read_text())
    assert recipe == json.loads((folder / "sampling_config.json").read_text())
    assert recipe["num_inference_steps"] in student["distillation"]["steps"] and recipe["guidance_scale"] == 1


@pytest.mark.parametrize("name", ["masked", "flow", "autoregressive"])
def test_pipeline_recipe_matches_its_shipped_folder(name, recipes):
    import vidgen.pipelines
    from vidgen.generators import generator_class
    folder = ROOT / "pretrained" / f"shapes-{name}"
    index = json.loads((folder / "model_index.json").read_text())
    last = _yaml(ROOT / recipes.stages(f"shapes-{name}")[-1])
    assert index["transformer"][1] == generator_class(last["model"]["generator"]).__name__
    tokenizer = recipes.tokenizer_of(name)
    component = folder / recipes.SHAPES_TOKENIZERS[tokenizer]
    shipped = json.loads((component / "config.json").read_text())
    first = _yaml(ROOT / recipes.stages(tokenizer)[0])["model"]
    built = (CausalVQVAE if first["kind"] == "vqvae" else CausalVAE).from_preset(first["preset"], **first.get("overrides", {}))
    learned = {"scaling_factor", "shift_factor", "latents_mean", "latents_std"}  # set by training, not the recipe
    compared = [k for k in built.config if k in shipped and not k.startswith("_") and k not in learned]
    assert {"spatial_compression", "temporal_compression", "widths"} <= set(compared)
    for key in compared:  # the shipped tokenizer is the one its recipe builds
        value = built.config[key]
        assert shipped[key] == (list(value) if isinstance(value, tuple) else value), (tokenizer, key)
    recipe = json.loads((ROOT / "configs" / f"shapes-{name}" / "sampling_config.json").read_text())
    assert recipe == json.loads((folder / "sampling_config.json").read_text())
    call = inspect.signature(getattr(vidgen.pipelines, index["_class_name"]).__call__).parameters
    assert recipe and set(recipe) <= set(call)  # keyword arguments of the pipeline's __call__


def test_cards_are_written_from_records_without_runs_and_match_the_committed_ones(make_pretrained, tmp_path,
                                                                                   monkeypatch):
    """``--stage cards`` needs no runs/ (the records in pipelines/training_runs.json) and reproduces the committed
    model cards: a recipe, record or results file changed without regenerating the cards fails here."""
    import shutil
    recipes, cards = make_pretrained.recipes, make_pretrained.cards
    monkeypatch.setattr(recipes, "ROOT", tmp_path)  # no runs/ under this root: every summary comes from the records
    for sub in ("configs", "experiments/results", "docs/results"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    for script in ("pipelines/training_runs.json", "tokenizers/ship_tokenizer.py"):
        (tmp_path / script).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / script, tmp_path / script)
    monkeypatch.setattr(cards, "RUN_RECORDS", tmp_path / "pipelines" / "training_runs.json")
    monkeypatch.setattr(recipes, "RESULTS", tmp_path / "docs" / "results" / "demo_full.json")
    monkeypatch.setattr(recipes, "TOKENIZER_RESULTS", tmp_path / "docs" / "results" / "bench_tokenizers.json")
    monkeypatch.setattr(cards, "EXPERIMENT_RESULTS", tmp_path / "experiments" / "results")
    monkeypatch.setattr(cards, "SWEEPS", tmp_path / "docs" / "results")
    out = tmp_path / "pretrained"
    shutil.copytree(ROOT / "pretrained", out, ignore=shutil.ignore_patterns("README.md"))
    cards.write_cards(out)
    for folder in out.iterdir():
        assert (folder / "README.md").read_text() == (ROOT / "pretrained" / folder.name / "README.md").read_text(), \
            f"pretrained/{folder.name}/README.md is stale: python pipelines/make_pretrained.py --stage cards"
    assert not (tmp_path / "runs").exists()


def test_the_causal_recipe_matches_its_shipped_folder(recipes):
    """The block-causal pipeline starts from the shipped flow pipeline: it trains after it, ships its VAE unchanged,
    and its folder has the recipe's sampling settings and a block-causal transformer of the recipe's chunking."""
    folder, flow = ROOT / "pretrained" / "shapes-causal", ROOT / "pretrained" / "shapes-flow"
    assert recipes.upstream("causal") == "flow" and recipes.teacher_of("causal") is None
    assert "causal" not in recipes.trained() and recipes.tokenizer_of("causal") == recipes.tokenizer_of("flow")
    from safetensors.torch import load_file
    mine, theirs = (load_file(str(f / "vae" / "diffusion_pytorch_model.safetensors")) for f in (folder, flow))
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "CausalVideoPipeline" and index["transformer"][1] == "CausalFlowVideoTransformer"
    model = json.loads((folder / "transformer" / "config.json").read_text())
    first = _yaml(ROOT / recipes.stages("shapes-causal")[0])["model"]["overrides"]
    assert {k: model[k] for k in ("chunk_frames", "window_chunks", "sink_chunks")} == \
        {k: first[k] for k in ("chunk_frames", "window_chunks", "sink_chunks")}
    recipe = json.loads((ROOT / "configs" / "shapes-causal" / "sampling_config.json").read_text())
    assert recipe == json.loads((folder / "sampling_config.json").read_text())
    import vidgen.pipelines
    assert set(recipe) <= set(inspect.signature(vidgen.pipelines.CausalVideoPipeline.__call__).parameters)

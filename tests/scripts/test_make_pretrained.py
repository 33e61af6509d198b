"""``make pretrained`` runs the recipes in ``configs/``: an artifact's stages in order, each after the run its
``init_from`` names; a generator's tokenizer is the recipe whose stage-1 run it trains on; a run is finished when its
trainer has marked it complete. ``pipelines/make_pretrained.py`` is the entry point; the recipes, the building and the
cards are its modules ``recipes``, ``build`` and ``cards``."""
from __future__ import annotations

import pytest

from vidgen.training.trainer import write_run_status


def _recipe(root, artifact: str, stage: int, text: str) -> None:
    path = root / "configs" / artifact / f"stage{stage}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _finish(root, run: str) -> None:
    """What the trainer leaves at the end of a run: its final/ folder, then the ``complete`` marker."""
    (root / "runs" / run / "final").mkdir(parents=True)
    (root / "runs" / run / "final" / "config.json").write_text("{}")
    write_run_status(root / "runs" / run, "complete", step=1)


def test_stages_chain_by_init_from_and_train_in_order(tmp_path, monkeypatch, load_script):
    mp = load_script("pipelines/make_pretrained.py").recipes
    monkeypatch.setattr(mp, "ROOT", tmp_path)
    _recipe(tmp_path, "g", 1, "run_dir: runs/a\n")
    _recipe(tmp_path, "g", 2, "run_dir: runs/b\ninit_from: runs/a/final\n")
    _recipe(tmp_path, "g", 10, "run_dir: runs/c\ninit_from: runs/b/final\n")  # numbers, not names, give the order
    with pytest.raises(SystemExit, match="without gaps"):
        mp.stages("g")
    (tmp_path / "configs" / "g" / "stage10.yaml").rename(tmp_path / "configs" / "g" / "stage3.yaml")
    assert mp.stages("g") == [f"configs/g/stage{i}.yaml" for i in (1, 2, 3)]
    assert mp.next_stage("g") == "configs/g/stage1.yaml"
    _finish(tmp_path, "a")
    assert mp.next_stage("g") == "configs/g/stage2.yaml"
    (tmp_path / "runs" / "b" / "final").mkdir(parents=True)  # a final/ folder alone (a run killed while saving it,
    (tmp_path / "runs" / "b" / "final" / "config.json").write_text("{}")  # say) is not a finished run
    write_run_status(tmp_path / "runs" / "b", "training", step=0)
    assert mp.next_stage("g") == "configs/g/stage2.yaml"
    write_run_status(tmp_path / "runs" / "b", "complete", step=5)
    _finish(tmp_path, "c")
    assert mp.next_stage("g") is None
    _recipe(tmp_path, "h", 1, "run_dir: runs/x\n")
    _recipe(tmp_path, "h", 2, "run_dir: runs/y\ninit_from: pretrained/some-pipeline/transformer\n")
    with pytest.raises(SystemExit, match="init_from: runs/x/final"):
        mp.stages("h")
    with pytest.raises(SystemExit, match="stage1.yaml"):
        mp.stages("missing")


def test_a_generator_trains_on_the_tokenizer_whose_stage_1_it_names(tmp_path, monkeypatch, load_script):
    mp = load_script("pipelines/make_pretrained.py").recipes
    monkeypatch.setattr(mp, "ROOT", tmp_path)
    monkeypatch.setattr(mp, "SHAPES_TOKENIZERS", {"tok-a": "vae", "tok-b": "vqvae"})
    monkeypatch.setattr(mp, "GENERATORS", {"one": "gen-one", "two": "gen-two", "three": "gen-three"})
    for tok in ("a", "b"):
        _recipe(tmp_path, f"tok-{tok}", 1, f"run_dir: runs/{tok}1\n")
        _recipe(tmp_path, f"tok-{tok}", 2, f"run_dir: runs/{tok}2\ninit_from: runs/{tok}1/final\n")
    _recipe(tmp_path, "gen-one", 1, "run_dir: runs/g1\nvideo_tokenizer: runs/b1/final\n")
    _recipe(tmp_path, "gen-two", 1, "run_dir: runs/g2\ntokenizer: runs/b2/final\n")  # the old key still read
    assert mp.tokenizer_of("one") == "tok-b"
    _recipe(tmp_path, "gen-three", 1, "run_dir: runs/g3\nvideo_tokenizer: runs/a1/final\n")
    _recipe(tmp_path, "gen-three", 2, "run_dir: runs/g3b\ninit_from: runs/g3/final\nvideo_tokenizer: runs/b1/final\n")
    assert (mp.tokenizer_of("three"), mp.tokenizer_of("three", 0)) == ("tok-b", "tok-a")  # it ships stage 2's
    with pytest.raises(SystemExit, match="no shapes tokenizer's stage-1 run"):  # stage 2's run is not what it encodes
        with pytest.warns(FutureWarning, match="'tokenizer' is deprecated"):  # read by the config's own alias
            mp.tokenizer_of("two")


def test_run_summaries_are_recorded_and_read_back_when_the_run_is_gone(tmp_path, monkeypatch, load_script):
    import json
    import shutil
    mp = load_script("pipelines/make_pretrained.py").cards
    monkeypatch.setattr(mp.recipes, "ROOT", tmp_path)
    monkeypatch.setattr(mp, "RUN_RECORDS", tmp_path / "pipelines" / "training_runs.json")
    (tmp_path / "pipelines").mkdir()
    run = tmp_path / "runs" / "g"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(json.dumps({"threads": 1}))
    (run / "log.jsonl").write_text("\n".join(json.dumps(x) for x in [
        {"info": "G: 1.25 M parameters, 64 clips", "time": 100.0},
        {"step": 10, "loss": 0.5, "time": 100.0}, {"step": 20, "loss": 0.25, "time": 160.0}]) + "\n")
    (tmp_path / "pipelines" / "training_runs.json").write_text(json.dumps({"runs": {"runs/g": {"history": "old"}}}))
    live = mp.summary(run)
    assert (live["steps"], live["final_loss"], live["wall_time_min"], live["parameters_m"]) == (20, 0.25, 1.0, 1.25)
    shutil.rmtree(run)  # runs/ is not committed: a later card must come from the record
    recorded = mp.summary(run)
    assert {k: recorded[k] for k in mp.RECORD_KEYS} == {k: live[k] for k in mp.RECORD_KEYS}
    assert recorded["source"] == "log.jsonl" and "history" not in recorded  # a note about an earlier run goes
    with pytest.raises(SystemExit, match="no log.jsonl and no record"):
        mp.summary(tmp_path / "runs" / "never")


def test_a_candidate_must_name_a_pipeline_and_a_config_and_never_overwrite_the_shipped_folders(load_script,
                                                                                                 tmp_path):
    mp = load_script("pipelines/make_pretrained.py")
    shipped = str(mp.ROOT / "pretrained")
    with pytest.raises(SystemExit, match="NAME=CONFIG"):
        mp.main(["--candidate", "configs/shapes-masked/stage1.yaml", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="NAME=CONFIG"):
        mp.main(["--candidate", "diffusion=configs/shapes-masked/stage1.yaml", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="NAME=CONFIG"):
        mp.main(["--candidate", "masked=configs/shapes-masked/no_such.yaml", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="elsewhere than pretrained"):
        mp.main(["--candidate", "masked=experiments/configs/generators/masked_shapes_fg.yaml", "--out", shipped])
    with pytest.raises(SystemExit, match="not the flow pipeline's"):
        mp.build.build_pipeline("flow", "experiments/configs/generators/masked_shapes_fg.yaml")
    with pytest.raises(SystemExit):  # argparse: --weights only with --candidate
        mp.main(["--weights", str(tmp_path), "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_a_candidate_on_another_tokenizer_ships_with_that_tokenizer_and_only_if_it_exists(load_script, tmp_path):
    import yaml
    mp = load_script("pipelines/make_pretrained.py")
    recipes, build = mp.recipes, mp.build
    shipped = recipes.stages(recipes.GENERATORS["flow"])[-1]
    recipe_decoder = recipes.run_dir(recipes.stages(recipes.tokenizer_of("flow"))[-1]) / "final"
    assert build.tokenizer_folder("flow", shipped) == recipe_decoder  # the recipe's own tokenizer: its last stage
    other = tmp_path / "other_tokenizer"
    config = tmp_path / "candidate.yaml"
    config.write_text(yaml.safe_dump({**recipes.config(shipped), "video_tokenizer": str(other)}))
    with pytest.raises(SystemExit, match="no tokenizer folder"):
        build.tokenizer_folder("flow", str(config))
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert build.tokenizer_folder("flow", str(config)) == other


def test_assembling_some_pipelines_leaves_the_other_folders_alone(load_script, tmp_path, monkeypatch):
    mp = load_script("pipelines/make_pretrained.py")
    built = []
    monkeypatch.setattr(mp.build, "build_pipeline", lambda name: built.append(name) or name)
    monkeypatch.setattr(mp.build, "save", lambda name, pipe, folder: folder.mkdir(parents=True))
    monkeypatch.setattr(mp.recipes, "ship_tokenizer_script", lambda: pytest.fail("the general tokenizers were rebuilt"))
    mp.build.assemble(tmp_path, ["flow"])
    assert built == ["flow"] and [p.name for p in tmp_path.iterdir()] == [mp.recipes.GENERATORS["flow"]]
    with pytest.raises(SystemExit):  # argparse: only with --stage assemble, only known pipelines
        mp.main(["--pipelines", "flow", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        mp.main(["--stage", "assemble", "--pipelines", "diffusion", "--out", str(tmp_path)])


def test_chains_train_each_unfinished_stage_once_in_order_and_wait_for_a_shared_cache(tmp_path, monkeypatch,
                                                                                      load_script):
    mp = load_script("pipelines/make_pretrained.py")
    recipes, build = mp.recipes, mp.build
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    monkeypatch.setattr(recipes, "SHAPES_TOKENIZERS", {"tok": "vqvae"})
    monkeypatch.setattr(recipes, "GENERATORS", {"one": "gen-one", "two": "gen-two", "three": "gen-three"})
    monkeypatch.setattr(build.time, "sleep", lambda s: None)
    _recipe(tmp_path, "tok", 1, "run_dir: runs/t1\n")
    _recipe(tmp_path, "tok", 2, "run_dir: runs/t2\ninit_from: runs/t1/final\n")
    for g in ("one", "two"):
        _recipe(tmp_path, f"gen-{g}", 1, f"run_dir: runs/{g}\nvideo_tokenizer: runs/t1/final\n")
    launched = []

    class Finished:  # a training that has already written its final/ folder
        returncode = 0

        def __init__(self, config):
            launched.append(config)
            _finish(tmp_path, recipes.config(config)["run_dir"][len("runs/"):])

        def poll(self):
            return 0

        def wait(self):
            return 0

    monkeypatch.setattr(build, "_launch", lambda script, config, log: Finished(config))
    _finish(tmp_path, "t1")  # resumed build: stage 1 is done, only stage 2 trains
    build.train_chains(["tok"], "s", jobs=2)
    assert launched == ["configs/tok/stage2.yaml"]
    build.train_chains(["tok"], "s", jobs=2)
    assert launched == ["configs/tok/stage2.yaml"]  # nothing left to train
    running = tmp_path / "runs" / "one"
    assert build.shares_cache_being_written("gen-two", {"gen-one": None})  # same tokenizer, not started yet
    running.mkdir(parents=True)
    write_run_status(running, "preparing")
    (running / "log.jsonl").write_text('{"info": "masked: 2.69 M parameters, 4096 clips"}\n')  # a log says nothing
    assert build.shares_cache_being_written("gen-two", {"gen-one": None})  # same tokenizer, still encoding
    write_run_status(running, "training", step=0)  # its data is ready: the cache is written
    assert not build.shares_cache_being_written("gen-two", {"gen-one": None})


def test_evaluating_some_pipelines_merges_them_into_the_full_evaluation(load_script):
    """``--stage evaluate --pipelines NAME``: NAME's entry, story and detections join the committed record, which
    keeps the other pipelines' as they were; other prompts are refused."""
    mp = load_script("pipelines/make_pretrained.py")
    video = {"prompt": "a red circle", "detected": {"real": "r", "flow": "f"}}
    record = {"created": "then", "command": "old", "machine": {"cpu": "a"}, "pipelines": {"flow": {"x": 1}},
              "stories": {"flow": "s"}, "videos": [video]}
    new = {"created": "now", "command": "new", "machine": {"cpu": "b"}, "pipelines": {"flow-distilled": {"x": 2}},
           "stories": {"flow-distilled": "t"},
           "videos": [{"prompt": "a red circle", "detected": {"real": "r", "flow-distilled": "d"}}]}
    merged = mp.merge_evaluation(record, new)
    assert merged["pipelines"]["flow"] == {"x": 1} and merged["machine"] == {"cpu": "a"}
    assert merged["pipelines"]["flow-distilled"] == {"x": 2, "evaluated_by": {"created": "now", "command": "new",
                                                                              "machine": {"cpu": "b"}}}
    assert merged["stories"] == {"flow": "s", "flow-distilled": "t"}
    assert merged["videos"][0]["detected"] == {"real": "r", "flow": "f", "flow-distilled": "d"}
    assert record["pipelines"] == {"flow": {"x": 1}}  # the record itself is left as it was
    new["videos"][0]["prompt"] = "a blue star"
    with pytest.raises(SystemExit, match="prompts differ"):
        mp.merge_evaluation(record, new)


def test_a_card_names_a_run_that_ended_without_shipping_and_by_how_much(tmp_path, monkeypatch, load_script):
    import json
    cards = load_script("pipelines/make_pretrained.py").cards
    monkeypatch.setattr(cards.recipes, "ROOT", tmp_path)
    config, path, _ = cards.TRIED["flow"]
    (tmp_path / config).parent.mkdir(parents=True)
    (tmp_path / config).write_text("steps: 6000\n")
    assert cards._tried("flow", tmp_path) == "" and cards._tried("masked", tmp_path) == ""  # nothing read yet
    rows = [{"step": s, "shape": sh, "color_motion": 0.99, "turned": 25, "rotating": 26}
            for s, sh in ((5000, 0.55), (6000, 0.54))]
    best = {"step": 5000, "shape": 0.55, "color_motion": 0.99, "turned": 25, "ships": False,
            "short_by": {"shape_points": 5.0, "color_motion_points": 0.0, "turns": 0}}
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text(json.dumps({"prompts": 192, "ships": None, "best": best, "rows": rows[:1]}))
    assert cards._tried("flow", tmp_path) == ""  # still running: its last step is not read yet
    (tmp_path / path).write_text(json.dumps({"prompts": 192, "ships": None, "best": best, "rows": rows}))
    line = cards._tried("flow", tmp_path)
    assert "Tried, not shipped" in line and "55.0% shape" in line and "5.0 points below on shape" in line
    assert "colour+motion of" not in line and path in line and "step 5000" in line
    (tmp_path / path).write_text(json.dumps({"prompts": 192, "ships": 6000, "best": best, "rows": rows}))
    assert cards._tried("flow", tmp_path) == ""  # it shipped: the card describes those weights


def test_a_students_card_says_when_its_teacher_has_been_replaced(tmp_path, load_script):
    import hashlib
    import json
    cards = load_script("pipelines/make_pretrained.py").cards
    key = "pretrained/shapes-flow/transformer/diffusion_pytorch_model.safetensors"
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_bytes(b"teacher weights")
    results = {"weights_sha256": {key: hashlib.sha256(b"teacher weights").hexdigest()},
               "rows": [{"name": "teacher", "evaluations_per_video": 50,
                         "settings": {"num_inference_steps": 25, "guidance_scale": 4.5}}]}
    steps = cards.recipes.sampling_config("flow")["num_inference_steps"]
    same = cards._teacher("flow", 4.5, results, tmp_path)
    assert same.startswith("the teacher pipeline `pretrained/shapes-flow`") and f"{steps} steps" in same
    assert cards._teacher("flow", 4.5, None, tmp_path) == same  # nothing measured: the recipe's teacher
    (tmp_path / key).write_bytes(b"new teacher weights")
    replaced = cards._teacher("flow", 4.5, results, tmp_path)
    assert replaced.startswith("an earlier `pretrained/shapes-flow`") and "has since replaced it" in replaced
    assert hashlib.sha256(b"teacher weights").hexdigest()[:16] in replaced and "25 steps" in replaced
    assert "4.5" in json.dumps(replaced)

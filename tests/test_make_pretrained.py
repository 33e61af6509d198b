"""``make pretrained`` follows a generator's stages: a config whose ``init_from`` is another config's run trains
after it."""
from __future__ import annotations

import pytest


def test_stages_follow_init_from_back_to_the_first_config(tmp_path, monkeypatch, load_script):
    mp = load_script("pipelines/make_pretrained.py")
    configs = tmp_path / "pipelines" / "configs"
    configs.mkdir(parents=True)
    (configs / "a.yaml").write_text("run_dir: runs/a\n")
    (configs / "b.yaml").write_text("run_dir: runs/b\ninit_from: runs/a/final\n")
    (configs / "c.yaml").write_text("run_dir: runs/c\ninit_from: runs/b/final\n")
    (configs / "outside.yaml").write_text("run_dir: runs/o\ninit_from: pretrained/some-pipeline/transformer\n")
    monkeypatch.setattr(mp, "ROOT", tmp_path)
    assert mp._stages("pipelines/configs/c.yaml") == [f"pipelines/configs/{x}.yaml" for x in "abc"]
    assert mp._stages("pipelines/configs/a.yaml") == ["pipelines/configs/a.yaml"]
    assert mp._stages("pipelines/configs/outside.yaml") == ["pipelines/configs/outside.yaml"]  # not a stage we train

    monkeypatch.setattr(mp, "GENERATORS", {"g": ("pipelines/configs/c.yaml", "fsq")})
    assert mp._next_stage("g") == "pipelines/configs/a.yaml"
    (tmp_path / "runs" / "a" / "final").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "final" / "config.json").write_text("{}")
    assert mp._next_stage("g") == "pipelines/configs/b.yaml"
    for run in "bc":
        (tmp_path / "runs" / run / "final").mkdir(parents=True)
        (tmp_path / "runs" / run / "final" / "config.json").write_text("{}")
    assert mp._next_stage("g") is None


def test_run_summaries_are_recorded_and_read_back_when_the_run_is_gone(tmp_path, monkeypatch, load_script):
    import json
    import shutil
    mp = load_script("pipelines/make_pretrained.py")
    monkeypatch.setattr(mp, "ROOT", tmp_path)
    monkeypatch.setattr(mp, "RUN_RECORDS", tmp_path / "pipelines" / "training_runs.json")
    (tmp_path / "pipelines").mkdir()
    run = tmp_path / "runs" / "g"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(json.dumps({"threads": 1}))
    (run / "log.jsonl").write_text("\n".join(json.dumps(x) for x in [
        {"info": "G: 1.25 M parameters, 64 clips", "time": 100.0},
        {"step": 10, "loss": 0.5, "time": 100.0}, {"step": 20, "loss": 0.25, "time": 160.0}]) + "\n")
    live = mp._summary(run)
    assert (live["steps"], live["final_loss"], live["wall_time_min"], live["parameters_m"]) == (20, 0.25, 1.0, 1.25)
    shutil.rmtree(run)  # runs/ is not committed: a later card must come from the record
    recorded = mp._summary(run)
    assert {k: recorded[k] for k in mp.RECORD_KEYS} == {k: live[k] for k in mp.RECORD_KEYS}
    assert recorded["source"] == "log.jsonl"
    with pytest.raises(SystemExit, match="no log.jsonl and no record"):
        mp._summary(tmp_path / "runs" / "never")


def test_a_candidate_must_name_a_pipeline_and_a_config_and_never_overwrite_the_shipped_folders(load_script,
                                                                                                 tmp_path):
    mp = load_script("pipelines/make_pretrained.py")
    shipped = str(mp.ROOT / "pretrained")
    with pytest.raises(SystemExit, match="NAME=CONFIG"):
        mp.main(["--candidate", "pipelines/configs/masked_shapes.yaml", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="NAME=CONFIG"):
        mp.main(["--candidate", "diffusion=pipelines/configs/masked_shapes.yaml", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="NAME=CONFIG"):
        mp.main(["--candidate", "masked=pipelines/configs/no_such.yaml", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="elsewhere than pretrained"):
        mp.main(["--candidate", "masked=pipelines/configs/masked_shapes_fg.yaml", "--out", shipped])
    with pytest.raises(SystemExit, match="not the flow pipeline's"):
        mp.build_pipeline("flow", "pipelines/configs/masked_shapes_fg.yaml")
    with pytest.raises(SystemExit):  # argparse: --weights only with --candidate
        mp.main(["--weights", str(tmp_path), "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())

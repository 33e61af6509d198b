"""``make pretrained`` follows a generator's stages: a config whose ``init_from`` is another config's run trains
after it."""
from __future__ import annotations


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

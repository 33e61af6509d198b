"""experiments/story_read.py: the flow story stage's ship rule (its config's header) against stage 7's read."""
from __future__ import annotations


def _row(story, **clips):
    return {"story": [{"context_frames": c, "color_motion": s} for c, s in zip((1, 2), story)], **clips}


def test_the_rule_is_the_configs_header(load_script):
    read = load_script("experiments/story_read.py")
    need = read.needs(read.stage7())
    assert need == {"story": 0.5, "shape": 0.6623, "color_motion": 0.9644, "turned": 24}  # as the header writes it
    header = (read.ROOT / "experiments/configs/generators/flow_shapes_story.yaml").read_text()
    assert all(text in header for text in ("at least 50 %", "shape >= 66.2 %", "colour+motion", ">= 96.4 %",
                                          "turns >= 24 of 26"))


def test_a_read_ships_only_when_the_story_and_the_clips_pass(load_script):
    read = load_script("experiments/story_read.py")
    need = read.needs(read.stage7())
    good = dict(shape=0.67, color_motion=0.97, turned=24)
    assert read.judge(_row((0.2, 0.5), **good), need)["ships"]  # context 2 alone is enough
    story_fails = read.judge(_row((0.49, 0.3)), need)
    assert not story_fails["story"] and not story_fails["clips_read"] and not story_fails["ships"]
    assert not read.judge(_row((0.6, 0.6)), need)["ships"]  # clips not read: no verdict to ship on
    for change in ({"shape": 0.66}, {"color_motion": 0.96}, {"turned": 23}):
        assert not read.judge(_row((0.6, 0.1), **{**good, **change}), need)["ships"], change


def test_it_reads_every_250th_checkpoint_from_500(load_script, tmp_path):
    read = load_script("experiments/story_read.py")
    for step in (250, 500, 600, 750, 1000):
        folder = tmp_path / "checkpoints" / f"step_{step:08d}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    assert [s for s, _ in read.due(tmp_path)] == [500, 750, 1000]
    assert [s for s, _ in read.due(tmp_path, [1000, 600])] == [1000]


def test_a_file_it_wrote_is_read_back_as_its_own(load_script):
    import json
    read = load_script("experiments/story_read.py")
    assert json.loads(json.dumps(read.STORY)) == read.STORY  # else a second read refuses the curve's file

"""Built-in datasets: determinism by seed, splits that really hold out, DataLoader compatibility, user folders."""
import json

import pytest
import torch
from torch.utils.data import DataLoader

from vidgen.data import (
    HELD_OUT_PAIRS,
    TEST_SOURCES,
    TRAIN_SOURCES,
    NaturalClips,
    ShapesDataset,
    VideoFolder,
    all_combinations,
)
from vidgen.data.shapes import COLORS, MOTIONS
from vidgen.errors import InvalidInputError, VideoIOError
from vidgen.io import write_video


def test_natural_clips_deterministic_by_seed():
    a = NaturalClips("train", num_frames=5, size=24, seed=3)
    b = NaturalClips("train", num_frames=5, size=24, seed=3)
    c = NaturalClips("train", num_frames=5, size=24, seed=4)
    for i in (0, 7):
        assert torch.equal(a[i]["video"], b[i]["video"])
    assert not torch.equal(a[0]["video"], c[0]["video"])
    assert torch.equal(a[7]["video"], a[7]["video"])  # access order does not matter


def test_natural_split_is_by_source_image():
    assert not set(TRAIN_SOURCES) & set(TEST_SOURCES)
    train = NaturalClips("train", num_frames=2, size=8)
    test = NaturalClips("test", num_frames=2, size=8)
    train_sources = {train[i]["source"] for i in range(len(TRAIN_SOURCES))}
    test_sources = {test[i]["source"] for i in range(len(TEST_SOURCES))}
    assert train_sources == set(TRAIN_SOURCES) and test_sources == set(TEST_SOURCES)


@pytest.mark.parametrize("num_frames,size", [(1, 16), (7, (18, 30)), (17, 33)])
def test_natural_any_format_in_range(num_frames, size):
    item = NaturalClips("test", num_frames=num_frames, size=size, fps=12)[1]
    h, w = (size, size) if isinstance(size, int) else size
    assert item["video"].shape == (3, num_frames, h, w)
    assert item["video"].dtype == torch.float32
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert item["video"].std() > 0.02  # real picture content, not a flat frame


def test_natural_clips_move():
    clip = NaturalClips("train", num_frames=9, size=32)[0]["video"]
    assert (clip[:, -1] - clip[:, 0]).abs().mean() > 0.01


def test_shapes_deterministic_and_captioned():
    a, b = ShapesDataset("train", num_frames=6, size=32, seed=1), ShapesDataset("train", num_frames=6, size=32, seed=1)
    item = a[5]
    assert torch.equal(item["video"], b[5]["video"])
    assert item["video"].shape == (3, 6, 32, 32)
    words = item["caption"].split()
    for key in ("shape", "color", "background"):
        assert item[key] in words
    assert not torch.equal(item["video"], ShapesDataset("train", num_frames=6, size=32, seed=2)[5]["video"])


def test_shapes_coverage_is_the_rendered_silhouette():
    plain = ShapesDataset("train", num_frames=6, size=32, seed=1)
    masked = ShapesDataset("train", num_frames=6, size=32, seed=1, with_coverage=True)
    for i in (0, 7):
        item = masked[i]
        assert "coverage" not in plain[i] and torch.equal(item["video"], plain[i]["video"])  # same clip either way
        coverage, video = item["coverage"], item["video"]
        assert coverage.shape == (6, 32, 32) and 0 <= coverage.min() and coverage.max() <= 1
        colour = torch.tensor(COLORS[item["color"]]) * 2 - 1
        inside = coverage == 1  # fully covered pixels carry the shape's colour exactly
        pixels = video.permute(1, 2, 3, 0)[inside]  # (n, 3)
        assert len(pixels) > 20 and torch.allclose(pixels, colour.expand_as(pixels))
        outside = coverage == 0
        assert outside.sum() > 0.5 * outside.numel()  # a small object on a background


def test_shapes_held_out_split_excludes_its_combinations():
    held_out = set(HELD_OUT_PAIRS)
    assert {c for c, _ in held_out} == set(COLORS) and {m for _, m in held_out} == set(MOTIONS)
    train, test = all_combinations("train"), all_combinations("test")
    assert not {(c.color, c.motion) for c in train} & held_out
    assert {(c.color, c.motion) for c in test} == held_out
    assert len(train) + len(test) == len(all_combinations("all"))
    # every colour and every motion is still seen in training (composition is what is held out)
    assert {c.color for c in train} == set(COLORS) and {c.motion for c in train} == set(MOTIONS)
    dataset = ShapesDataset("train", num_frames=2, size=8)
    assert all((dataset.attributes(i).color, dataset.attributes(i).motion) not in held_out for i in range(len(dataset)))


def test_shapes_motion_is_rendered():
    dataset = ShapesDataset("all", num_frames=8, size=32)

    def centroid_x(frame):  # mass of the difference from the (static) background along x
        weights = (frame - frame.median()).abs().sum(0)
        return (weights.sum(0) * torch.arange(32)).sum() / weights.sum()

    for i in range(len(dataset)):
        attrs = dataset.attributes(i)
        if attrs.motion in ("left", "right") and attrs.background in ("black", "gray"):
            video = dataset[i]["video"]
            moved = centroid_x(video[:, -1]) - centroid_x(video[:, 0])
            assert (moved < -3) if attrs.motion == "left" else (moved > 3), attrs.caption
            return
    pytest.fail("no left/right item on a flat background found")


def test_shapes_wrap_is_off_by_default_and_changes_translations_only():
    plain, wrapped = ShapesDataset("train", num_frames=9, size=32), ShapesDataset("train", num_frames=9, size=32,
                                                                                   wrap=True)
    assert not plain.wrap and torch.equal(plain[0]["video"], ShapesDataset("train", num_frames=9, size=32,
                                                                           wrap=False)[0]["video"])
    for i in range(40):
        same = torch.equal(plain[i]["video"], wrapped[i]["video"])
        assert same == (plain.attributes(i).motion not in ("left", "right", "up", "down")), plain.attributes(i)
    with pytest.raises(InvalidInputError, match="wrap"):
        ShapesDataset(wrap=1)


def test_shapes_wrap_leaves_and_reenters_from_the_opposite_edge():
    from vidgen.data.shapes import ShapeAttributes, render_shape_video
    exits = entries = 0
    for seed in range(30):
        for motion, sign in (("left", -1), ("down", 1)):
            g = torch.Generator().manual_seed(seed)
            _, cov = render_shape_video(ShapeAttributes("square", "red", motion, "black"), 17, (64, 64), g,
                                        return_coverage=True, wrap=True)
            line = cov.sum(1) if motion == "left" else cov.sum(2)  # (T, 64): coverage along the motion's axis
            area = cov.sum((1, 2))
            inside = area > 0.99 * area.max()
            lead, trail = (line[:, :4], line[:, -4:]) if sign < 0 else (line[:, -4:], line[:, :4])
            assert not (lead.sum(1).gt(0) & trail.sum(1).gt(0)).any()  # never on both edges at once
            centre = (line * torch.arange(64)).sum(1) / line.sum(1).clamp(min=1e-6)
            whole = inside[1:] & inside[:-1]
            assert ((centre[1:] - centre[:-1])[whole] * sign > 1.0).all()  # the caption's motion while whole
            # leaving: whole, then less and less of it, at the edge it moves towards
            exits += bool(inside[0] and area[-1] < 0.5 * area.max() and lead[-1].sum() > 0 or
                          inside[0] and area[-1] == 0)
            # entering: first seen in part at the opposite edge, whole later
            entries += bool(0 < area[0] < 0.5 * area.max() and trail[0].sum() > 0 and inside[-1])
    assert exits >= 3 and entries >= 3, (exits, entries)


def test_shapes_torus_crosses_the_edge_and_is_never_absent():
    from vidgen.data.shapes import ShapeAttributes, render_shape_video
    plain, torus = ShapesDataset("train", num_frames=9, size=32), ShapesDataset("train", num_frames=9, size=32,
                                                                                 wrap="torus")
    for i in range(40):  # translations only change
        same = torch.equal(plain[i]["video"], torus[i]["video"])
        assert same == (plain.attributes(i).motion not in ("left", "right", "up", "down")), plain.attributes(i)
    crossings = 0
    for seed in range(30):
        for motion, sign in (("left", -1), ("down", 1)):
            g = torch.Generator().manual_seed(seed)
            _, cov = render_shape_video(ShapeAttributes("square", "red", motion, "black"), 17, (64, 64), g,
                                        return_coverage=True, wrap="torus")
            area = cov.sum((1, 2))
            assert (area - area[0]).abs().max() < 0.01 * area[0]  # the whole shape in every frame (antialiasing aside)
            line = cov.sum(1) if motion == "left" else cov.sum(2)  # (T, 64): coverage along the motion's axis
            both = (line[:, :2].sum(1) > 0) & (line[:, -2:].sum(1) > 0)  # drawn at both edges at once
            crossings += bool(both.any())
            # the caption's motion: the shape's mass moves the right way round the torus between frames
            angle = torch.arange(64) * (2 * torch.pi / 64)
            phase = torch.atan2((line * angle.sin()).sum(1), (line * angle.cos()).sum(1))
            step = torch.remainder(phase[1:] - phase[:-1] + torch.pi, 2 * torch.pi) - torch.pi
            assert (step * sign > 0).all(), (seed, motion)
    assert crossings >= 5, crossings
    with pytest.raises(InvalidInputError, match="torus"):
        ShapesDataset(wrap="loop")


def test_motion_frames_keeps_the_short_clip_and_goes_on_at_its_pace():
    short = ShapesDataset("train", num_frames=9, size=32)
    long = ShapesDataset("train", num_frames=25, size=32, motion_frames=9)
    for i in range(24):
        a, b = short[i], long[i]
        assert b["caption"] == a["caption"], i
        # the same frames up to float rounding: a per-frame op over 25 frames takes other SIMD lanes than over 9,
        # which moves a growing shape's radius by an ulp on some CPUs (AVX2 without AVX-512: ~1e-6)
        torch.testing.assert_close(b["video"][:, :9], a["video"], atol=1e-5, rtol=0, msg=a["caption"])
    same = ShapesDataset("train", num_frames=9, size=32, motion_frames=9)
    assert torch.equal(same[3]["video"], short[3]["video"])  # motion_frames = num_frames is the default
    from vidgen.data.shapes import ShapeAttributes, render_shape_video
    for seed in range(4):  # then on at the same pace: a steady step in a frame wide enough to hold the shape
        _, cov = render_shape_video(ShapeAttributes("circle", "red", "right", "black"), 25, (64, 320),
                                    torch.Generator().manual_seed(seed), return_coverage=True, motion_frames=9)
        _, own = render_shape_video(ShapeAttributes("circle", "red", "right", "black"), 9, (64, 320),
                                    torch.Generator().manual_seed(seed), return_coverage=True)
        x, x9 = ((c.sum(1) * torch.arange(320)).sum(1) / c.sum((1, 2)) for c in (cov, own))
        torch.testing.assert_close(x[1:] - x[:-1], torch.full((24,), float(x9[1] - x9[0])), atol=0.02, rtol=0)


def test_shapes_torus_late_starts_as_without_wrap_then_crosses_the_edge():
    from vidgen.data.shapes import ShapeAttributes, render_shape_video
    plain = ShapesDataset("train", num_frames=17, size=64, with_coverage=True)
    late = ShapesDataset("train", num_frames=17, size=64, wrap="torus-late")
    for i in range(60):  # a clip of its own pace is the plain clip until the shape reaches an edge
        p = plain[i]
        edge = p["coverage"][:, [0, -1], :].sum() + p["coverage"][:, :, [0, -1]].sum()
        assert torch.equal(p["video"], late[i]["video"]) or edge > 0, p["caption"]
    crossings = 0
    for seed in range(12):
        for motion, sign in (("left", -1), ("up", -1), ("right", 1), ("down", 1)):
            g = torch.Generator().manual_seed(seed)
            _, cov = render_shape_video(ShapeAttributes("square", "red", motion, "black"), 81, (64, 64), g,
                                        return_coverage=True, wrap="torus-late", motion_frames=17)
            g = torch.Generator().manual_seed(seed)
            _, start = render_shape_video(ShapeAttributes("square", "red", motion, "black"), 17, (64, 64), g,
                                          return_coverage=True)
            if start[0][[0, -1]].sum() + start[0][:, [0, -1]].sum() == 0:  # where the plain clip starts
                torch.testing.assert_close(cov[0], start[0], atol=1e-5, rtol=0)
            area = cov.sum((1, 2))
            assert (area - area[0]).abs().max() < 0.01 * area[0]  # the whole shape in every frame (antialiasing aside)
            line = cov.sum(1) if motion in ("left", "right") else cov.sum(2)  # (T, 64) along the motion's axis
            crossings += bool(((line[:, :2].sum(1) > 0) & (line[:, -2:].sum(1) > 0)).any())  # at both edges at once
            angle = torch.arange(64) * (2 * torch.pi / 64)  # the caption's motion, the right way round the torus
            phase = torch.atan2((line * angle.sin()).sum(1), (line * angle.cos()).sum(1))
            step = torch.remainder(phase[1:] - phase[:-1] + torch.pi, 2 * torch.pi) - torch.pi
            assert (step * sign > 0).all(), (seed, motion)
    assert crossings >= 40, crossings  # nearly every 81-frame clip crosses an edge


def test_dataloader_with_workers_matches_direct_indexing():
    dataset = ShapesDataset("test", num_frames=4, size=16, num_samples=6)
    loader = DataLoader(dataset, batch_size=3, num_workers=2)
    batches = list(loader)
    assert batches[0]["video"].shape == (3, 3, 4, 16, 16)
    assert torch.equal(batches[1]["video"][2], dataset[5]["video"])
    assert batches[1]["caption"][2] == dataset[5]["caption"]
    natural = DataLoader(NaturalClips("test", num_frames=3, size=16, num_clips=4), batch_size=2, num_workers=2)
    assert next(iter(natural))["video"].shape == (2, 3, 3, 16, 16)


def test_video_folder(tmp_path):
    clips = NaturalClips("test", num_frames=10, size=24, num_clips=2)
    write_video(tmp_path / "a.mp4", clips[0]["video"], fps=8)
    (tmp_path / "sub").mkdir()
    write_video(tmp_path / "sub" / "b.gif", clips[1]["video"], fps=8)
    (tmp_path / "notes.txt").write_text("ignored")
    dataset = VideoFolder(tmp_path, num_frames=4, size=16, stride=2, clip_sampling="center")
    assert len(dataset) == 2
    item = dataset[0]
    assert item["video"].shape == (3, 4, 16, 16) and item["start"] == 1  # (10 - 7) // 2
    random_a = VideoFolder(tmp_path, num_frames=3, clip_sampling="random", seed=5)
    random_b = VideoFolder(tmp_path, num_frames=3, clip_sampling="random", seed=5)
    assert random_a[1]["start"] == random_b[1]["start"]
    batch = next(iter(DataLoader(dataset, batch_size=2, num_workers=0)))
    assert batch["video"].shape == (2, 3, 4, 16, 16)
    with pytest.raises(VideoIOError, match="a.mp4"):
        VideoFolder(tmp_path, num_frames=20, clip_sampling="center")[0]


def test_export_captioned_round_trips_through_video_folder(tmp_path, load_script):
    module = load_script("pipelines/export_text_video_data.py")
    out = tmp_path / "shapes"
    assert module.main(["--split", "test", "--num-videos", "3", "--frames", "5", "--size", "16", "--out", str(out)]) == 0
    source = ShapesDataset("test", num_frames=5, size=16, num_samples=3)
    folder = VideoFolder(out, num_frames=5)
    assert len(folder) == 3
    for index in range(3):
        item, original = folder[index], source[index]
        assert item["caption"] == original["caption"]
        assert item["metadata"]["color"] == original["color"] and item["metadata"]["split"] == "test"
        assert item["video"].shape == (3, 5, 16, 16)
        assert (item["video"] - original["video"]).abs().mean() < 0.05  # H.264 at CRF 18
    batch = next(iter(DataLoader(folder, batch_size=3)))
    assert list(batch["caption"]) == [source[i]["caption"] for i in range(3)]


def test_video_folder_metadata_errors(tmp_path):
    clip = NaturalClips("test", num_frames=2, size=16, num_clips=1)[0]["video"]
    write_video(tmp_path / "a.mp4", clip, fps=8)
    write_video(tmp_path / "b.mp4", clip, fps=8)
    metadata = tmp_path / "metadata.jsonl"
    metadata.write_text(json.dumps({"file_name": "a.mp4", "text": "x"}) + "\n")
    with pytest.raises(VideoIOError, match="no entry for 1 video.*b.mp4"):
        VideoFolder(tmp_path, num_frames=2)
    metadata.write_text('{"file_name": "a.mp4", "text": "x"}\n{not json\n')
    with pytest.raises(VideoIOError, match="line 2 is not valid JSON"):
        VideoFolder(tmp_path, num_frames=2)
    metadata.write_text('{"text": "x"}\n')
    with pytest.raises(VideoIOError, match="line 1 needs a 'file_name'"):
        VideoFolder(tmp_path, num_frames=2)


def test_dataset_argument_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="split"):
        NaturalClips("validation")
    with pytest.raises(InvalidInputError, match="num_frames"):
        ShapesDataset(num_frames=0)
    with pytest.raises(InvalidInputError, match="size"):
        NaturalClips(size=(0, 4))
    with pytest.raises(VideoIOError, match="no videos"):
        VideoFolder(tmp_path)
    from vidgen.data.folder import find_videos, folder_fingerprint
    for reader in (VideoFolder, find_videos, folder_fingerprint):  # "" is not read as the current folder
        with pytest.raises(InvalidInputError, match=r"root is empty: give the folder of videos \('\.' for the current"):
            reader("")


def test_cli_preview_of_a_folder_shows_its_videos_as_training_reads_them(tmp_path, capsys):
    from vidgen.cli import main
    from vidgen.io import write_video

    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(folder / name, torch.rand(3, 6, 24, 32) * 2 - 1, fps=8)
    (folder / "metadata.jsonl").write_text('{"file_name": "a.mp4", "text": "a kite"}\n'
                                           '{"file_name": "b.mp4", "text": "the sea"}\n')
    out = tmp_path / "out"
    assert main(["data", "preview", "--folder", str(folder), "--out", str(out), "--num-frames", "4", "--size", "16"]) == 0
    assert f"folder/all: 2 videos -> {out}/folder_all_contact_sheet.png" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert [r["dataset"] for r in report] == ["folder"]  # the built-in datasets only when asked for too
    assert [v["label"] for v in report[0]["videos"]] == ["a kite", "the sea"]
    assert len(list(out.glob("folder_all_*.mp4"))) == 2 and (out / "folder_all_contact_sheet.png").stat().st_size > 0
    assert main(["data", "preview", "--folder", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere: not a folder" in capsys.readouterr().err


def test_cli_preview_and_info(tmp_path, capsys):
    from vidgen.cli import main

    assert main(["data", "preview", "--out", str(tmp_path), "--num-videos", "2", "--num-frames", "4", "--size", "16"]) == 0
    for name in ("natural", "scenes", "shapes"):
        assert (tmp_path / f"{name}_train_contact_sheet.png").stat().st_size > 0
        assert len(list(tmp_path.glob(f"{name}_train_*.mp4"))) == 2
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["dataset"] for r in report] == ["natural", "scenes", "shapes"]
    capsys.readouterr()
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["packages"]["torch"] and "offline_weights" in info

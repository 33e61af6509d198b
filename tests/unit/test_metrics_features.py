"""Real feature networks end to end, kept small (CPU): FID features, FVD functional and the CLI."""
import json

import pytest
import torch

from vidgen.cli import main
from vidgen.metrics.fid import FrechetInceptionDistance, load_inception


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_fid_features_have_shape_n_by_2048_and_per_frame_videos_flatten():
    net = load_inception()
    assert len(net.weights_sha256) == 64
    metric = FrechetInceptionDistance(progress=False, num_threads=1)
    images = torch.rand(2, 3, 40, 48) * 2 - 1
    feats = metric.features(images)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    video = torch.stack([images, images.flip(0)], dim=2)  # (2, 3, 2, H, W): per-frame FID sees 4 images
    frames = FrechetInceptionDistance._as_images(video)
    assert frames.shape == (4, 3, 40, 48)
    assert torch.equal(frames[0], images[0]) and torch.equal(frames[1], images[1]) and torch.equal(frames[2], images[1])



def test_fid_channels_last_fast_path_matches_the_contiguous_reference():
    """FID's default Inception layout (channels_last) against the plain path, on the trained weights and real
    photographs: the same features to fp32 rounding, and the requested memory format is the one used."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    images = torch.stack([torch.from_numpy(p[:300, :300].copy()) for p in photos]).permute(0, 3, 1, 2)  # uint8
    fast = FrechetInceptionDistance(channels_last=True, num_threads=1, progress=False)
    plain = FrechetInceptionDistance(channels_last=False, num_threads=1, progress=False)
    first = next(p for p in fast.network.parameters() if p.ndim == 4)
    assert first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
    assert next(p for p in plain.network.parameters() if p.ndim == 4).is_contiguous()
    reference = plain.features(images)
    assert reference.abs().max() > 1 and reference.std(dim=0).mean() > 0.1  # trained, and the photos differ
    torch.testing.assert_close(fast.features(images), reference, atol=1e-4, rtol=1e-4)

@pytest.fixture(scope="module")
def video_folders(tmp_path_factory):
    from vidgen.data.natural import NaturalClips
    from vidgen.io import write_video

    root = tmp_path_factory.mktemp("fvd")
    clips = NaturalClips("train", num_frames=9, size=(32, 40), num_clips=4, seed=3)
    for i in range(2):
        write_video(root / "real" / f"{i}.mp4", clips[i]["video"], fps=8)
    for i in range(2, 4):
        write_video(root / "fake" / f"{i}.mp4", clips[i]["video"], fps=8)
    return root


def test_cli_fvd_with_saved_real_statistics(video_folders, tmp_path, capsys):
    stats, out = tmp_path / "real.npz", tmp_path / "fvd.json"
    common = ["--num-frames", "9", "--threads", "1", "--quiet", "--no-noise-floor"]
    assert main(["eval", "fvd", "--real", str(video_folders / "real"), "--save-real-stats", str(stats), *common]) == 0
    assert json.loads(capsys.readouterr().out)["n_real"] == 2
    fake = ["--fake", str(video_folders / "fake"), "--max-videos", "2"]
    assert main(["eval", "fvd", "--real", str(stats), *fake, "--output", str(out), *common]) == 0
    result = json.loads(out.read_text())
    protocol = result["protocol"]
    assert result["metric"] == "FVD" and result["value"] > 0
    assert protocol["n_real"] == 2 and protocol["n_fake"] == 2 and protocol["num_frames"] == 9
    assert protocol["real_inputs"][0]["input_hw"] == [[32, 40]] and len(protocol["weights_sha256"]) == 64
    assert main(["eval", "fid", "--real", str(stats), *fake, *common]) == 2  # FVD statistics are not FID's
    assert "2048-d" in capsys.readouterr().err


@pytest.mark.parametrize("real_name,extra,message", [
    ("real", ["--num-frames", "8"], "--num-frames must be >= 9"),  # I3D needs 9: refused before decoding anything
    ("real", ["--max-videos", "-3"], "--max-videos must be >= 2"),  # a negative slice would silently drop videos
    ("real.npz", ["--save-real-stats", "x.npz"], "--save-real-stats needs --real to be a folder"),  # not ignored
])
def test_cli_refuses_bad_options_before_reading_videos(tmp_path, capsys, real_name, extra, message):
    real = tmp_path / real_name
    if real.suffix == ".npz":
        real.write_bytes(b"")
    else:
        real.mkdir()
    assert main(["eval", "fvd", "--real", str(real), "--fake", str(tmp_path), "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err


def test_cli_checks_the_fake_folder_before_the_real_features(video_folders, tmp_path, capsys, monkeypatch):
    """The fake folder is read last; an empty or one-video folder is refused before any real clip is decoded."""
    import shutil

    import vidgen.cli.eval_metrics as cli

    def never(*args, **kwargs):
        raise AssertionError("the real set was read before the fake folder was checked")

    monkeypatch.setattr(cli, "_feed_fvd", never)
    (tmp_path / "empty").mkdir()
    real = ["eval", "fvd", "--real", str(video_folders / "real"), "--quiet"]
    assert main([*real, "--fake", str(tmp_path / "empty")]) == 2
    assert "empty: no videos found" in capsys.readouterr().err
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next(p for p in sorted((video_folders / "fake").iterdir()) if p.suffix == ".mp4"), one)
    assert main([*real, "--fake", str(one)]) == 2
    assert "one: 1 video, and FVD's covariance needs at least 2" in capsys.readouterr().err

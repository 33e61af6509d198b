"""Video I/O: round trips within codec tolerance and a clear VideoIOError for every kind of bad file."""
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.data import NaturalClips
from vidgen.errors import InvalidInputError, VidgenError, VideoIOError
from vidgen.io import contact_sheet, probe_video, read_video, save_image, to_uint8_frames, write_video


def smooth_video(frames=9, height=32, width=48, seed=0):
    """A natural camera-motion clip: realistic content for codec tolerances (white noise is not)."""
    return NaturalClips("test", num_frames=frames, size=(height, width), seed=seed)[0]["video"]


def ffmpeg(*args):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True, timeout=60)


@pytest.mark.parametrize("height,width", [(32, 48), (33, 47)])
def test_mp4_round_trip(tmp_path, height, width):
    video = smooth_video(height=height, width=width)
    path = write_video(tmp_path / "clip.mp4", video, fps=12)
    out, fps = read_video(path)
    assert out.shape == video.shape and out.dtype == torch.float32
    assert fps == pytest.approx(12.0)
    assert out.min() >= -1 and out.max() <= 1
    assert (out - video).abs().mean() < 0.03  # H.264 at CRF 18 (measured ~0.02)
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (9, height, width)


def test_gif_round_trip_keeps_identical_frames(tmp_path):
    video = smooth_video(frames=6)
    video[:, 3] = video[:, 2]  # duplicate frame: some GIF writers merge these and change the frame count
    path = write_video(tmp_path / "clip.gif", video, fps=10)
    out, fps = read_video(path)
    assert out.shape == video.shape
    assert fps == pytest.approx(10.0)
    assert (out - video).abs().mean() < 0.03  # 256-colour palette (measured ~0.011)


def test_channels_last_uint8_input(tmp_path):
    frames = to_uint8_frames(smooth_video())  # (T, H, W, 3) uint8
    path = write_video(tmp_path / "clip.mp4", frames, fps=8, quality=0)
    out, _ = read_video(path)
    restored = to_uint8_frames(out)
    assert restored.shape == frames.shape
    assert np.abs(restored.astype(int) - frames.astype(int)).mean() < 3.0  # 4:2:0 chroma (measured ~1.7)


def test_selection_matches_full_read(tmp_path):
    path = write_video(tmp_path / "clip.mp4", smooth_video(frames=12), fps=8)
    full, _ = read_video(path)
    part, fps = read_video(path, num_frames=4, start=2, stride=3)
    assert torch.equal(part, full[:, 2:12:3])
    assert fps == pytest.approx(8 / 3)


def test_resize_and_center_crop(tmp_path):
    path = write_video(tmp_path / "clip.mp4", smooth_video(height=32, width=48), fps=8)
    square, _ = read_video(path, size=16)
    assert square.shape == (3, 9, 16, 16)
    rect, _ = read_video(path, size=(20, 10))
    assert rect.shape == (3, 9, 20, 10)
    assert square.min() >= -1 and square.max() <= 1


def test_frame_folder_with_grayscale_and_rgba(tmp_path):
    rgb = to_uint8_frames(smooth_video(frames=3, height=16, width=16))
    Image.fromarray(rgb[0]).save(tmp_path / "000.png")
    Image.fromarray(rgb[1][..., 0]).convert("L").save(tmp_path / "001.png")  # grayscale
    Image.fromarray(np.concatenate([rgb[2], np.full((16, 16, 1), 255, np.uint8)], -1), "RGBA").save(tmp_path / "002.png")
    video, fps = read_video(tmp_path)
    assert video.shape == (3, 3, 16, 16)
    assert fps > 0
    gray = video[:, 1]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert np.array_equal(to_uint8_frames(video)[2], rgb[2])  # alpha dropped, colours exact (PNG is lossless)


# ------------------------------------------------------------------------------------------ bad input


def expect_error(path, match, **kwargs):
    with pytest.raises(VideoIOError, match=match) as info:
        read_video(path, **kwargs)
    assert str(path) in str(info.value)  # the message names the file
    assert isinstance(info.value, ValueError) and isinstance(info.value, VidgenError)


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.mp4", "no such file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    expect_error(path, "empty")


def test_non_video_bytes(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are meeting notes, not a video\n" * 20)
    expect_error(path, "not a video")


def test_unsupported_format(tmp_path):
    path = tmp_path / "clip.txt"
    path.write_text("x")
    expect_error(path, "unsupported format")


def test_truncated_container_moov_at_end(tmp_path):
    data = write_video(tmp_path / "full.mp4", smooth_video(frames=12), fps=8).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 2 // 3])
    expect_error(path, "truncated")


def test_truncated_stream_faststart(tmp_path):
    full = tmp_path / "faststart.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=8", "-frames:v", "24", "-pix_fmt", "yuv420p",
           "-movflags", "+faststart", str(full))  # fmt: skip
    data = full.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 6 // 10])
    expect_error(path, "truncated")


def test_corrupt_stream(tmp_path):
    data = bytearray(write_video(tmp_path / "full.mp4", smooth_video(frames=12), fps=8).read_bytes())
    for i in range(len(data) // 3, len(data) * 2 // 3):
        data[i] = (data[i] * 7 + 13) % 256
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    expect_error(path, "corrupt")


def test_zero_frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "readme.txt").write_text("no frames here")
    expect_error(folder, "zero frames")
    no_stream = tmp_path / "nostream.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=size=32x32:rate=8", "-frames:v", "0", "-pix_fmt", "yuv420p", str(no_stream))
    expect_error(no_stream, "no video stream")


def test_too_few_frames_is_an_error_not_a_shorter_clip(tmp_path):
    path = write_video(tmp_path / "clip.mp4", smooth_video(frames=5), fps=8)
    expect_error(path, "only 5 frames", num_frames=6)
    expect_error(path, "past the last frame", start=7)


def test_bad_selection_arguments(tmp_path):
    path = write_video(tmp_path / "clip.mp4", smooth_video(frames=5), fps=8)
    for kwargs in ({"num_frames": 0}, {"stride": 0}, {"start": -1}):
        with pytest.raises(InvalidInputError):
            read_video(path, **kwargs)


def test_write_rejects_bad_tensors(tmp_path):
    with pytest.raises(InvalidInputError, match="4 dims"):
        write_video(tmp_path / "a.mp4", torch.zeros(3, 8, 8), fps=8)
    with pytest.raises(InvalidInputError, match="colour channels"):
        write_video(tmp_path / "a.mp4", torch.zeros(4, 2, 8, 8), fps=8)
    bad = torch.zeros(3, 2, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN"):
        write_video(tmp_path / "a.mp4", bad, fps=8)
    with pytest.raises(VideoIOError, match="cannot write"):
        write_video(tmp_path / "a.avi", torch.zeros(3, 2, 8, 8), fps=8)
    with pytest.raises(InvalidInputError, match="fps"):
        write_video(tmp_path / "a.mp4", torch.zeros(3, 2, 8, 8), fps=0)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_contact_sheet_layout(tmp_path):
    videos = [smooth_video(frames=t, height=16, width=16, seed=t) for t in (3, 10)]
    sheet = contact_sheet(videos, ["short", "long"], frames_per_row=4, gap=2)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[0] == 2 * (16 + 2) + 2
    # the first cell of row 2 is exactly the first frame of the second video
    label_width = sheet.shape[1] - 4 * (16 + 2) - 2
    cell = sheet[2 + 18 : 2 + 18 + 16, label_width + 2 : label_width + 18]
    assert np.array_equal(cell, to_uint8_frames(videos[1])[0])
    path = save_image(tmp_path / "sheet.png", sheet)
    assert np.array_equal(np.asarray(Image.open(path)), sheet)


def test_the_same_frames_make_the_same_file_every_time(tmp_path):
    """A seed's video must be reproducible byte for byte. With x264's macroblock-tree rate control on, a small clip
    written after a decode came out differently in 14 of 250 writes (experiments/results/x264_determinism.json):
    60 writes, each in a fresh thread as in the app, each followed by a decode, must give one file."""
    import hashlib
    import threading

    from vidgen.io import VideoWriter

    video = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (3, 9, 16, 16)).astype(np.float32))
    hashes = set()

    def write_and_read(i):
        with VideoWriter(tmp_path / f"clip{i % 3}.mp4", fps=8) as writer:
            writer.write(video)
        read_video(tmp_path / f"clip{i % 3}.mp4")
        hashes.add(hashlib.sha256((tmp_path / f"clip{i % 3}.mp4").read_bytes()).hexdigest())

    for i in range(60):
        worker = threading.Thread(target=write_and_read, args=(i,))
        worker.start()
        worker.join()
    assert len(hashes) == 1, f"{len(hashes)} different files from the same frames"

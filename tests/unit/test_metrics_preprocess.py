import numpy as np
import pytest
import torch

from vidgen.errors import InvalidInputError
from vidgen.metrics.fid import preprocess_for_inception
from vidgen.metrics.fvd import preprocess_for_i3d
from vidgen.metrics.preprocess import tf1_bilinear_resize, to_signed_unit


def test_i3d_preprocessing_is_a_no_op_at_224_and_maps_uint8():
    x = torch.rand(1, 3, 2, 224, 224) * 2 - 1
    assert torch.equal(preprocess_for_i3d(x), x)
    u8 = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 1, 2).expand(1, 3, 2, 224, 2).repeat(1, 1, 1, 1, 112)
    out = preprocess_for_i3d(u8)
    assert out.dtype == torch.float32 and out.min() == -1 and out.max() == 1


def test_i3d_preprocessing_resizes_short_side_and_centre_crops():
    ramp = torch.linspace(-1, 1, 96).view(1, 1, 1, 1, 96).expand(2, 3, 3, 48, 96)  # wide: 48 x 96
    out = preprocess_for_i3d(ramp)
    assert out.shape == (2, 3, 3, 224, 224)
    # short side 48 -> 224 makes the frame 224 x 448; the centre crop keeps the middle half of the ramp
    assert out[..., 0].mean().item() == pytest.approx(-0.5, abs=0.02)
    assert out[..., -1].mean().item() == pytest.approx(0.5, abs=0.02)
    torch.testing.assert_close(out, -out.flip(-1), atol=1e-5, rtol=0)  # centred: antisymmetric like the ramp
    tall = preprocess_for_i3d(torch.zeros(1, 3, 1, 300, 250))
    assert tall.shape == (1, 3, 1, 224, 224)


def test_inputs_out_of_range_or_of_the_wrong_type_are_errors_not_clamped():
    with pytest.raises(InvalidInputError, match=r"\[-1, 1\]"):
        preprocess_for_i3d(torch.full((1, 3, 1, 8, 8), 1.5))
    with pytest.raises(InvalidInputError, match="dtype"):
        preprocess_for_i3d(torch.zeros(1, 3, 1, 8, 8, dtype=torch.int32))
    with pytest.raises(InvalidInputError, match="NaN"):
        to_signed_unit(torch.full((1, 3, 1, 8, 8), float("nan")))
    with pytest.raises(InvalidInputError, match=r"\(N, 3, T, H, W\)"):
        preprocess_for_i3d(torch.zeros(3, 1, 8, 8))
    with pytest.raises(InvalidInputError, match=r"\(N, 3, H, W\)"):
        preprocess_for_inception(torch.zeros(1, 3, 1, 8, 8))


def _tf1_resize_numpy(img, out_h, out_w):
    """TF1 resize_bilinear(align_corners=False, half_pixel_centers=False), written out per pixel."""
    in_h, in_w = img.shape[-2:]
    out = np.zeros(img.shape[:-2] + (out_h, out_w))
    for i in range(out_h):
        y = i * in_h / out_h
        y0 = int(np.floor(y)); y1 = min(y0 + 1, in_h - 1); fy = y - y0
        for j in range(out_w):
            x = j * in_w / out_w
            x0 = int(np.floor(x)); x1 = min(x0 + 1, in_w - 1); fx = x - x0
            top = img[..., y0, x0] * (1 - fx) + img[..., y0, x1] * fx
            bottom = img[..., y1, x0] * (1 - fx) + img[..., y1, x1] * fx
            out[..., i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize("size_in,size_out", [((5, 7), (11, 9)), ((12, 10), (5, 4))])
def test_tf1_bilinear_resize_matches_the_definition(size_in, size_out):
    img = torch.rand(2, 3, *size_in, dtype=torch.float64)
    ours = tf1_bilinear_resize(img, size_out)
    np.testing.assert_allclose(ours.numpy(), _tf1_resize_numpy(img.numpy(), *size_out), rtol=1e-6, atol=1e-6)


def test_inception_preprocessing_range_and_size():
    u8 = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 299, 2).repeat(1, 1, 1, 150)[..., :299]
    out = preprocess_for_inception(u8)
    assert out.shape == (1, 3, 299, 299)
    assert out.min().item() == -1.0 and out.max().item() == pytest.approx(127 / 128)  # (255 - 128) / 128
    assert preprocess_for_inception(torch.zeros(2, 3, 32, 48)).shape == (2, 3, 299, 299)

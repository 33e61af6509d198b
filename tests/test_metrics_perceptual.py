import pytest
import torch

from vidgen.errors import InvalidInputError, MissingWeightsError
from vidgen.metrics.perceptual import PerceptualDistance, _published_keys_to_ours, load_perceptual


@pytest.fixture(scope="module")
def st_alex():
    return load_perceptual("stlpips", "alex")


def _natural_image(h=64, w=64):
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (h, w), anti_aliasing=True)
    return torch.from_numpy(img).permute(2, 0, 1).float()[None] * 2 - 1


def test_stlpips_loads_every_array_and_is_named_honestly(st_alex):
    assert st_alex.name == "ST-LPIPS-alex"
    assert "LPIPS" in st_alex.name and st_alex.name.startswith("ST-")
    assert len(st_alex.weights_sha256["trunk+linear"]) == 64
    assert not any(p.requires_grad for p in st_alex.parameters())


def test_stlpips_values_are_ordered_and_symmetric(st_alex):
    img = _natural_image()
    g = torch.Generator().manual_seed(0)
    small = (img + 0.03 * torch.randn(img.shape, generator=g)).clamp(-1, 1)
    large = (img + 0.3 * torch.randn(img.shape, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        d = st_alex(torch.cat([img, img, img]), torch.cat([img, small, large]))
        d_rev = st_alex(torch.cat([small, large]), torch.cat([img, img]))
    assert d.shape == (3,) and d[0].item() == 0.0
    assert 0 < d[1] < d[2]
    torch.testing.assert_close(d_rev, d[1:], rtol=1e-5, atol=1e-6)


def test_stlpips_is_a_differentiable_loss(st_alex):
    img = _natural_image(48, 48)
    y = torch.zeros_like(img, requires_grad=True)
    st_alex(img, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    st_alex.train()
    assert not st_alex.training  # a fixed metric never switches to train mode


def test_lpips_architecture_matches_lpips_package_plumbing_only():
    """Plumbing test with a RANDOM trunk (lpips' pnet_rand=True): checks our LPIPS module's layer layout,
    scaling, normalisation and linear heads equal the lpips package's. Not an LPIPS value."""
    lpips = pytest.importorskip("lpips")
    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    ours = PerceptualDistance("alex", shift_tolerant=False, name="plumbing-random-trunk")
    ours.load_state_dict(_published_keys_to_ours({k: v for k, v in ref.state_dict().items() if not k.startswith("lins.")}))
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), ref(x, y).flatten(), rtol=1e-5, atol=1e-6)


def test_lpips_without_cached_backbone_raises_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="not downloaded"):
        load_perceptual("lpips", "alex")
    assert load_perceptual("auto", "alex").name == "ST-LPIPS-alex"  # falls back, and says so in its name


def test_bad_arguments_raise(st_alex):
    with pytest.raises(InvalidInputError, match="kind"):
        load_perceptual("ssim")
    with pytest.raises(InvalidInputError, match="net"):
        load_perceptual("stlpips", "resnet")
    with pytest.raises(InvalidInputError, match="at least 32"):
        st_alex(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    with pytest.raises(InvalidInputError, match="same shape"):
        st_alex(torch.zeros(1, 3, 32, 32), torch.zeros(2, 3, 32, 32))

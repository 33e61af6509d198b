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


# the lpips package itself still calls torchvision with the deprecated `pretrained=` argument
@pytest.mark.filterwarnings("ignore::UserWarning:torchvision")
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


def test_video_reconstruction_report_names_the_perceptual_variant(st_alex):
    from vidgen.metrics import reconstruction_metrics

    x = torch.rand(2, 3, 2, 32, 32) * 2 - 1
    y = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    with torch.no_grad():
        report = reconstruction_metrics(x, y, perceptual=st_alex)
        per_frame = st_alex(x[:, :, 1], y[:, :, 1])
        first = st_alex(x[:, :, 0], y[:, :, 0])
    assert set(report) == {"psnr", "ssim", "flicker", "ST-LPIPS-alex"} and "LPIPS" not in report
    torch.testing.assert_close(report["ST-LPIPS-alex"], (first + per_frame) / 2)


def test_normalisation_has_finite_gradients_at_all_zero_features():
    from vidgen.metrics.perceptual import _unit_length

    feat = torch.zeros(1, 4, 2, 2)
    feat[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0, 0.0])
    feat.requires_grad_(True)
    out = _unit_length(feat)
    out.sum().backward()
    torch.testing.assert_close(out[0, :, 0, 0].detach(), torch.tensor([0.6, 0.8, 0.0, 0.0]))
    assert torch.isfinite(feat.grad).all()


@pytest.mark.parametrize("net,expected", [("alex", [0.05746739, 0.12224557, 0.00462785]),
                                          ("vgg", [0.26511633, 0.21660736, 0.01365948])])
def test_stlpips_values_match_the_reference_package(net, expected):
    """Reference values: stlpips-pytorch 0.0.2's own LPIPS(net, variant="shift_tolerant") on the same inputs
    (noise / blur / 1-px shift of astronaut at 96x128), computed once with its optional imports stubbed."""
    from skimage import data, transform

    img = torch.from_numpy(transform.resize(data.astronaut(), (96, 128))).permute(2, 0, 1).float()[None] * 2 - 1
    noisy = (img + 0.1 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    blur = torch.nn.functional.avg_pool2d(img, 3, 1, 1, count_include_pad=False)
    with torch.no_grad():
        got = load_perceptual("stlpips", net)(torch.cat([img, img, img]), torch.cat([noisy, blur, torch.roll(img, 1, -1)]))
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-4, atol=1e-6)

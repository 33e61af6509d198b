import json

import numpy as np
import pytest
import torch

from vidgen.errors import InvalidInputError
from vidgen.metrics.frechet import (
    FeatureStats,
    FrechetMetric,
    fd_from_stats,
    frechet_distance,
    noise_floor,
    trace_sqrt_product,
)


def test_fd_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_fd_of_identical_sets_is_zero_and_symmetric():
    feats = np.random.default_rng(1).normal(size=(50, 8))
    a, b = FeatureStats(8).update(feats), FeatureStats(8).update(feats[::-1])
    assert fd_from_stats(a, b) == pytest.approx(0.0, abs=1e-9)
    c = FeatureStats(8).update(feats + 0.5)
    assert fd_from_stats(a, c) == pytest.approx(fd_from_stats(c, a), rel=1e-9)
    assert fd_from_stats(a, c) == pytest.approx(8 * 0.25, rel=1e-9)  # pure mean shift


def test_streaming_statistics_equal_batch_statistics():
    rng = np.random.default_rng(2)
    feats = rng.normal(loc=3.0, scale=2.0, size=(97, 5)) @ rng.normal(size=(5, 5))
    streamed = FeatureStats(5)
    for chunk in np.array_split(feats, [1, 2, 30, 31, 70]):  # includes 1-row chunks
        streamed.update(torch.from_numpy(chunk))  # float64 tensors accepted too
    np.testing.assert_allclose(streamed.mean, feats.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(streamed.cov, np.cov(feats, rowvar=False), rtol=1e-10, atol=1e-12)
    left, right = FeatureStats(5).update(feats[:40]), FeatureStats(5).update(feats[40:])
    merged = left.merge(right)
    np.testing.assert_allclose(merged.cov, np.cov(feats, rowvar=False), rtol=1e-10, atol=1e-12)


def test_singular_covariances_give_finite_values_matching_the_eigen_form():
    rng = np.random.default_rng(3)
    a, b = FeatureStats(40).update(rng.normal(size=(5, 40))), FeatureStats(40).update(rng.normal(size=(5, 40)))
    value = fd_from_stats(a, b)
    assert np.isfinite(value) and value > 0
    rank_one = np.outer(np.ones(4), np.ones(4))
    assert np.isfinite(frechet_distance(np.zeros(4), rank_one, np.ones(4), np.zeros((4, 4))))
    full1, full2 = np.cov(rng.normal(size=(60, 6)), rowvar=False), np.cov(rng.normal(size=(60, 6)), rowvar=False)
    from scipy.linalg import sqrtm

    assert trace_sqrt_product(full1, full2) == pytest.approx(np.trace(sqrtm(full1 @ full2)).real, rel=1e-8)


def test_an_overshooting_sqrtm_falls_back_to_the_eigen_form_instead_of_clamping(monkeypatch):
    import scipy.linalg

    rng = np.random.default_rng(7)
    c1, c2 = np.cov(rng.normal(size=(30, 5)), rowvar=False), np.cov(rng.normal(size=(30, 5)), rowvar=False)
    exact = frechet_distance(np.zeros(5), c1, np.ones(5), c2)
    true_sqrtm = scipy.linalg.sqrtm
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: 10.0 * true_sqrtm(m))  # trace far too large: FD < 0
    assert frechet_distance(np.zeros(5), c1, np.ones(5), c2) == pytest.approx(exact, rel=1e-8)
    assert exact > 5.0  # the mean shift alone is 5: the fallback did not just return 0


def test_noise_floor_from_split_halves_predicts_same_distribution_fd():
    rng = np.random.default_rng(6)
    d, n = 8, 400
    scales = np.sqrt(np.arange(1, d + 1, dtype=float) ** -1.0)  # power-law spectrum, not isotropic

    def sample(k):
        return rng.normal(size=(k, d)) * scales

    observed = np.mean([fd_from_stats(FeatureStats(d).update(sample(n)), FeatureStats(d).update(sample(n)))
                        for _ in range(30)])
    estimates = []
    for _ in range(30):
        ref = sample(n)
        floor = noise_floor(FeatureStats(d).update(ref[::2]), FeatureStats(d).update(ref[1::2]), n, n)
        assert floor["reliable"] and floor["split_half_fd"] > floor["estimate"]
        estimates.append(floor["estimate"])
    assert np.mean(estimates) == pytest.approx(observed, rel=0.25)
    small = noise_floor(FeatureStats(d).update(sample(10)), FeatureStats(d).update(sample(10)), 20, 20)
    assert not small["reliable"]


def test_stats_save_load_roundtrip_and_bad_inputs(tmp_path):
    stats = FeatureStats(3, meta={"metric": "FVD"}).update(np.random.default_rng(4).normal(size=(10, 3)))
    stats.save(tmp_path / "s.npz")
    loaded = FeatureStats.load(tmp_path / "s.npz")
    assert loaded.count == 10 and loaded.meta == {"metric": "FVD"}
    np.testing.assert_allclose(loaded.cov, stats.cov)
    with pytest.raises(InvalidInputError, match=r"\(N, 3\)"):
        stats.update(np.zeros((2, 4)))
    with pytest.raises(InvalidInputError, match="NaN"):
        stats.update(np.full((2, 3), np.nan))
    with pytest.raises(InvalidInputError, match="at least 2"):
        FeatureStats(3).update(np.zeros((1, 3))).cov
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="not a vidgen statistics file"):
        FeatureStats.load(tmp_path / "bad.npz")


class _MeanColourNet(torch.nn.Module):
    """Plumbing-only stand-in for a feature network (NOT a real metric): per-channel means and stds."""

    weights_sha256 = params_sha256 = "plumbing"

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)


class _PlumbingMetric(FrechetMetric):
    name, dim = "plumbing-FD", 6

    def _load_network(self):
        return _MeanColourNet()

    def _preprocess(self, x):
        return x


def test_stateful_metric_update_compute_reset_and_saved_stats(tmp_path):
    real, fake = torch.rand(12, 3, 2, 4, 4), torch.rand(10, 3, 2, 4, 4) * 0.5
    metric = _PlumbingMetric(batch_size=5, progress=False, protocol_extra={"stride": 2})
    metric.update(real[:7], real=True)
    metric.update(real[7:], real=True)
    metric.update(fake, real=False)
    result = metric.compute(with_noise_floor=True)
    feats = _MeanColourNet()(torch.cat([real, fake])).double().numpy()
    expected = frechet_distance(feats[:12].mean(0), np.cov(feats[:12], rowvar=False), feats[12:].mean(0),
                                np.cov(feats[12:], rowvar=False))
    assert result["value"] == pytest.approx(expected, rel=1e-9)
    assert result["protocol"]["n_real"] == 12 and result["protocol"]["n_fake"] == 10
    assert result["protocol"]["stride"] == 2 and result["noise_floor"]["split_half_sizes"] == [6, 6]
    halves_fd = result["noise_floor"]["split_half_fd"]
    assert halves_fd == pytest.approx(fd_from_stats(FeatureStats(6).update(feats[:12:2]), FeatureStats(6).update(feats[1:12:2])))
    json.dumps(result)  # serialisable as is

    metric.save_real_stats(tmp_path / "real.npz")
    other = _PlumbingMetric(progress=False)
    other.load_real_stats(tmp_path / "real.npz")
    other.update(fake, real=False)
    reloaded = other.compute(with_noise_floor=True)
    assert reloaded["value"] == pytest.approx(result["value"], rel=1e-12)
    assert reloaded["noise_floor"]["split_half_fd"] == pytest.approx(halves_fd, rel=1e-12)  # halves saved too

    metric.reset(keep_real=True)
    assert metric.real.count == 12 and metric.fake.count == 0
    with pytest.raises(InvalidInputError, match="at least 2 fake"):
        metric.compute()
    metric.reset()
    assert metric.real.count == 0


def test_foreign_stats_without_protocol_are_used_with_a_warning(tmp_path):
    feats = np.random.default_rng(8).normal(size=(6, 6))
    np.savez(tmp_path / "foreign.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False), count=6)
    metric = _PlumbingMetric(progress=False)
    metric.load_real_stats(tmp_path / "foreign.npz")
    np.testing.assert_allclose(metric.real.cov, np.cov(feats, rowvar=False))
    metric.update(torch.rand(4, 3, 2, 4, 4), real=False)
    result = metric.compute()
    assert "no protocol metadata" in result["warnings"][0] and "unavailable" in result["noise_floor"]


def test_loading_stats_of_another_protocol_is_refused(tmp_path):
    stats = FeatureStats(6, meta={"metric": "FVD", "params_sha256": "something-else"})
    stats.update(np.random.default_rng(5).normal(size=(4, 6))).save(tmp_path / "other.npz")
    with pytest.raises(InvalidInputError, match="different protocol"):
        _PlumbingMetric(progress=False).load_real_stats(tmp_path / "other.npz")


def test_stats_saved_under_a_former_network_label_load_when_the_parameter_hash_matches(tmp_path):
    """A renamed ``feature_network`` label (FID's network once had another) does not orphan saved statistics: a file
    recording the same parameter hash loads; another hash, or no hash, is still refused."""
    class Renamed(_PlumbingMetric):
        def protocol_base(self):
            return {"feature_network": "plumbing network, current label"}

    rng = np.random.default_rng(6)
    for name, meta, loads in [("same.npz", {"params_sha256": "plumbing"}, True),
                              ("other.npz", {"params_sha256": "something-else"}, False),
                              ("unhashed.npz", {}, False)]:
        stats = FeatureStats(6, meta={"metric": "plumbing-FD", "feature_network": "former label", **meta})
        stats.update(rng.normal(size=(4, 6))).save(tmp_path / name)
        if loads:
            Renamed(progress=False).load_real_stats(tmp_path / name)
        else:
            with pytest.raises(InvalidInputError, match="different protocol: .*feature_network"):
                Renamed(progress=False).load_real_stats(tmp_path / name)


def test_metric_input_errors_and_frame_count_mismatch_warning():
    with pytest.raises(InvalidInputError, match="batch_size"):
        _PlumbingMetric(batch_size=0)
    with pytest.raises(InvalidInputError, match="num_threads"):
        _PlumbingMetric(num_threads=0)  # would otherwise silently mean "all threads"
    metric = _PlumbingMetric(progress=False)
    with pytest.raises(InvalidInputError, match="non-empty"):
        metric.update(torch.zeros(0, 3, 2, 4, 4), real=True)
    with pytest.raises(InvalidInputError, match="non-empty"):
        metric.update([1, 2], real=True)
    metric.update(torch.rand(4, 3, 2, 4, 4), real=True)
    metric.update(torch.rand(4, 3, 3, 4, 4), real=False)
    assert "different frame counts" in metric.compute(with_noise_floor=False)["warnings"][0]


def test_compute_flags_a_distance_from_fewer_samples_than_four_times_the_dimension():
    """An FD from a few dozen clips is sampling noise (docs/fvd.md): compute() says so instead of leaving the reader
    to know the rule; 4 * dim samples per set is where it stops being flagged."""
    rng = torch.Generator().manual_seed(7)
    few = _PlumbingMetric(progress=False)
    few.update(torch.rand(12, 3, 2, 4, 4, generator=rng), real=True)
    few.update(torch.rand(23, 3, 2, 4, 4, generator=rng), real=False)
    assert few.compute()["reliability"] == {"n_real": 12, "n_fake": 23, "min_samples": 24, "reliable": False}
    enough = _PlumbingMetric(progress=False)
    enough.update(torch.rand(24, 3, 2, 4, 4, generator=rng), real=True)
    enough.update(torch.rand(30, 3, 2, 4, 4, generator=rng), real=False)
    assert enough.compute()["reliability"]["reliable"] is True

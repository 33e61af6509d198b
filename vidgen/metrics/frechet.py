"""Streaming Gaussian statistics of feature vectors and the Fréchet distance between two of them.

One implementation serves FVD (I3D logits, d=400) and FID (Inception pool, d=2048).

* :class:`FeatureStats` accumulates float64 mean and unbiased covariance batch by batch (Chan et al.'s
  parallel update of the centred sum of squares), so 10k videos never need to sit in memory and the result
  equals the one-shot ``np.mean`` / ``np.cov`` up to float64 rounding.
* :func:`frechet_distance` is ``|mu1 - mu2|^2 + tr(C1 + C2 - 2 sqrtm(C1 C2))`` with the real part of
  ``scipy.linalg.sqrtm`` (what the TF and StyleGAN-V implementations use). If sqrtm returns non-finite values
  (singular covariances, e.g. fewer samples than dimensions) or a trace so large that the distance would be
  negative, the trace term is computed from the eigenvalues of ``sqrt(C1) C2 sqrt(C1)`` instead, which is the
  same quantity and always finite (never a distance silently clamped from a clearly negative value to 0).
* :func:`noise_floor` measures the FD that two *independent* samples of the reference distribution show (split
  halves of the reference set, rescaled to the evaluated sizes) - values at or below it mean nothing.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch
from tqdm.auto import tqdm

from vidgen.errors import InvalidInputError


@dataclass
class FeatureStats:
    """Running float64 mean / centred sum of squares of ``dim``-d features."""

    dim: int
    count: int = 0
    mean_: np.ndarray = field(default=None, repr=False)  # (d,)
    m2_: np.ndarray = field(default=None, repr=False)  # (d, d) sum of outer products of centred features
    meta: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict, repr=False)  # named extra statistics read by load()

    def __post_init__(self):
        if self.mean_ is None:
            self.mean_ = np.zeros(self.dim, dtype=np.float64)
        if self.m2_ is None:
            self.m2_ = np.zeros((self.dim, self.dim), dtype=np.float64)

    def update(self, features) -> "FeatureStats":
        feats = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features, dtype=np.float64)
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise InvalidInputError(f"features must have shape (N, {self.dim}), got {feats.shape}")
        if not np.isfinite(feats).all():
            raise InvalidInputError("features contain NaN or infinite values")
        n = feats.shape[0]
        if n == 0:
            return self
        batch_mean = feats.mean(axis=0)
        centred = feats - batch_mean
        delta = batch_mean - self.mean_
        total = self.count + n
        self.m2_ += centred.T @ centred + np.outer(delta, delta) * (self.count * n / total)
        self.mean_ += delta * (n / total)
        self.count = total
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        if other.dim != self.dim:
            raise InvalidInputError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        if other.count:
            delta, total = other.mean_ - self.mean_, self.count + other.count
            self.m2_ += other.m2_ + np.outer(delta, delta) * (self.count * other.count / total)
            self.mean_ += delta * (other.count / total)
            self.count = total
        return self

    @property
    def mean(self) -> np.ndarray:
        return self.mean_.copy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (divides by N - 1)."""
        if self.count < 2:
            raise InvalidInputError(f"need at least 2 samples for a covariance, have {self.count}")
        return self.m2_ / (self.count - 1)

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}mu": self.mean_, f"{prefix}m2": self.m2_, f"{prefix}count": np.int64(self.count)}

    @classmethod
    def from_arrays(cls, data, prefix: str = "") -> "FeatureStats":
        mu, count = np.asarray(data[f"{prefix}mu"], np.float64), int(data[f"{prefix}count"])
        m2 = data[f"{prefix}m2"] if f"{prefix}m2" in data else data[f"{prefix}sigma"] * (count - 1)
        return cls(dim=mu.shape[0], count=count, mean_=mu, m2_=np.asarray(m2, dtype=np.float64))

    def save(self, path: str | os.PathLike, **extra: "FeatureStats") -> None:
        """Write ``.npz``: mu, sigma (unbiased), m2, count, protocol metadata (JSON) and optional named extra
        statistics (e.g. the split halves used for the noise floor)."""
        arrays = {**self.to_arrays(), "sigma": self.cov, "meta": np.array(json.dumps(self.meta, sort_keys=True))}
        for name, stats in extra.items():
            arrays.update(stats.to_arrays(f"{name}_"))
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, extra: tuple[str, ...] = ()) -> "FeatureStats":
        """Inverse of :meth:`save`; extra statistics that are present are returned in ``.extras``."""
        try:
            with np.load(path, allow_pickle=False) as data:
                stats = cls.from_arrays(data)
                stats.meta = json.loads(str(data["meta"])) if "meta" in data else {}
                stats.extras = {name: cls.from_arrays(data, f"{name}_") for name in extra if f"{name}_mu" in data}
        except (OSError, KeyError, ValueError) as err:
            raise InvalidInputError(f"{path} is not a vidgen statistics file (.npz with mu, sigma, count): "
                                    f"{err}") from err
        return stats


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu, sigma = np.atleast_1d(np.asarray(mu, np.float64)), np.atleast_2d(np.asarray(sigma, np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InvalidInputError(f"{name}: mean must be (d,) and covariance (d, d), got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise InvalidInputError(f"{name}: statistics contain NaN or infinite values")
    return mu, sigma


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrtm(C1 C2)) for PSD C1, C2 via the symmetric form sqrt(C1) C2 sqrt(C1): always real and finite."""
    root1 = _psd_sqrt(sigma1)
    eig = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    return float(np.sqrt(np.clip(eig, 0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64)."""
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "first distribution")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "second distribution")
    if mu1.shape != mu2.shape:
        raise InvalidInputError(f"feature dimensions differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    with warnings.catch_warnings():  # "matrix is singular" is handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if np.isfinite(covmean).all():
        tr_covmean = float(np.real(np.trace(covmean)))
    else:  # singular product: scipy gives inf/nan, the eigenvalue form does not
        tr_covmean = trace_sqrt_product(sigma1, sigma2)
    diff = mu1 - mu2
    base = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2))
    value = base - 2.0 * tr_covmean
    if value < -1e-9 * max(base, 1.0):  # sqrtm overshot (near-singular product): the eigen form cannot
        value = base - 2.0 * trace_sqrt_product(sigma1, sigma2)
    return max(value, 0.0)  # what is left below 0 is float rounding of (nearly) identical distributions


def fd_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(a.mean_, a.cov, b.mean_, b.cov)


def noise_floor(half_a: FeatureStats, half_b: FeatureStats, n_real: int, n_fake: int) -> dict:
    """FD expected between two independent samples (sizes n_real, n_fake) of the *reference* distribution.

    Measured, not modelled: the reference set is split into two halves (alternate samples) and
    ``split_half_fd = FD(half_a, half_b)``. Since FD grows as samples shrink, that is an upper bound of the floor at
    the full sizes. ``estimate`` rescales it with FD ~ c (1/n_a + 1/n_b), which holds once each half has >= 2 d
    samples (``reliable``); below that the estimate is too low. A Gaussian plug-in simulation (sampling from the
    reference covariance) is not used: with N not >> d it underestimates badly (rank-deficient covariance).
    """
    if min(half_a.count, half_b.count) < 2:
        raise InvalidInputError("the noise floor needs at least 4 reference samples")
    split = fd_from_stats(half_a, half_b)
    scale = (1 / n_real + 1 / n_fake) / (1 / half_a.count + 1 / half_b.count)
    return {"split_half_fd": split, "split_half_sizes": [half_a.count, half_b.count], "estimate": split * scale,
            "reliable": min(half_a.count, half_b.count) >= 2 * half_a.dim}


def reliability(n_real: int, n_fake: int, dim: int) -> dict:
    """Whether an FD between ``n_real`` and ``n_fake`` samples of ``dim``-d features can be read as a value: each set
    needs ``4 * dim`` samples (split halves of ``2 * dim``, where the measured :func:`noise_floor` is accurate; 1600
    clips for FVD's 400-d I3D features). Below that the FD is dominated by sampling noise: ``reliable`` is False."""
    minimum = 4 * dim
    return {"n_real": int(n_real), "n_fake": int(n_fake), "min_samples": minimum,
            "reliable": min(n_real, n_fake) >= minimum}


STATISTICS = "float64 mean, unbiased covariance (streamed); FD with the real part of scipy.linalg.sqrtm"


class FrechetMetric:
    """Stateful Fréchet metric over a feature network: ``update(x, real=...)``, ``compute()``, ``reset()``.

    Subclasses set ``name``, ``dim``, ``memory_format`` and implement ``_load_network()`` (returning a module with
    ``weights_sha256`` / ``params_sha256``), ``_preprocess(x)`` and ``protocol_base()``.

    ``channels_last`` (default) runs the network with weights and inputs in the subclass's ``memory_format``, the
    layout its convolutions are fastest in on these CPUs; ``channels_last=False`` is the plain reference path. The
    two give the same features to fp32 rounding, so statistics from either may be compared.
    """

    name = "FD"
    dim = 0
    memory_format = torch.contiguous_format

    def __init__(self, batch_size: int = 8, device: str | torch.device = "cpu", num_threads: int | None = None,
                 progress: bool = True, protocol_extra: dict | None = None, channels_last: bool = True):
        if not isinstance(channels_last, bool):
            raise InvalidInputError(f"channels_last must be True (the fast default) or False (the reference layout), "
                                    f"got {channels_last!r}")
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        if num_threads is not None and num_threads < 1:
            raise InvalidInputError(f"num_threads must be None (all CPU threads) or >= 1, got {num_threads}")
        self.batch_size, self.device, self.progress = batch_size, torch.device(device), progress
        self.channels_last = channels_last
        self.num_threads = num_threads or os.cpu_count() or 1
        self.protocol_extra = dict(protocol_extra or {})
        self._network: torch.nn.Module | None = None
        self.reset()

    # -- subclass hooks -------------------------------------------------------------------------------------
    def _load_network(self) -> torch.nn.Module:
        raise NotImplementedError

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _items_shape(self, x: torch.Tensor) -> dict:
        """What to record about an input batch (frames, resolution)."""
        return {"frames": int(x.shape[2]) if x.ndim == 5 else 1, "input_hw": [int(s) for s in x.shape[-2:]]}

    def protocol_base(self) -> dict:
        return {}

    # -- public API -------------------------------------------------------------------------------------------
    @property
    def network(self) -> torch.nn.Module:
        if self._network is None:
            self._network = self._load_network().to(self.device)
            if self.channels_last:
                self._network = self._network.to(memory_format=self.memory_format)
        return self._network

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format) if self.channels_last else x

    def reset(self, keep_real: bool = False) -> None:
        if not keep_real or not hasattr(self, "real"):
            self.real, self._seen_real = FeatureStats(self.dim), set()
            # alternate real samples also go to two halves: their FD measures the sampling noise floor
            self.real_halves: tuple[FeatureStats, ...] | None = (FeatureStats(self.dim), FeatureStats(self.dim))
        self.fake, self._seen_fake = FeatureStats(self.dim), set()

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors ``(N, dim)`` of a batch, in chunks of ``batch_size`` with all CPU threads."""
        if not isinstance(x, torch.Tensor) or x.ndim < 4 or x.shape[0] == 0:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidInputError(f"{self.name} input must be a non-empty batch tensor (N, 3, ...), got {got}")
        chunks = list(torch.split(x, self.batch_size))
        previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            out = [self.network(self._layout(self._preprocess(c).to(self.device))).float().cpu()
                   for c in tqdm(chunks, desc=f"{self.name} features", disable=not self.progress or len(chunks) < 2)]
        finally:
            torch.set_num_threads(previous)
        return torch.cat(out)

    def update(self, x: torch.Tensor, real: bool, record: dict | None = None) -> None:
        """Add a batch to the real or fake set. ``record`` overrides what is logged about the inputs (e.g. the
        original frame size when the caller already resized)."""
        feats = self.features(x)
        stats, seen = (self.real, self._seen_real) if real else (self.fake, self._seen_fake)
        if real and self.real_halves is not None:
            first_even = self.real.count % 2  # keep alternating across calls
            self.real_halves[0].update(feats[first_even::2])
            self.real_halves[1].update(feats[1 - first_even::2])
        stats.update(feats)
        seen.add(json.dumps(record or self._items_shape(x), sort_keys=True))

    def protocol(self) -> dict:
        net = self.network
        record = {"metric": self.name, **self.protocol_base(), "statistics": STATISTICS,
                  "weights_sha256": net.weights_sha256, "params_sha256": net.params_sha256,
                  "n_real": self.real.count, "n_fake": self.fake.count,
                  "real_inputs": self.real.meta.get("inputs") or sorted(json.loads(s) for s in self._seen_real),
                  "fake_inputs": sorted(json.loads(s) for s in self._seen_fake), **self.protocol_extra}
        return record

    def compute(self, with_noise_floor: bool = True) -> dict:
        """``{"value": FD, "protocol": {...}, "reliability": {...}, "noise_floor": {...}}`` (see :func:`reliability`
        and :func:`noise_floor`)."""
        for label, stats in (("real", self.real), ("fake", self.fake)):
            if stats.count < 2:
                raise InvalidInputError(f"{self.name} needs at least 2 {label} samples, have {stats.count}")
        result = {"metric": self.name, "value": fd_from_stats(self.real, self.fake), "protocol": self.protocol(),
                  "reliability": reliability(self.real.count, self.fake.count, self.dim)}
        frames = [{item.get("frames") for item in result["protocol"][f"{side}_inputs"]} for side in ("real", "fake")]
        notes = []
        if self.real.count and not self.real.meta and not self._seen_real:
            notes.append("the loaded reference statistics carry no protocol metadata: their feature network "
                             "and preprocessing could not be checked against this metric's")
        elif frames[0] != frames[1]:
            notes.append(f"real and fake clips have different frame counts: {frames[0]} vs {frames[1]}")
        if notes:
            result["warnings"] = notes
        if with_noise_floor and self.real_halves is not None and min(h.count for h in self.real_halves) >= 2:
            result["noise_floor"] = noise_floor(*self.real_halves, self.real.count, self.fake.count)
        elif with_noise_floor:
            result["noise_floor"] = "unavailable: reference statistics without split halves (or < 4 samples)"
        return result

    @classmethod
    def between(cls, real: torch.Tensor, fake: torch.Tensor, **kwargs) -> float:
        """The distance between two in-memory batches; kwargs go to the constructor."""
        metric = cls(**kwargs)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        return metric.compute(with_noise_floor=False)["value"]

    def save_real_stats(self, path: str | os.PathLike) -> None:
        """Save the reference statistics with the protocol they were computed under."""
        self.real.meta = {key: value for key, value in self.protocol().items() if not key.startswith(("n_", "fake"))}
        self.real.meta["inputs"] = self.real.meta.pop("real_inputs")
        halves = dict(zip(("half_a", "half_b"), self.real_halves)) if self.real_halves is not None else {}
        self.real.save(path, **halves)

    def load_real_stats(self, path: str | os.PathLike) -> None:
        """Load reference statistics; refuses ones computed with another feature network or preprocessing. A file
        that records the network's parameter hash is matched on that hash, so one saved under another name of the
        same network (an earlier ``feature_network`` label) still loads."""
        stats = FeatureStats.load(path, extra=("half_a", "half_b"))
        if stats.dim != self.dim:
            raise InvalidInputError(f"{path} holds {stats.dim}-d statistics, {self.name} uses {self.dim}-d features")
        mine = {"metric": self.name, **self.protocol_base()}
        clash = {k: (stats.meta.get(k), v) for k, v in mine.items() if k in stats.meta and stats.meta[k] != v}
        if "params_sha256" in stats.meta and set(clash) <= {"feature_network"}:  # the network is loaded only when the rest agrees
            if stats.meta["params_sha256"] != self.network.params_sha256:
                clash["params_sha256"] = (stats.meta["params_sha256"], self.network.params_sha256)
            else:
                clash.pop("feature_network", None)  # the same parameters: only the recorded name differs
        if clash:
            raise InvalidInputError(f"{path} was computed under a different protocol: {clash}")
        self.real = stats
        halves = stats.extras
        self.real_halves = (halves["half_a"], halves["half_b"]) if len(halves) == 2 else None


__all__ = ["STATISTICS", "FeatureStats", "FrechetMetric", "fd_from_stats", "frechet_distance", "noise_floor",
           "reliability", "trace_sqrt_product"]

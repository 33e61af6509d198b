"""Perceptual distance (LPIPS family) usable as a metric and as a differentiable training loss.

Two trained variants can be built here, both with our own module code (the ``lpips`` / ``stlpips``
packages are never imported; only their weight files are read, with ``torch.load(weights_only=True)``):

* ``"lpips"`` - standard LPIPS v0.1 (Zhang et al. 2018): an ImageNet AlexNet/VGG16 trunk (torchvision's weight
  file, used only if it is *already* in torchvision's cache - nothing is ever downloaded) plus the linear
  calibration layers that ship inside the ``lpips`` package. Name: ``"LPIPS-alex"`` / ``"LPIPS-vgg"``.
* ``"stlpips"`` - shift-tolerant LPIPS (Ghildyal & Liu 2022): anti-aliased trunk *and* linear layers, both
  shipped inside ``stlpips-pytorch``. Name: ``"ST-LPIPS-alex"`` / ``"ST-LPIPS-vgg"``. Its values are not on the
  LPIPS scale: never report them as LPIPS.

``load_perceptual("auto")`` picks LPIPS when its backbone is cached, else ST-LPIPS. Input: two image batches
``(N, 3, H, W)`` in ``[-1, 1]``; output ``(N,)``. Parameters are frozen; gradients flow to the inputs.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidgen.errors import InvalidInputError, MissingWeightsError
from vidgen.metrics.weights import package_file, sha256_file

# torchvision's cached ImageNet weights (file name carries the first 8 hex digits of the file's sha256).
_TORCHVISION_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
_CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}
MIN_SIZE = 32


class _BlurDownsample(nn.Module):
    """Reflect-pad by 2, then a stride-2 depthwise [1,2,1] x [1,2,1] / 16 blur (ST-LPIPS 'pad_more' variant)."""

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _conv_relu(c_in: int, c_out: int, k: int, stride: int = 1, pad: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad), nn.ReLU()]


def _trunk_layers(net: str, shift_tolerant: bool) -> tuple[list[nn.Module], list[int]]:
    """Layer list (indices match the published state dicts) and the slice boundaries after each tapped ReLU."""
    if net == "alex" and not shift_tolerant:
        layers = [*_conv_relu(3, 64, 11, 4, 2), nn.MaxPool2d(3, 2), *_conv_relu(64, 192, 5, 1, 2), nn.MaxPool2d(3, 2),
                  *_conv_relu(192, 384, 3), *_conv_relu(384, 256, 3), *_conv_relu(256, 256, 3)]
        return layers, [2, 5, 8, 10, 12]
    if net == "alex":
        layers = [nn.Conv2d(3, 64, 11, 1, 2), _BlurDownsample(64), nn.ReLU(), nn.MaxPool2d(3, 1), _BlurDownsample(64),
                  *_conv_relu(64, 192, 5, 1, 2), nn.MaxPool2d(3, 1), _BlurDownsample(192),
                  *_conv_relu(192, 384, 3), *_conv_relu(384, 256, 3), *_conv_relu(256, 256, 3)]
        return layers, [3, 7, 11, 13, 15]
    if net == "vgg":
        layers, c_in = [], 3
        for block, (width, reps) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
            if block > 0:  # VGG max-pool between blocks; the shift-tolerant trunk blurs before subsampling
                layers += [nn.MaxPool2d(2, 1), _BlurDownsample(c_in)] if shift_tolerant else [nn.MaxPool2d(2, 2)]
            for _ in range(reps):
                layers += _conv_relu(c_in, width, 3)
                c_in = width
        ends = [4, 10, 18, 26, 34] if shift_tolerant else [4, 9, 16, 23, 30]
        return layers, ends
    raise InvalidInputError(f"net must be 'alex' or 'vgg', got {net!r}")


class _Trunk(nn.Module):
    def __init__(self, net: str, shift_tolerant: bool):
        super().__init__()
        layers, ends = _trunk_layers(net, shift_tolerant)
        starts = [0] + ends[:-1]
        for k, (lo, hi) in enumerate(zip(starts, ends), start=1):
            # modules keep their global index as name so state-dict keys read "slice2.5.weight"
            self.add_module(f"slice{k}", nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(lo, hi))))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            feats.append(x)
        return feats


class _Linear(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        # index 0 was Dropout in the original (inactive at eval); keep index 1 so keys read "model.1.weight"
        self.model = nn.Sequential(OrderedDict([("0", nn.Identity()), ("1", nn.Conv2d(channels, 1, 1, bias=False))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_length(feat: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's channel vector to unit length, as LPIPS does (``feat / (|feat| + 1e-10)``). The clamp
    changes no value but keeps the gradient finite where a pixel's features are all zero (sqrt'(0) = inf)."""
    norm = feat.pow(2).sum(dim=1, keepdim=True).clamp_min(1e-20).sqrt()
    return feat / (norm + 1e-10)


class PerceptualDistance(nn.Module):
    """LPIPS-style distance: ``forward(x, y)`` on ``(N, 3, H, W)`` in [-1, 1] -> ``(N,)``, differentiable."""

    def __init__(self, net: str = "alex", shift_tolerant: bool = True, name: str | None = None):
        super().__init__()
        self.net_kind, self.shift_tolerant = net, shift_tolerant
        self.name = name or f"{'ST-LPIPS' if shift_tolerant else 'LPIPS'}-{net}"
        self.weights_sha256: dict[str, str] = {}
        # LPIPS v0.1 input scaling (ImageNet statistics expressed in [-1, 1])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.net = _Trunk(net, shift_tolerant)
        self.lins = nn.ModuleList(_Linear(c) for c in _CHANNELS[net])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualDistance":
        return super().train(False)  # a fixed metric: never switch to training behaviour

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for label, t in (("x", x), ("y", y)):
            if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[1] != 3 or not t.is_floating_point():
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise InvalidInputError(f"{label} must be a float tensor (N, 3, H, W) in [-1, 1], got {got}")
            if min(t.shape[-2:]) < MIN_SIZE:
                raise InvalidInputError(f"{label}: frames must be at least {MIN_SIZE}x{MIN_SIZE}, "
                                        f"got {tuple(t.shape[-2:])}")
        if x.shape != y.shape:
            raise InvalidInputError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        both = torch.cat([x, y]).to(self.shift.dtype)
        feats = self.net((both - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0], dtype=self.shift.dtype)
        for feat, lin in zip(feats, self.lins):
            feat = _unit_length(feat)
            fx, fy = feat.chunk(2)
            total = total + lin((fx - fy).pow(2)).mean(dim=(1, 2, 3))
        return total


def video_perceptual_distance(distance: PerceptualDistance, x: torch.Tensor, y: torch.Tensor,
                              frames_per_batch: int = 32) -> torch.Tensor:
    """Per-video mean over frames of ``distance`` for ``(B, 3, T, H, W)`` batches -> ``(B,)``."""
    if x.ndim != 5 or x.shape != y.shape:
        raise InvalidInputError(f"x and y must be equal-shape (B, 3, T, H, W) batches, "
                                f"got {tuple(x.shape)}, {tuple(y.shape)}")
    b, c, t, h, w = x.shape
    xf = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, 3, H, W)
    yf = y.transpose(1, 2).reshape(b * t, c, h, w)
    per_frame = torch.cat([distance(xs, ys) for xs, ys in zip(xf.split(frames_per_batch), yf.split(frames_per_batch))])
    return per_frame.view(b, t).mean(dim=1)


def _published_keys_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the LPIPS packages' keys ("lin3.model.1.weight", "scaling_layer.shift") to this module's."""
    out = {}
    for key, value in state.items():
        if key.startswith("lin") and key[3].isdigit():
            key = f"lins.{key[3]}.{key[5:]}"
        out[key.removeprefix("scaling_layer.")] = value
    return out


def _torch_hub_checkpoint(net: str) -> Path:
    hub = Path(os.environ.get("TORCH_HOME", "")) / "hub" if os.environ.get("TORCH_HOME") else Path(torch.hub.get_dir())
    return hub / "checkpoints" / _TORCHVISION_FILES[net]


def lpips_backbone_available(net: str = "alex") -> bool:
    """True if torchvision's ImageNet weights for ``net`` are already cached (LPIPS computable offline)."""
    return _torch_hub_checkpoint(net).is_file()


def _load_lpips(net: str) -> PerceptualDistance:
    trunk_file = _torch_hub_checkpoint(net)
    if not trunk_file.is_file():
        raise MissingWeightsError(
            f"LPIPS-{net} needs torchvision's ImageNet weights at {trunk_file} (not downloaded automatically; "
            f"copy the file there from a machine with internet, or use kind='stlpips')"
        )
    digest = sha256_file(trunk_file)
    expected = _TORCHVISION_FILES[net].rsplit("-", 1)[1].split(".")[0]
    if not digest.startswith(expected):
        raise MissingWeightsError(f"{trunk_file} is corrupt: sha256 {digest[:8]}... does not start with {expected}")
    model = PerceptualDistance(net, shift_tolerant=False)
    layer_to_slice = {i: k for k, sl in enumerate(model.net.children(), start=1) for i in map(int, sl._modules)}
    trunk = torch.load(trunk_file, map_location="cpu", weights_only=True)
    state = {}
    for key, value in trunk.items():
        if key.startswith("features."):
            _, idx, param = key.split(".")
            state[f"net.slice{layer_to_slice[int(idx)]}.{idx}.{param}"] = value
    lin_file = package_file("lpips", f"weights/v0.1/{net}.pth", "pip install lpips")
    state.update(_published_keys_to_ours(torch.load(lin_file, map_location="cpu", weights_only=True)))
    state.update(shift=model.shift, scale=model.scale)
    model.load_state_dict(state, strict=True)
    model.weights_sha256 = {"trunk": digest, "linear": sha256_file(lin_file)}
    return model


def _load_stlpips(net: str) -> PerceptualDistance:
    path = package_file("stlpips_pytorch", f"weights/vST0.0/{net}_shift_tolerant.pth",
                        "pip install --no-deps stlpips-pytorch==0.0.2")
    state = _published_keys_to_ours(torch.load(path, map_location="cpu", weights_only=True))
    model = PerceptualDistance(net, shift_tolerant=True)
    model.load_state_dict(state, strict=True)  # every array used, none missing
    model.weights_sha256 = {"trunk+linear": sha256_file(path)}
    return model


def load_perceptual(kind: str = "auto", net: str = "alex") -> PerceptualDistance:
    """Build a trained perceptual distance: ``kind`` in {"auto", "lpips", "stlpips"}, ``net`` in {"alex", "vgg"}."""
    if net not in _CHANNELS:
        raise InvalidInputError(f"net must be 'alex' or 'vgg', got {net!r}")
    if kind == "lpips":
        return _load_lpips(net)
    if kind == "stlpips":
        return _load_stlpips(net)
    if kind == "auto":
        if lpips_backbone_available(net):
            return _load_lpips(net)
        try:
            return _load_stlpips(net)
        except MissingWeightsError as err:
            raise MissingWeightsError(
                f"no perceptual network available offline: LPIPS-{net} needs {_torch_hub_checkpoint(net)} and "
                f"ST-LPIPS needs the stlpips-pytorch package ({err})"
            ) from err
    raise InvalidInputError(f"kind must be 'auto', 'lpips' or 'stlpips', got {kind!r}")


__all__ = ["PerceptualDistance", "load_perceptual", "lpips_backbone_available", "video_perceptual_distance"]

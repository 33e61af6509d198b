"""Scratch conftest: lets diffusers' own test mixins (extracted to /work/scratch/diffusers-tests/tests) run against
vidgen's classes. Nothing here is diffusers test code; the markers and options come from diffusers' tests/conftest.py
itself (imported, not copied)."""
import os
import re
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The extracted diffusers tests/ tree (its `tests` package must be importable, ahead of any other `tests`). vidgen
# itself comes from PYTHONPATH (the README's commands) or, failing that, the venv's editable install of /work/main.
DIFFUSERS_TESTS = os.environ.get("DIFFUSERS_TESTS_ROOT", "/work/scratch/diffusers-tests")
if DIFFUSERS_TESTS not in sys.path:
    sys.path.insert(0, DIFFUSERS_TESTS)

# Test-only dependencies of the extracted tree that vidgen's venv lacks (test_pipelines_common.py imports
# `parameterized` through tests/models/unets/test_models_unet_2d_condition.py, and `requests_mock`), installed outside
# /work/main with `pip install --target /work/scratch/pydeps parameterized requests_mock`. Appended, so nothing in the
# venv is shadowed.
SCRATCH_DEPS = os.environ.get("VIDGEN_SCRATCH_DEPS", "/work/scratch/pydeps")
if os.path.isdir(SCRATCH_DEPS) and SCRATCH_DEPS not in sys.path:
    sys.path.append(SCRATCH_DEPS)

import pytest  # noqa: E402
import torch  # noqa: E402
from expectations import DESELECTED, EXPECTED_FAILURES  # noqa: E402  (this folder; pytest puts it on sys.path)

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


def pytest_collection_modifyitems(config, items):
    """Applies expectations.py: deselects its DESELECTED tests and marks its EXPECTED_FAILURES strict xfail with the
    exception (type and message) each must fail with. vidgen's classes are not put into diffusers' namespaces for any
    test. With VIDGEN_MIXINS_DESELECTED_LOG set, the deselected node ids are appended to that file (record.py reads
    them: a junit XML has no entry for a deselected test)."""
    kept, deselected = [], []
    for item in items:
        key = (item.path.name, getattr(item, "originalname", None) or item.name.split("[")[0])
        if key in DESELECTED:
            deselected.append(item)
            continue
        if key in EXPECTED_FAILURES:
            exc_type, pattern, reason = EXPECTED_FAILURES[key]
            match = pattern.format(pipeline_class=re.escape(getattr(item.cls, "pipeline_class", object).__name__))
            item.add_marker(pytest.mark.xfail(raises=pytest.RaisesExc(exc_type, match=match), strict=True,
                                              reason=reason))
        kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
        log = os.environ.get("VIDGEN_MIXINS_DESELECTED_LOG")
        if log:
            with open(log, "a") as f:
                f.writelines(item.nodeid + "\n" for item in deselected)


# Tiny models on a shared 2-core machine: one thread (vidgen's own tests do the same; OpenMP barriers dominate
# otherwise). VIDGEN_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("VIDGEN_TEST_THREADS", "1")))

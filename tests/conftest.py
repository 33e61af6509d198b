import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test runs one worker per core (pytest-xdist): each worker and the processes it starts use one thread, so
    # two workers do not oversubscribe the two cores (tiny ops spend their time in OpenMP barriers otherwise).
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: opt in with --runslow (make test-slow)")
    # The bf16 suites (tests/test_*_bf16.py) and the tests marked bf16 check the bf16 paths. On a CPU without
    # AVX512-BF16 / AMX, bf16 is emulated (measured 2026-11-25: the suite took 18 min instead of 3,
    # test_generators_bf16 alone 12) and dtype="auto" never picks it, so there they run only in make test-slow.
    from vidgen.precision import cpu_has_fast_bf16
    skip_bf16 = None if cpu_has_fast_bf16() else pytest.mark.skip(
        reason="bf16 is emulated on this CPU (no AVX512-BF16 / AMX) and dtype='auto' uses fp32 here: opt in with "
               "--runslow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
        elif skip_bf16 is not None and (item.path.name.endswith("_bf16.py") or item.get_closest_marker("bf16")):
            item.add_marker(skip_bf16)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One thread for a module of tiny-model tests (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny ops on
    the shared 2-core machine spend most of their time in OpenMP barriers otherwise (10x slower here under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _process_state_restored():
    """Tests run in any order (``make test-shuffled``): a test that runs a script's ``main`` (which may set the thread
    count, as scripts are allowed to) must not change what the next test computes. Library calls restore this state
    themselves; tests/unit/test_precision.py checks the trainers do. A test that builds an ``Accelerator`` itself
    leaves accelerate's process-wide state behind, and a later training run in another precision (``auto`` is bf16
    on a CPU with bf16 units) would then be refused: that state is cleared unless it was there before the test."""
    from accelerate.state import AcceleratorState
    threads = torch.get_num_threads()
    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    accelerate_was_set = bool(AcceleratorState._shared_state)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
    if not accelerate_was_set and AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def load_script():
    """``load_script("eval/readme_tables.py")``: a repository script (not a package module) imported by path."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def load(relative: str):
        path = root / relative
        spec = importlib.util.spec_from_file_location(f"_vidgen_script_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def tiny_pipeline():
    """``tiny_pipeline(kind, **arch)``: a tiny text-to-video pipeline (``masked`` / ``flow`` / ``autoregressive`` / ``causal``) on
    tiny tokenizers, weights perturbed so no residual branch is the identity (live weights), seeded; ``arch``
    overrides the generator preset (default ``text_dim=384, max_text_tokens=8, max_grid=(4, 4, 4)``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from vidgen.generators import (AutoregressiveVideoTransformer, CausalFlowVideoTransformer, FlowVideoTransformer,
                                   MaskedVideoTransformer, make_scheduler)
    from vidgen.pipelines import (AutoregressiveVideoPipeline, CausalVideoPipeline, FlowVideoPipeline,
                                  MaskedVideoPipeline)
    from vidgen.testing import perturb_weights
    from vidgen.tokenizers import CausalVAE, CausalVQVAE

    def build(kind: str, **arch):
        torch.manual_seed(0)
        arch = {"text_dim": 384, "max_text_tokens": 8, "max_grid": (4, 4, 4), **arch}
        if kind in ("flow", "causal"):
            vae = CausalVAE.from_preset("tiny")
            if kind == "causal":  # chunks of one latent frame, the sink and a window of 2
                arch = {"chunk_frames": 1, "window_chunks": 2, "sink_chunks": 1, **arch}
            gen = (FlowVideoTransformer if kind == "flow" else CausalFlowVideoTransformer).from_preset(
                "tiny", in_channels=4, **arch)
            perturb_weights(vae, gen)
            pipe = (FlowVideoPipeline if kind == "flow" else CausalVideoPipeline)(
                vae, gen, FlowMatchEulerDiscreteScheduler())
        else:
            tok = CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4))
            cls = MaskedVideoTransformer if kind == "masked" else AutoregressiveVideoTransformer
            gen = cls.from_preset("tiny", vocab_size=tok.vocab_size, **arch)
            perturb_weights(tok, gen)
            pipe = MaskedVideoPipeline(tok, gen, make_scheduler(gen)) if kind == "masked" else \
                AutoregressiveVideoPipeline(tok, gen)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    return build


def pytest_sessionfinish(session, exitstatus):
    """The equality tests' measured differences (tests/helpers/differences.py), where VIDGEN_DIFFERENCES_FILE asks
    for them."""
    path = os.environ.get("VIDGEN_DIFFERENCES_FILE")
    if path:
        from helpers import differences
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        # a pytest-xdist worker writes its own file; the controller, which ends after its workers, merges them
        differences.write(f"{path}.{worker}" if worker else path, merge=not worker)

"""diffusers' classic unittest-style ``PipelineTesterMixin`` (tests/pipelines/test_pipelines_common.py) run against
vidgen's three pipelines, composed the way diffusers composed it for CogVideoX while CogVideoX still used it:
``CogVideoXPipelineFastTests`` in tests/pipelines/cogvideo/test_cogvideox.py at diffusers commit
9e29014c63ac59e00bab0f41115285d9f50618b8 (the parent of #14276, which moved CogVideoX to the pytest-style mixins;
the file is identical at v0.39.0, last changed by 5e94d62eb4), i.e.

    class CogVideoXPipelineFastTests(PipelineTesterMixin, <3 cache mixins>, unittest.TestCase):
        pipeline_class, params, batch_params, image_params, image_latents_params, required_optional_params,
        test_xformers_attention=False, test_layerwise_casting=True, test_group_offloading=True,
        get_dummy_components(num_layers=1), get_dummy_inputs(device, seed=0),
        overrides: test_callback_inputs, test_inference_batch_single_identical(batch_size=3, expected_max_diff=1e-3),
                   test_attention_slicing_forward_pass(expected_max_diff=1e-3)
        own tests: test_inference, test_vae_tiling, test_fused_qkv_projections

Nothing of diffusers is copied. The mixin comes from the extracted tree (DIFFUSERS_TESTS_ROOT, commit 58eb52c080,
where test_pipelines_common.py is byte-identical to 9e29014c63's). CogVideoX's class attributes and its three
override methods are taken, by reference, from that commit's test_cogvideox.py, extracted on its own into
DIFFUSERS_COGVIDEOX_LEGACY_ROOT and imported as a module of the extracted `tests.pipelines.cogvideo` package (so its
relative imports resolve in the extracted tree). Importing it also runs its module-level ``enable_full_determinism()``,
as a CogVideoX test run would.

Not composed: CogVideoX's own tests (test_inference's CogVideoX-specific (8, 3, 16, 16) check, test_vae_tiling with
CogVideoX VAE keywords, test_fused_qkv_projections) and the three cache mixins (PyramidAttentionBroadcast /
FasterCache / FirstBlockCache test diffusers' CacheMixin hooks, a transformer feature vidgen does not offer; the
pytest-style harness, test_vidgen_pipelines.py, leaves them out for the same reason).

Components and inputs are built by test_vidgen_pipelines.py's configs (imported, not duplicated); only the generator
is rebuilt CogVideoX's way, on ``device`` with ``seed``.
"""
import importlib.util
import os
import sys
import unittest

import torch

import test_vidgen_pipelines as _harness  # component building, TOKENIZER_KEY
from tests.pipelines.test_pipelines_common import PipelineTesterMixin

import tests.pipelines.cogvideo  # noqa: F401  (parent package of the legacy module below)

# ------------------------------------------------------------------- CogVideoX's composition at the legacy commit
COGVIDEOX_COMMIT = "9e29014c63ac59e00bab0f41115285d9f50618b8"
_LEGACY_ROOT = os.environ.get("DIFFUSERS_COGVIDEOX_LEGACY_ROOT", "/work/scratch/diffusers-cogvideox-9e29014")
_LEGACY_NAME = "tests.pipelines.cogvideo._test_cogvideox_legacy"


def _import_legacy_cogvideox():
    """Import <commit>:tests/pipelines/cogvideo/test_cogvideox.py as a module of the extracted tree's package."""
    if _LEGACY_NAME in sys.modules:
        return sys.modules[_LEGACY_NAME]
    path = os.path.join(_LEGACY_ROOT, "tests", "pipelines", "cogvideo", "test_cogvideox.py")
    spec = importlib.util.spec_from_file_location(_LEGACY_NAME, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_LEGACY_NAME] = module
    spec.loader.exec_module(module)
    return module


# Only the module is bound here: a module-level TestCase subclass (CogVideoX's own class) would be collected by pytest.
_cogvideox = _import_legacy_cogvideox()


class _CogVideoXComposition:
    """CogVideoXPipelineFastTests' class attributes and mixin-test overrides, by reference."""

    params = _cogvideox.CogVideoXPipelineFastTests.params
    batch_params = _cogvideox.CogVideoXPipelineFastTests.batch_params
    image_params = _cogvideox.CogVideoXPipelineFastTests.image_params
    image_latents_params = _cogvideox.CogVideoXPipelineFastTests.image_latents_params
    required_optional_params = _cogvideox.CogVideoXPipelineFastTests.required_optional_params
    test_xformers_attention = _cogvideox.CogVideoXPipelineFastTests.test_xformers_attention
    test_layerwise_casting = _cogvideox.CogVideoXPipelineFastTests.test_layerwise_casting
    test_group_offloading = _cogvideox.CogVideoXPipelineFastTests.test_group_offloading

    # the overrides CogVideoX makes of PipelineTesterMixin tests (same bodies, same arguments)
    test_callback_inputs = _cogvideox.CogVideoXPipelineFastTests.test_callback_inputs
    test_inference_batch_single_identical = _cogvideox.CogVideoXPipelineFastTests.test_inference_batch_single_identical
    test_attention_slicing_forward_pass = _cogvideox.CogVideoXPipelineFastTests.test_attention_slicing_forward_pass

    # ---------------------------------------------------------------- vidgen side (test_vidgen_pipelines' configs)
    harness_config = None  # a test_vidgen_pipelines.*PipelineTesterConfig class

    def get_dummy_components(self, num_layers: int = 1):  # CogVideoX's default depth
        return self.harness_config().get_dummy_components(num_layers=num_layers)

    def get_dummy_inputs(self, device, seed=0):
        inputs = self.harness_config().get_dummy_inputs()
        # CogVideoX's generator: on `device` (torch.manual_seed on mps), seeded with `seed`
        if str(device).startswith("mps"):
            inputs["generator"] = torch.manual_seed(seed)
        else:
            inputs["generator"] = torch.Generator(device=device).manual_seed(seed)
        return inputs


# ------------------------------------------------------------------------------------------------ FlowVideoPipeline
class FlowVideoPipelineFastTests(_CogVideoXComposition, PipelineTesterMixin, unittest.TestCase):
    pipeline_class = _harness.FlowVideoPipeline
    harness_config = _harness.FlowVideoPipelineTesterConfig


# ---------------------------------------------------------------------------------------------- MaskedVideoPipeline
class MaskedVideoPipelineFastTests(_CogVideoXComposition, PipelineTesterMixin, unittest.TestCase):
    pipeline_class = _harness.MaskedVideoPipeline
    harness_config = _harness.MaskedVideoPipelineTesterConfig


# -------------------------------------------------------------------------------------- AutoregressiveVideoPipeline
class AutoregressiveVideoPipelineFastTests(_CogVideoXComposition, PipelineTesterMixin, unittest.TestCase):
    pipeline_class = _harness.AutoregressiveVideoPipeline
    harness_config = _harness.AutoregressiveVideoPipelineTesterConfig  # num_inference_steps=None in its inputs

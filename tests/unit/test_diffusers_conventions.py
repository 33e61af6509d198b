"""The diffusers conventions that diffusers' own ``PipelineTesterMixin`` checks, as vidgen tests: the text tokenizer is
the component ``tokenizer``; ``from_pretrained`` without a dtype loads as diffusers does (as saved, so save and load
give the same output) while ``load_pipeline`` keeps ``"auto"``; ``dtype`` takes a dict per component with a
``"default"``; variant weight files; optional (text) components that save and load as None; ``encode_prompt`` on a
text-only pipeline, then sampling from ``prompt_embeds`` on a pipeline without text components. Older folders (the
``text_tokenizer`` key, the ``DiffusionVideoTransformer`` class name) still load, with a FutureWarning naming the
version that stops reading them. Run on tiny live-weight pipelines (tests/conftest.py)."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

import vidgen.precision
from vidgen.pipelines import FlowVideoPipeline, load_pipeline
from vidgen.text import load_text_encoder

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

KINDS = ["masked", "flow", "autoregressive"]
PROMPT = "a red circle moving left on a black background"
TOKENIZER_NAME = {"masked": "vqvae", "flow": "vae", "autoregressive": "vqvae"}


@pytest.fixture(scope="module")
def text():
    return load_text_encoder()  # (tokenizer, encoder): the offline all-MiniLM-L6-v2


def run(pipe, seed: int = 0, **kwargs):
    kwargs = {"num_frames": 5, "height": 16, "width": 16, "output_type": "pt", **kwargs}
    if "num_inference_steps" not in kwargs and not type(pipe).__name__.startswith("Autoregressive"):
        kwargs["num_inference_steps"] = 2
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs).frames


def with_text(pipe, text):
    """The same pipeline with ``text`` registered as its text components."""
    tokenizer, encoder = text
    return type(pipe)(**{k: v for k, v in pipe.components.items() if k not in ("text_encoder", "tokenizer")},
                      text_encoder=encoder, tokenizer=tokenizer)


@pytest.fixture
def fast_bf16(monkeypatch):
    """A device whose bf16 matrix math is fast (what ``dtype="auto"`` picks bf16 on), whatever this CPU is."""
    monkeypatch.setattr(vidgen.precision, "device_has_fast_bf16", lambda device=None: True)


# ---------------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("kind", KINDS)
def test_the_text_tokenizer_is_the_component_named_tokenizer(kind, tiny_pipeline, text, tmp_path):
    pipe = with_text(tiny_pipeline(kind), text)
    assert pipe.tokenizer is text[0] and pipe.components["tokenizer"] is text[0]
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["tokenizer"][1] == type(text[0]).__name__ and "text_tokenizer" not in index
    loaded = load_pipeline(tmp_path, dtype="fp32")
    assert type(loaded.tokenizer).__name__ == type(text[0]).__name__
    assert torch.equal(run(loaded, prompt=PROMPT), run(pipe, prompt=PROMPT))


def test_flow_folders_naming_the_former_class_still_load(tiny_pipeline, tmp_path):
    pipe = tiny_pipeline("flow")
    pipe.save_pretrained(tmp_path)
    for path in (tmp_path / "model_index.json", tmp_path / "transformer" / "config.json"):
        path.write_text(path.read_text().replace("FlowVideoTransformer", "DiffusionVideoTransformer"))
    with pytest.warns(FutureWarning, match=r"DiffusionVideoTransformer is deprecated, use FlowVideoTransformer.*"
                                           r"removed in vidgen 0\.3"):
        loaded = FlowVideoPipeline.from_pretrained(tmp_path)
    assert type(loaded.transformer).__name__ == "FlowVideoTransformer"
    assert torch.equal(run(loaded, prompt=PROMPT), run(pipe, prompt=PROMPT))


def test_deprecated_generator_names_say_the_version_that_removes_them():
    from vidgen.generators import generator_name
    with pytest.warns(FutureWarning, match=r"generator='diffusion' is deprecated, write generator: flow \(the old "
                                           r"name is removed in vidgen 0\.3\)"):
        assert generator_name("diffusion") == "flow"


# ---------------------------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("kind", KINDS)
def test_from_pretrained_without_a_dtype_loads_as_saved_where_bf16_pays(kind, tiny_pipeline, tmp_path, fast_bf16):
    """diffusers' ``from_pretrained`` without ``torch_dtype`` keeps fp32: a pipeline saved and loaded gives the same
    output even on a device where ``"auto"`` would pick bf16, which ``load_pipeline`` still does by default."""
    pipe = tiny_pipeline(kind)
    pipe.save_pretrained(tmp_path)
    loaded = type(pipe).from_pretrained(tmp_path)
    assert loaded.transformer.dtype == torch.float32 and loaded.video_tokenizer.dtype == torch.float32
    assert torch.equal(run(loaded, prompt=PROMPT), run(pipe, prompt=PROMPT))
    auto = load_pipeline(tmp_path)  # the demo, the CLI and the app: "auto"
    assert auto.transformer.dtype == (torch.float32 if kind == "autoregressive" else torch.bfloat16)


@pytest.mark.parametrize("kind", ["masked", "flow"])
def test_dtype_takes_a_dict_per_component_with_a_default(kind, tiny_pipeline, tmp_path):
    pipe = tiny_pipeline(kind)
    pipe.save_pretrained(tmp_path)
    name = TOKENIZER_NAME[kind]
    loaded = type(pipe).from_pretrained(tmp_path, dtype={name: torch.bfloat16, "default": torch.float32})
    assert getattr(loaded, name).dtype == torch.bfloat16 and loaded.transformer.dtype == torch.float32
    loaded = type(pipe).from_pretrained(tmp_path, dtype={"transformer": "bf16", "default": "fp32"})
    assert loaded.transformer.dtype == torch.bfloat16 and getattr(loaded, name).dtype == torch.float32
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        loaded = type(pipe).from_pretrained(tmp_path, torch_dtype={"default": torch.bfloat16})  # diffusers' old name
    assert loaded.transformer.dtype == torch.bfloat16 and getattr(loaded, name).dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["masked", "flow"])
def test_variant_weight_files_save_and_load(kind, tiny_pipeline, tmp_path, fast_bf16):
    pipe = tiny_pipeline(kind)
    pipe.save_pretrained(tmp_path, variant="fp16")
    files = sorted(p.name for p in tmp_path.rglob("*.safetensors"))
    assert files and all(name.endswith(".fp16.safetensors") for name in files)
    loaded = type(pipe).from_pretrained(tmp_path, variant="fp16")
    for component in ("transformer", TOKENIZER_NAME[kind]):
        mine, theirs = getattr(pipe, component).state_dict(), getattr(loaded, component).state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert torch.equal(run(loaded, prompt=PROMPT), run(pipe, prompt=PROMPT))


# ---------------------------------------------------------------------------------------------------- components
@pytest.mark.parametrize("kind", KINDS)
def test_optional_components_save_and_load_as_none(kind, tiny_pipeline, text, tmp_path):
    """diffusers' check: every optional component set to None, the pipeline still samples, saves and loads with
    them None, and gives the same output (vidgen's text components are optional: without them the offline default
    text encoder is loaded on first use)."""
    pipe = with_text(tiny_pipeline(kind), text)
    assert type(pipe)._optional_components == ["text_encoder", "tokenizer"]
    for name in pipe._optional_components:
        setattr(pipe, name, None)
    before = run(pipe, prompt=PROMPT)
    pipe.save_pretrained(tmp_path)
    loaded = type(pipe).from_pretrained(tmp_path)
    assert all(getattr(loaded, name) is None for name in pipe._optional_components)
    assert torch.equal(run(loaded, prompt=PROMPT), before)


@pytest.mark.parametrize("kind", KINDS)
def test_encode_prompt_in_isolation_then_sampling_from_the_embeddings(kind, tiny_pipeline, text, monkeypatch):
    """diffusers' ``test_encode_prompt_works_in_isolation``: a pipeline of only the text components encodes the
    prompt and the negative prompt; a pipeline without text components samples from those embeddings exactly what
    the full pipeline samples from the prompts."""
    full = with_text(tiny_pipeline(kind), text)
    tokenizer, encoder = text
    others = {k: None for k in full.components if k not in ("text_encoder", "tokenizer")}
    text_only = type(full)(**others, text_encoder=encoder, tokenizer=tokenizer)
    length = full.transformer.backbone_config.max_text_tokens
    prompt_embeds, negative_prompt_embeds = text_only.encode_prompt(PROMPT, negative_prompt="a blue square",
                                                                    max_text_tokens=length)
    without_text = type(full)(**{k: v for k, v in full.components.items() if k not in ("text_encoder", "tokenizer")})
    monkeypatch.setattr("vidgen.pipelines.text_encoding.load_text_encoder",
                        lambda *a: pytest.fail("a pipeline given embeddings loaded a text encoder"))
    from_embeds = run(without_text, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds)
    assert torch.equal(from_embeds, run(full, prompt=PROMPT, negative_prompt="a blue square"))
    assert full.encode_prompt(PROMPT)[1] is None  # no negative prompt: CFG contrasts with the learned null condition


@pytest.mark.parametrize("kind", KINDS)
def test_a_pipeline_samples_under_diffusers_layerwise_casting(kind, tiny_pipeline):
    """``transformer.enable_layerwise_casting(storage_dtype=float8, compute_dtype=...)``: every layer computes in the
    compute dtype (the time embedding once cast its input to the float8 storage dtype and failed), so sampling equals
    the same pipeline whose cast layers hold their weights rounded to float8 (diffusers' storage) in fp32."""
    pipe, reference = tiny_pipeline(kind), tiny_pipeline(kind)
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    cast = {name for name, module in pipe.transformer.named_modules()
            if getattr(module, "_diffusers_hook", None) is not None
            and module._diffusers_hook.get_hook("layerwise_casting") is not None}
    assert cast and any(name.startswith("backbone.blocks") for name in cast)
    with torch.no_grad():
        for name, module in reference.transformer.named_modules():
            if name in cast:
                for p in module.parameters(recurse=False):
                    p.copy_(p.to(torch.float8_e4m3fn).float())
    out = run(pipe, prompt=PROMPT, output_type="latent")
    assert torch.equal(out, run(reference, prompt=PROMPT, output_type="latent"))


def test_the_load_options_are_the_pinned_diffusers_from_pretrained_options():
    """``check_load_options`` refuses what diffusers' ``DiffusionPipeline.from_pretrained`` would ignore; its list is
    the options that function reads in the installed diffusers, so an upgrade that adds one fails here first."""
    import inspect
    import re

    from diffusers.pipelines import pipeline_utils

    from vidgen.pipelines.pretrained import DIFFUSERS_LOAD_OPTIONS
    source = inspect.getsource(pipeline_utils.DiffusionPipeline.from_pretrained)
    read = set(re.findall(r'kwargs\.pop\("(\w+)"', source))
    assert read and read <= DIFFUSERS_LOAD_OPTIONS, sorted(read - DIFFUSERS_LOAD_OPTIONS)

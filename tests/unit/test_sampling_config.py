"""Sampling settings saved with each pipeline folder (``sampling_config.json``, one config object per generator): a
shipped folder called with only a prompt samples with its file's settings, bit for bit as with the settings passed
explicitly; save / load keeps them; the caller's values win; ``__call__`` builds the config once and hands that one
object to the generator's sampling function. Bad files are in the bad-input corpus (tests/unit/test_bad_inputs.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import vidgen.pipelines.autoregressive as ar_module
import vidgen.pipelines.causal as causal_module
import vidgen.pipelines.flow as flow_module
import vidgen.pipelines.masked as masked_module
from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators import FlowSamplingConfig, MaskedSamplingConfig
from vidgen.pipelines import (PIPELINE_REGISTRY, SAMPLING_CONFIG_NAME, FlowVideoPipeline, MaskedVideoPipeline,
                              load_pipeline, shipped_folder)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PRETRAINED = Path(__file__).resolve().parents[2] / "pretrained"
PROMPT = "a red circle moving left on a black background"
#: the settings the full evaluation ran with (make_pretrained.py --stage evaluate records them per pipeline), so a
#: folder whose sampling_config.json changed without a new evaluation fails here
EVALUATED = {name: entry["sampling"] for name, entry in json.loads(
    (PRETRAINED.parent / "docs" / "results" / "demo_full.json").read_text())["pipelines"].items()}
#: pipeline -> (module whose sampling function the pipeline calls, that function's name)
SAMPLERS = {"masked": (masked_module, "generate_ids"), "flow": (flow_module, "generate_latents"),
            "autoregressive": (ar_module, "iter_frames")}


class _Stop(Exception):
    pass


def intercept(monkeypatch, name: str) -> dict:
    """Replace the pipeline's sampling function by one that records its config and keyword arguments and stops the
    call."""
    seen = {}
    if name == "causal":  # the block-causal stream takes the call's config setting by setting, the scale in its Guidance
        def stream(model, cond, **kwargs):
            seen.update(kwargs, grid=(kwargs["frames"], *kwargs["hw"]), guidance_scale=kwargs["guidance"].scale)
            raise _Stop

        monkeypatch.setattr(causal_module, "stream_latents", stream)
        return seen
    module, attr = SAMPLERS[name]

    def record(model, cond, config, **kwargs):
        seen.update(kwargs, config=config, **config.to_dict())
        raise _Stop

    monkeypatch.setattr(module, attr, record)
    return seen


@pytest.fixture
def tiny(tiny_pipeline):
    return lambda kind: tiny_pipeline(kind, max_text_tokens=16)  # tests/conftest.py


def run(pipe, seed: int = 0, **kwargs):
    kwargs = {"num_frames": 5, "height": 16, "width": 16, "output_type": "pt", **kwargs}
    return pipe(PROMPT, generator=torch.Generator().manual_seed(seed), **kwargs).frames


# ---------------------------------------------------------------------------------------------------- shipped folders
@pytest.mark.parametrize("name", list(PIPELINE_REGISTRY))
def test_shipped_folder_called_with_only_a_prompt_samples_with_the_evaluated_settings(name, monkeypatch):
    folder = shipped_folder(name, PRETRAINED)
    pipe = load_pipeline(folder)
    config_class = type(pipe).sampling_config_class
    assert config_class.from_pretrained(folder) == config_class(**EVALUATED[name])
    assert pipe.sampling_config == config_class(**EVALUATED[name])  # settings the file leaves out: the defaults
    seen = intercept(monkeypatch, PIPELINE_REGISTRY[name].generator)
    with pytest.raises(_Stop):
        pipe(PROMPT)
    if "config" in seen:
        assert seen["config"] is pipe.sampling_config  # nothing passed: the folder's own object
    assert {k: seen[k] for k in EVALUATED[name]} == {k: config_class(**EVALUATED[name]).to_dict()[k]
                                                     for k in EVALUATED[name]}
    assert seen["grid"] == pipe.video_tokenizer.latent_grid(17, 64, 64) \
        if PIPELINE_REGISTRY[name].generator != "flow" else seen["grid"] == pipe.vae.latent_grid(17, 64, 64)


@pytest.mark.parametrize("name", list(PIPELINE_REGISTRY))
def test_shipped_folder_with_prompt_and_seed_equals_the_explicit_evaluated_settings(name):
    """Bit-identical to the call the evaluation made before the settings moved into the folder (small size)."""
    pipe = load_pipeline(shipped_folder(name, PRETRAINED), dtype="fp32")
    pipe.set_progress_bar_config(disable=True)
    size = dict(num_frames=5, height=32, width=32)
    from_folder = run(pipe, seed=3, **size)
    assert torch.equal(from_folder, run(pipe, seed=3, **size, **EVALUATED[name]))
    defaults = {k: v for k, v in type(pipe).sampling_config_class().to_dict().items() if k in EVALUATED[name]}
    if getattr(pipe.transformer.config, "distillation", None):  # a student refuses the flow defaults by name
        with pytest.raises(InvalidInputError, match="this student was distilled for"):
            run(pipe, seed=3, **size, **defaults)
    elif clip(defaults) != clip(EVALUATED[name]):  # the file changed it (autoregressive's tuned settings are its defaults)
        assert not torch.equal(from_folder, run(pipe, seed=3, **size, **defaults))


def clip(settings: dict) -> dict:
    """The settings that shape a one-prompt clip of one window (a story's context and prompt switch do not)."""
    return {k: v for k, v in settings.items() if k not in ("context_frames", "prompt_switch")}


# ---------------------------------------------------------------------------------------------------- tiny pipelines
@pytest.mark.parametrize("kind,config", [("masked", {"num_inference_steps": 3, "top_k": 2, "temperature": [1.0, 0.0]}),
                                         ("flow", {"num_inference_steps": 3, "guidance_scale": 2.0,
                                                   "context_frames": 0}),
                                         ("autoregressive", {"top_p": 0.8, "guidance_scale": 1.5})])
def test_save_load_round_trip_keeps_the_settings_and_the_samples(kind, config, tmp_path, tiny):
    pipe = tiny(kind)
    pipe.sampling_config = config
    pipe.save_pretrained(tmp_path / kind)
    saved = json.loads((tmp_path / kind / SAMPLING_CONFIG_NAME).read_text())
    assert saved == {**type(pipe).sampling_config_class().to_dict(), **config}  # every setting, JSON lists for pairs
    loaded = load_pipeline(tmp_path / kind, dtype="fp32")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.sampling_config == pipe.sampling_config == type(pipe).sampling_config_class(**config)
    assert torch.equal(run(loaded), run(pipe))
    assert torch.equal(run(pipe), run(pipe, **config))  # the settings are used when left out


@pytest.mark.parametrize("kind", ["masked", "flow", "autoregressive"])
def test_a_story_takes_context_frames_from_the_folder_unless_the_call_gives_it(kind, tiny):
    """The folder's ``context_frames`` (tuned per model by experiments/sweep_context.py) is what a prompt schedule
    uses when the call leaves it out: bit for bit the call that passes it; the config's default applies without it."""
    pipe = tiny(kind)
    pipe.set_progress_bar_config(disable=True)
    steps = {} if kind == "autoregressive" else {"num_inference_steps": 2}
    schedule = {0: PROMPT, 8: "a blue square growing on a gray background"}

    def story(**kwargs):
        return pipe(schedule, num_frames=20, height=16, width=16, output_type="pt", **steps,
                    generator=torch.Generator().manual_seed(5), **kwargs).frames

    default = type(pipe).sampling_config_class().context_frames
    assert pipe.sampling_config.context_frames == default
    by_class = story()
    assert torch.equal(by_class, story(context_frames=default))
    other = 3 - default  # 1 or 2, inside the tiny window of 4 latent frames
    pipe.sampling_config = {"context_frames": other}
    assert pipe.sampling_config.context_frames == other
    by_folder = story()
    assert torch.equal(by_folder, story(context_frames=other))
    assert not torch.equal(by_folder, by_class)  # the setting reaches the chunks (live, random weights)
    assert torch.equal(story(context_frames=default), by_class)  # the caller's value wins


def test_a_folder_without_the_file_keeps_the_defaults(tmp_path, tiny):
    pipe = tiny("flow")
    pipe.sampling_config = {"num_inference_steps": 3}
    pipe.save_pretrained(tmp_path)
    (tmp_path / SAMPLING_CONFIG_NAME).unlink()
    loaded = FlowVideoPipeline.from_pretrained(tmp_path, dtype="fp32")
    assert loaded.sampling_config == FlowSamplingConfig()
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(run(loaded), run(pipe, **FlowSamplingConfig().to_dict()))


def test_caller_values_override_the_file(monkeypatch, tiny):
    pipe = tiny("masked")
    pipe.sampling_config = {"num_inference_steps": 3, "top_k": 1}
    seen = intercept(monkeypatch, "masked")
    with pytest.raises(_Stop):
        run(pipe, num_inference_steps=2, top_k=None)  # None is a value (no top-k), not "left out"
    assert (seen["num_inference_steps"], seen["top_k"], seen["guidance_scale"]) == (2, None, 3.0)
    assert pipe.sampling_config.num_inference_steps == 3  # the call's values never change the pipeline's
    with pytest.raises(_Stop):
        run(pipe)
    assert (seen["num_inference_steps"], seen["top_k"]) == (3, 1)


def test_assigning_bad_settings_is_refused_and_keeps_the_old_ones(tiny):
    pipe = tiny("autoregressive")
    pipe.sampling_config = {"top_p": 0.9}
    with pytest.raises(ConfigError, match=r"sampling_config: key 'num_inference_steps' is an input .*not a sampling"):
        pipe.sampling_config = {"num_inference_steps": 12}
    with pytest.raises(ConfigError, match=r"key 'top_p': top_p must be a number in \(0, 1\]"):
        pipe.sampling_config = {"top_p": 2}
    assert pipe.sampling_config.top_p == 0.9


@pytest.mark.parametrize("kind", ["masked", "flow", "autoregressive"])
def test_a_call_builds_its_config_once_and_every_video_samples_with_it(kind, monkeypatch, tiny):
    """``__call__`` checks the settings once (one config object); each video of a generator list gets that object."""
    module, attr = SAMPLERS[kind]
    original, configs = getattr(module, attr), []
    monkeypatch.setattr(module, attr, lambda model, cond, config, **k: configs.append(config) or
                        original(model, cond, config, **k))
    pipe, built = tiny(kind), []
    config_class = type(pipe.sampling_config)
    monkeypatch.setattr(config_class, "__post_init__", lambda self: built.append(1) or
                        super(config_class, self).__post_init__())
    steps = {} if kind == "autoregressive" else {"num_inference_steps": 2}
    pipe([PROMPT, "a blue square"], num_frames=5, height=16, width=16, output_type="latent", **steps,
         guidance_scale=2.0, generator=[torch.Generator().manual_seed(s) for s in (1, 2)])
    assert len(configs) == 2 and configs[0] is configs[1] and configs[0].guidance_scale == 2.0
    assert len(built) == 1  # the caller's settings applied to the pipeline's config: one new, checked object


def test_a_config_checks_every_value_when_built_and_replaced():
    with pytest.raises(InvalidInputError, match=r"top_k must be an int >= 1 or None, got 0"):
        MaskedSamplingConfig(top_k=0)
    config = MaskedSamplingConfig(temperature=[1.0, 0.5])
    assert config.temperature == (1.0, 0.5)  # a JSON list is kept as the pair it is
    with pytest.raises(InvalidInputError, match=r"greedy_steps must be an int >= 0, got -1"):
        config.replace(greedy_steps=-1)
    with pytest.raises(InvalidInputError, match=r"guidance: not a sampling setting of MaskedSamplingConfig"):
        config.replace(guidance=2.0)
    assert config.replace() is config and config.replace(top_k=3).top_k == 3 and config.top_k is None


def test_folders_with_a_text_tokenizer_entry_still_load(tmp_path, tiny):
    """Folders that name the text tokenizer ``text_tokenizer`` (vidgen's name for it up to 0.1): the saved text
    tokenizer loads as ``tokenizer`` (diffusers' name) with a FutureWarning naming both keys, and encodes as before."""
    from vidgen.text import load_text_encoder
    base = tiny("masked")
    tok, enc = load_text_encoder()
    pipe = MaskedVideoPipeline(base.vqvae, base.transformer, base.scheduler, text_encoder=enc, tokenizer=tok)
    pipe.save_pretrained(tmp_path / "new")
    index = json.loads((tmp_path / "new" / "model_index.json").read_text())
    assert "tokenizer" in index and "text_tokenizer" not in index
    old = {("text_tokenizer" if k == "tokenizer" else k): v for k, v in index.items()}
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    (tmp_path / "old" / "tokenizer").rename(tmp_path / "old" / "text_tokenizer")
    (tmp_path / "old" / "model_index.json").write_text(json.dumps(old))
    with pytest.warns(FutureWarning, match="'text_tokenizer'; diffusers' name is 'tokenizer'.*vidgen 0.3.*save_pretrained"):
        loaded = load_pipeline(tmp_path / "old", dtype="fp32")
    assert type(loaded.tokenizer).__name__ == type(tok).__name__
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(run(loaded, num_inference_steps=2), run(base, num_inference_steps=2))


def test_the_pipeline_registry_uses_the_generator_names():
    """One name per generator everywhere: every generator of vidgen.generators.GENERATORS has a pipeline class that
    takes that generator; every shipped pipeline names one of them and has its folder."""
    from vidgen.demo import PIPELINES
    from vidgen.generators import GENERATORS
    from vidgen.pipelines import PIPELINE_CLASSES, pipeline_spec
    assert list(PIPELINE_CLASSES) == list(GENERATORS)
    for name, cls in PIPELINE_CLASSES.items():
        assert cls.__init__.__annotations__["transformer"] in (GENERATORS[name], GENERATORS[name].__name__)
    for name, spec in PIPELINE_REGISTRY.items():
        assert spec.generator in GENERATORS and spec.pipeline_class is PIPELINE_CLASSES[spec.generator]
        assert (PRETRAINED / spec.folder / "model_index.json").is_file() and PIPELINES[name] == spec.folder
    with pytest.raises(ConfigError, match=r"pipeline 'diffusion' is unknown; choose from \['autoregressive', 'causal', 'flow'"):
        pipeline_spec("diffusion")


def test_the_docs_table_of_shipped_settings_matches_the_folders():
    """docs/pipelines.md quotes every shipped folder's sampling_config.json; a stale row (one was) fails here."""
    page = (PRETRAINED.parent / "docs" / "pipelines.md").read_text()
    for name in PIPELINE_REGISTRY:
        folder = shipped_folder(name, PRETRAINED)
        row = f"| `pretrained/{folder.name}` | `{json.dumps(json.loads((folder / SAMPLING_CONFIG_NAME).read_text()))}` |"
        assert row in page, f"docs/pipelines.md should have the row {row}"

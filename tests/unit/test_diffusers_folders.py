"""diffusers' loading conventions for a diffusers pipeline folder opened by ``load_pipeline``, and saving one that has
a LoRA loaded: without a dtype it loads as diffusers' own class loads it (fp32), so its frames are ``WanPipeline``'s;
``torch_dtype`` is taken as diffusers' spelling of ``dtype``; a repo id resolves through the local Hugging Face cache
offline; ``load_lora_weights`` then ``save_pretrained`` writes the adapter fused into plain weights, which load back
with the same frames. Tiny random Wan folders (``vidgen.pipelines.diffusers_tiny``). The refusals (a renamed weight,
peft's keys in a folder, a repo id not in the cache, dtypes that disagree) are in tests/unit/test_bad_inputs.py."""
from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from safetensors import safe_open

import vidgen.precision
from vidgen.pipelines import DiffusersVideoPipeline, load_pipeline
from vidgen.pipelines.diffusers_tiny import TINY_SIZES, tiny_native_pipeline
from vidgen.training.lora import add_lora, save_lora

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PRETRAINED = Path(__file__).resolve().parents[2] / "pretrained"
T, H, W = TINY_SIZES["wan"]
CALL = dict(num_frames=T, height=H, width=W, num_inference_steps=2, guidance_scale=4.0, output_type="np")


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """A saved tiny ``WanPipeline`` folder."""
    path = tmp_path_factory.mktemp("tiny-wan")
    tiny_native_pipeline("wan").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lora(wan, tmp_path_factory):
    """A LoRA for the tiny Wan in diffusers' format, with B non-zero so that it changes the frames."""
    pipe = load_pipeline(wan)
    add_lora(pipe.transformer, 4)
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    path = tmp_path_factory.mktemp("lora")
    save_lora(pipe.transformer, path)
    return path


@pytest.fixture
def fast_bf16(monkeypatch):
    """A machine whose bf16 matrix math is fast, where ``dtype="auto"`` picks bf16, whatever this CPU is."""
    monkeypatch.setattr(vidgen.precision, "device_has_fast_bf16", lambda device=None: True)


def frames(pipe, latents=None, seed=0):
    return pipe("a red fox", generator=torch.Generator().manual_seed(seed), latents=latents, **CALL).frames


def starting_noise(pipe):
    grid = pipe.video_tokenizer.latent_grid(T, H, W)
    return torch.randn(1, pipe.flow_generator.in_channels, *grid, generator=torch.Generator().manual_seed(0))


def test_a_diffusers_folder_loaded_with_no_options_gives_wan_pipelines_frames(wan, fast_bf16):
    """As diffusers' ``from_pretrained`` without a dtype: fp32, even where ``"auto"`` would pick bf16 (it did, and
    the frames differed from ``WanPipeline``'s by 0.19)."""
    pipe = load_pipeline(wan)
    assert pipe.transformer.dtype == pipe.vae.dtype == torch.float32
    native = diffusers.WanPipeline.from_pretrained(wan)
    native.set_progress_bar_config(disable=True)
    lat = starting_noise(pipe)
    ours, theirs = frames(pipe, lat), frames(native, lat.clone())
    assert ours.shape == theirs.shape == (1, T, H, W, 3)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.abs(frames(pipe, seed=3) - frames(native, seed=3)).max() <= 1e-5  # seeded noise too
    assert load_pipeline(wan, dtype="auto").transformer.dtype == torch.bfloat16  # asked for: as before


def test_torch_dtype_is_diffusers_spelling_of_dtype_everywhere(wan, fast_bf16):
    from vidgen.pipelines.registry import shipped_folder
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # taken as it is, without a deprecation warning
        assert load_pipeline(wan, torch_dtype=torch.bfloat16).transformer.dtype == torch.bfloat16
        assert load_pipeline(wan, torch_dtype=torch.float32, dtype="fp32").transformer.dtype == torch.float32
        shipped = load_pipeline(shipped_folder("masked", PRETRAINED), torch_dtype=torch.float32)
        assert shipped.transformer.dtype == torch.float32


def _fake_hub_cache(root, repo_id: str, folder, revision: str = "a" * 40):
    """``folder`` laid out as huggingface_hub lays out a download: ``models--org--name/blobs/<hash>``, the files of
    ``snapshots/<revision>/`` as relative links to the blobs, and ``refs/main`` naming the revision."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = len(link.relative_to(repo).parts) - 1
        link.symlink_to("/".join([".."] * depth + ["blobs", blob.name]))
    return snapshot


def test_a_repo_id_resolves_through_the_local_hugging_face_cache_offline(wan, tmp_path, monkeypatch):
    snapshot = _fake_hub_cache(tmp_path / "hub", "tiny-org/Tiny-Wan-Diffusers", wan)
    assert (snapshot / "transformer" / "config.json").is_symlink()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    pipe = load_pipeline("tiny-org/Tiny-Wan-Diffusers")
    assert isinstance(pipe, DiffusersVideoPipeline)
    assert np.array_equal(frames(pipe), frames(load_pipeline(wan)))
    explicit = load_pipeline("tiny-org/Tiny-Wan-Diffusers", revision="a" * 40, cache_dir=tmp_path / "hub")
    assert np.array_equal(frames(explicit), frames(pipe))


def _weight_names(folder) -> list:
    with safe_open(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as handle:
        return list(handle.keys())


def test_lora_then_save_pretrained_then_load_pipeline_gives_the_same_frames(wan, lora, tmp_path):
    """The adapter is saved fused into the transformer's own weights (no peft names in the folder), so vidgen and
    diffusers' ``WanPipeline`` load the folder with the LoRA's frames; the pipeline keeps its adapter, unfused, with
    its base weights the same tensors."""
    pipe = load_pipeline(wan)
    pipe.load_lora_weights(lora)
    lat = starting_noise(pipe)
    before = frames(pipe, lat)
    assert np.abs(before - frames(load_pipeline(wan), lat)).max() > 1e-3  # the LoRA changes the frames
    state = {k: v for k, v in pipe.transformer.state_dict().items()}
    pipe.save_pretrained(tmp_path)
    names = _weight_names(tmp_path)
    assert not [k for k in names if "lora" in k or "base_layer" in k]
    assert sorted(names) == sorted(tiny_native_pipeline("wan").transformer.state_dict())
    again = load_pipeline(tmp_path)
    assert np.abs(frames(again, lat) - before).max() <= 1e-5
    native = diffusers.WanPipeline.from_pretrained(tmp_path)
    native.set_progress_bar_config(disable=True)
    assert np.abs(frames(native, lat.clone()) - before).max() <= 1e-5
    # the pipeline in memory is as it was: adapter layers back, the same base tensors, the same frames
    after = pipe.transformer.state_dict()
    assert after.keys() == state.keys() and all(after[k] is state[k] or torch.equal(after[k], state[k]) for k in state)
    assert np.array_equal(frames(pipe, lat), before)


def test_a_lora_added_for_training_is_saved_fused_too(wan, tmp_path):
    pipe = load_pipeline(wan)
    add_lora(pipe.transformer, 4)
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.fill_(0.05)
    lat = starting_noise(pipe)
    before = frames(pipe, lat)
    pipe.save_pretrained(tmp_path)
    assert not [k for k in _weight_names(tmp_path) if "lora" in k]
    assert np.abs(frames(load_pipeline(tmp_path), lat) - before).max() <= 1e-5
    shutil.rmtree(tmp_path)


def test_vidgen_generate_loads_a_diffusers_folder_as_diffusers_does(wan, fast_bf16):
    """``vidgen generate --pipeline <diffusers folder>`` without ``--precision``: fp32, as ``load_pipeline`` and
    diffusers load it (the command's default was ``auto``, bf16 where it pays); ``--precision auto`` still asks for
    bf16, and a vidgen folder keeps its measured default."""
    from vidgen.cli import build_parser
    from vidgen.cli.generate import _load
    from vidgen.pipelines.registry import shipped_folder
    args = build_parser().parse_args(["generate", "a red fox", "--pipeline", str(wan)])
    assert args.precision is None
    assert _load(str(wan), args.precision).transformer.dtype == torch.float32
    assert _load(str(wan), "auto").transformer.dtype == torch.bfloat16
    assert _load(str(shipped_folder("masked", PRETRAINED)), None).transformer.dtype == torch.bfloat16

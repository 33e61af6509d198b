"""The three diffusers-style pipelines with tiny random (perturbed) components: output types and exact shapes for
frame counts that are not 4k+1, determinism, bit-identical save/load, load_pipeline, CFG / negative prompts,
conditioning frames kept, callbacks, per-video generators, text-to-video with the offline text encoder, errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
from PIL import Image

from vidgen.errors import InvalidInputError, MissingWeightsError, VidgenError
from vidgen.pipelines import FlowVideoPipeline, MaskedVideoPipeline, load_pipeline

KINDS = ("masked", "flow", "autoregressive")
T, H, W = 10, 32, 32  # 10 frames: not 4k+1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def pipes(tiny_pipeline):
    return {kind: tiny_pipeline(kind) for kind in KINDS}


def steps(kind):
    return {} if kind == "autoregressive" else {"num_inference_steps": 2}


def call(pipe, kind, prompt="a red circle moving left", seed=0, **kw):
    kw = {"num_frames": T, "height": H, "width": W, **steps(kind), **kw}
    return pipe(prompt, generator=torch.Generator().manual_seed(seed) if seed is not None else None, **kw).frames


@pytest.mark.parametrize("kind", KINDS)
def test_output_types_and_exact_shapes(kind, pipes):
    pipe = pipes[kind]
    np_frames = call(pipe, kind, ["a red circle moving left", "a blue square moving up"])
    assert isinstance(np_frames, np.ndarray) and np_frames.shape == (2, T, H, W, 3)
    assert np_frames.dtype == np.float32 and 0 <= np_frames.min() and np_frames.max() <= 1
    pt = call(pipe, kind, output_type="pt", num_frames=7, height=24, width=30)
    assert pt.shape == (1, 7, 3, 24, 30)
    pil = call(pipe, kind, output_type="pil", num_frames=5)
    assert len(pil) == 1 and len(pil[0]) == 5 and isinstance(pil[0][0], Image.Image) and pil[0][0].size == (W, H)
    latent = call(pipe, kind, output_type="latent")
    assert latent.shape[-3:] == (4, 4, 4)
    torch.testing.assert_close(torch.from_numpy(call(pipe, kind)), call(pipe, kind, output_type="pt").permute(0, 1, 3, 4, 2))


@pytest.mark.parametrize("kind", KINDS)
def test_determinism_and_generator_lists(kind, pipes):
    pipe = pipes[kind]
    a, b, c = call(pipe, kind, seed=3), call(pipe, kind, seed=3), call(pipe, kind, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    both = pipe(["a red circle moving left", "a blue square"], num_frames=T, height=H, width=W, generator=gens,
                **steps(kind)).frames
    alone = call(pipe, kind, "a blue square", seed=6)
    assert np.array_equal(both[1:], alone)  # one generator per video: the same video whatever the batch
    with pytest.raises(InvalidInputError, match="generator"):
        pipe(["a", "b"], generator=[torch.Generator()], **steps(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_bit_identical(kind, pipes, tmp_path):
    pipe = pipes[kind]
    pipe.save_pretrained(tmp_path / kind)
    index = json.loads((tmp_path / kind / "model_index.json").read_text())
    assert index["transformer"][0].startswith("vidgen.generators.")
    assert list((tmp_path / kind / "transformer").glob("*.safetensors"))
    # the dtype it was saved in (the default, dtype="auto", may pick bf16 on this machine: tests/unit/test_precision.py)
    loaded = load_pipeline(tmp_path / kind, dtype=pipe.precision)
    assert type(loaded) is type(pipe)
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(call(pipe, kind, seed=7), call(loaded, kind, seed=7))
    again = type(pipe).from_pretrained(str(tmp_path / kind), dtype=pipe.precision)
    again.set_progress_bar_config(disable=True)
    assert np.array_equal(call(pipe, kind, seed=7), call(again, kind, seed=7))


@pytest.mark.parametrize("kind", KINDS)
def test_guidance_and_negative_prompt(kind, pipes):
    pipe = pipes[kind]
    plain = call(pipe, kind, guidance_scale=1.0)
    guided = call(pipe, kind, guidance_scale=5.0)
    negative = call(pipe, kind, guidance_scale=5.0, negative_prompt="a green star")
    assert not np.array_equal(plain, guided) and not np.array_equal(guided, negative)
    emb, negative_emb = pipe.encode_prompt("a red circle moving left")
    assert negative_emb is None  # no negative prompt: CFG contrasts with the learned null condition
    from_embeds = pipe(prompt_embeds=emb, num_frames=T, height=H, width=W, generator=torch.Generator().manual_seed(0),
                       **steps(kind)).frames
    assert np.array_equal(from_embeds, call(pipe, kind))


@pytest.mark.parametrize("kind", KINDS)
def test_conditioning_frames_are_kept(kind, pipes):
    pipe = pipes[kind]
    video = torch.rand(1, 3, 5, H, W) * 2 - 1  # 5 frames complete 2 latent frames
    x = call(pipe, kind, conditioning_frames=video, output_type="latent")
    given = pipe.transformer.encode_videos(pipe.video_tokenizer, video)
    axis = 2 if kind == "flow" else 1
    assert torch.equal(x.narrow(axis, 0, 2), given.narrow(axis, 0, 2))
    if kind != "autoregressive":  # interpolation: first and last latent frame of a full-length video
        full = torch.rand(1, 3, T, H, W) * 2 - 1
        x = call(pipe, kind, conditioning_frames=full, conditioning_latent_indices=[0, -1], output_type="latent")
        g = pipe.transformer.encode_videos(pipe.video_tokenizer, full)
        for i in (0, 3):
            assert torch.equal(x.narrow(axis, i, 1), g.narrow(axis, i, 1))
        with pytest.raises(InvalidInputError, match="conditioning_latent_indices"):
            call(pipe, kind, conditioning_frames=video, conditioning_latent_indices=[0, -1])



def test_masked_partial_latents_are_kept(pipes):
    """Starting ids with some entries set to the mask id: the others are kept exactly, the masked ones filled."""
    pipe = pipes["masked"]
    first = call(pipe, "masked", output_type="latent")
    start = first.clone()
    start[:, 1:] = pipe.transformer.mask_token_id  # keep latent frame 0, resample the rest
    again = call(pipe, "masked", seed=1, latents=start, output_type="latent")
    assert torch.equal(again[:, :1], first[:, :1])
    assert bool((again < pipe.transformer.mask_token_id).all())
    assert not torch.equal(again, call(pipe, "masked", seed=1, output_type="latent"))

@pytest.mark.parametrize("kind", ("masked", "flow"))
def test_callback_called_each_step_and_can_change_latents(kind, pipes):
    pipe, seen = pipes[kind], []

    def cb(p, i, t, tensors):
        seen.append(i)
        return {"latents": torch.zeros_like(tensors["latents"])} if i == 1 else {}

    out = call(pipe, kind, output_type="latent", num_inference_steps=3, callback_on_step_end=cb)
    assert seen == [0, 1, 2]
    ref = call(pipe, kind, output_type="latent", num_inference_steps=3)
    assert not torch.equal(out, ref)


def test_autoregressive_long_video_and_callback(pipes):
    pipe, seen = pipes["autoregressive"], []
    frames = call(pipe, "autoregressive", num_frames=25, callback_on_step_end=lambda p, i, t, k: seen.append(i))
    assert frames.shape == (1, 25, H, W, 3)  # 7 latent frames > max_grid[0] = 4: the context slides
    assert seen == list(range(7))
    ids = call(pipe, "autoregressive", num_frames=25, output_type="latent")
    one_shot = pipe.vqvae.detokenize(ids, 25, H, W)
    streamed = torch.from_numpy(frames).permute(0, 4, 1, 2, 3) * 2 - 1
    torch.testing.assert_close(streamed, one_shot.clamp(-1, 1), atol=1e-5, rtol=0)


def test_autoregressive_callback_can_replace_ids(pipes):
    pipe = pipes["autoregressive"]

    def zero_first_two(p, i, t, tensors):
        if i == 1:
            return {"latents": torch.zeros_like(tensors["latents"])}

    ids = call(pipe, "autoregressive", output_type="latent", callback_on_step_end=zero_first_two)
    ref = call(pipe, "autoregressive", output_type="latent")
    assert (ids[:, :2] == 0).all() and not (ref[:, :2] == 0).all()
    assert not torch.equal(ids[:, 2:], ref[:, 2:])  # later frames continue from the replacement
    frames = call(pipe, "autoregressive", callback_on_step_end=zero_first_two)
    decoded = pipe.vqvae.detokenize(ids, T, H, W).clamp(-1, 1)
    torch.testing.assert_close(torch.from_numpy(frames).permute(0, 4, 1, 2, 3) * 2 - 1, decoded, atol=1e-5, rtol=0)


def test_scheduler_swap_from_config(tiny_pipeline):
    pipe = tiny_pipeline("flow", max_grid=(4, 4, 4))
    with pytest.raises(InvalidInputError, match="scheduler"):
        pipe.scheduler = DDIMScheduler()
        call(pipe, "flow")
    eps = tiny_pipeline("flow")
    eps.transformer.register_to_config(prediction_type="epsilon")
    eps.scheduler = DDIMScheduler.from_config(DDIMScheduler().config, prediction_type="epsilon")
    assert call(eps, "flow").shape == (1, T, H, W, 3)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_arguments(kind, pipes):
    pipe = pipes[kind]
    cases = [(dict(output_type="gif"), "output_type"), (dict(num_frames=0), "num_frames"),
             (dict(guidance_scale=-1.0), "guidance_scale"), (dict(height=2.5), "height"),
             (dict(num_videos_per_prompt=0), "num_videos_per_prompt"),
             (dict(callback_on_step_end_tensor_inputs=["noise"]), "callback_on_step_end_tensor_inputs"),
             (dict(height=96), "max_grid"), (dict(prompt=[]), "prompt"), (dict(prompt=3), "prompt")]
    if kind != "autoregressive":
        cases.append((dict(num_inference_steps=0), "num_inference_steps"))
    else:
        cases.append((dict(num_inference_steps=4), "num_inference_steps"))
    for kwargs, name in cases:
        kwargs = {"prompt": "a red circle", **kwargs}
        with pytest.raises(InvalidInputError, match=name):
            pipe(**{"num_frames": T, "height": H, "width": W, **steps(kind), **kwargs})
    with pytest.raises(InvalidInputError, match="negative_prompt"):
        pipe(["a", "b"], negative_prompt=["x", "y", "z"], **steps(kind))
    with pytest.raises(InvalidInputError, match="prompt"):
        pipe("a", prompt_embeds=pipe.encode_prompt("a")[0], **steps(kind))


def test_wrong_or_missing_components(tmp_path, pipes):
    vae, fsq = pipes["flow"].vae, pipes["masked"].vqvae
    with pytest.raises(InvalidInputError, match="tokenizer"):
        MaskedVideoPipeline(vae, pipes["masked"].transformer, pipes["masked"].scheduler)
    with pytest.raises(InvalidInputError, match="tokenizer"):
        FlowVideoPipeline(fsq, pipes["flow"].transformer, FlowMatchEulerDiscreteScheduler())
    with pytest.raises(MissingWeightsError, match="model_index.json"):
        load_pipeline(tmp_path / "nothing")
    pipes["masked"].save_pretrained(tmp_path / "p")
    shutil.rmtree(tmp_path / "p" / "transformer")
    with pytest.raises(MissingWeightsError, match="transformer"):
        load_pipeline(tmp_path / "p")
    pipes["flow"].save_pretrained(tmp_path / "q")
    index = json.loads((tmp_path / "q" / "model_index.json").read_text())
    index["vae"] = ["vidgen.tokenizers.vqvae", "CausalVQVAE"]  # wrong kind of component for the folder
    (tmp_path / "q" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises((VidgenError, ValueError, OSError)):
        load_pipeline(tmp_path / "q")
    index["_class_name"] = "StableDiffusionPipeline"
    (tmp_path / "q" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(VidgenError, match="not a supported video pipeline"):
        load_pipeline(tmp_path / "q")


def test_text_encoder_as_components_and_export(pipes, tmp_path):
    """Any transformers encoder + tokenizer can be registered; diffusers' export_to_video takes the frames."""
    from diffusers.utils import export_to_video

    from vidgen.io import probe_video, write_video
    from vidgen.text import load_text_encoder
    tok, enc = load_text_encoder()
    base = pipes["masked"]
    pipe = MaskedVideoPipeline(base.vqvae, base.transformer, base.scheduler, text_encoder=enc, tokenizer=tok)
    pipe.set_progress_bar_config(disable=True)
    frames = call(pipe, "masked")
    assert np.array_equal(frames, call(base, "masked"))  # the same encoder as the lazily loaded default
    path = write_video(tmp_path / "v.mp4", torch.from_numpy(frames[0]) * 2 - 1, fps=8)
    info = probe_video(path)
    assert (info.num_frames, info.height, info.width) == (T, H, W)
    export_to_video(list(frames[0]), str(tmp_path / "d.mp4"), fps=8)
    assert (tmp_path / "d.mp4").stat().st_size > 0


@pytest.mark.parametrize("kind", KINDS)
def test_check_inputs_is_public_and_runs_before_any_work(kind, pipes, monkeypatch):
    """diffusers-style check_inputs: callable alone (returns the number of videos), and a bad input or setting is
    refused before a prompt is encoded (settings by the sampling config the call builds)."""
    pipe = pipes[kind]
    assert pipe.check_inputs(prompt=["a", "b"], num_frames=T, height=H, width=W, num_videos_per_prompt=2) == 4
    with pytest.raises(InvalidInputError, match="height must be an int >= 1"):
        pipe.check_inputs(prompt="a", num_frames=T, height=0, width=W)
    monkeypatch.setattr(pipe, "_encode_text", lambda *a, **k: pytest.fail("a prompt was encoded before the checks"))
    with pytest.raises(InvalidInputError, match="num_videos_per_prompt must be an int >= 1"):
        pipe("a red circle", num_frames=T, height=H, width=W, num_videos_per_prompt=0, **steps(kind))
    with pytest.raises(InvalidInputError, match="guidance_scale"):
        pipe("a red circle", num_frames=T, height=H, width=W, guidance_scale=-1.0, **steps(kind))
    if kind != "flow":
        with pytest.raises(InvalidInputError, match="top_k must be an int >= 1"):
            pipe("a red circle", num_frames=T, height=H, width=W, top_k=0, **steps(kind))

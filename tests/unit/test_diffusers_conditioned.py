"""Conditioned calls on diffusers folders (``image=``, ``last_image=``, ``video=`` / ``strength=``) against
diffusers' own conditioned pipeline classes: Wan 2.1 image-to-video (CLIP image embeddings), first-last-frame, Wan
2.2 image-to-video with two transformers, Wan 2.2 TI2V (``expand_timesteps``) and video-to-video (UniPC and
FlowMatch Euler), on tiny random components, fp32, same seed: the frames must be diffusers' own. A folder saved and
loaded again keeps its class and its image encoder."""
from __future__ import annotations

import json

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.pipelines import DiffusersVideoPipeline, load_pipeline
from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline

I2V, V2V = "WanImageToVideoPipeline", "WanVideoToVideoPipeline"
#: fp32 frames: vidgen runs the same operations as diffusers on the same tensors (measured 0.0)
TOL = 1e-4
KW = dict(prompt="a fox", negative_prompt="blur", height=32, width=32, num_inference_steps=3, guidance_scale=5.0,
          max_sequence_length=16)
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models


def _image(seed: int, size: int = 32) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8"))


def _pair(variant=None, pipeline_class=I2V):
    native = tiny_native_pipeline("wan", pipeline_class=pipeline_class, variant=variant)
    pipe = DiffusersVideoPipeline.from_native(native)
    pipe.set_progress_bar_config(disable=True)
    return native, pipe


def _both(native, pipe, seed: int = 0, **kw):
    ours = pipe(generator=torch.Generator().manual_seed(seed), **kw).frames
    ref = native(generator=torch.Generator().manual_seed(seed), **kw).frames
    return ours, ref


@pytest.mark.parametrize("variant, first_last", [(None, False), ("first_last", True), ("two_transformers", False),
                                                 ("expand_timesteps", False)],
                         ids=["wan2.1-clip", "first-last-frame", "wan2.2-two-transformers", "wan2.2-ti2v"])
def test_image_to_video_frames_equal_diffusers_own_pipeline(variant, first_last):
    native, pipe = _pair(variant)
    assert pipe.pipeline_class_name == I2V and pipe.native_class is diffusers.WanImageToVideoPipeline
    extra = dict(image=_image(0), last_image=_image(1) if first_last else None)
    ours, ref = _both(native, pipe, num_frames=9, **KW, **extra)
    assert ours.shape == ref.shape == (1, 9, 32, 32, 3)
    assert np.abs(ours - ref).max() <= TOL
    ours, ref = _both(native, pipe, num_frames=9, output_type="latent", **KW, **extra)
    assert ours.shape == ref.shape == (1, 16, 3, 4, 4)  # the latents the loop ends with (TI2V: frame 0 replaced)
    assert (ours - ref).abs().max() <= TOL


def test_image_to_video_with_a_generator_list_and_two_prompts_equals_diffusers():
    native, pipe = _pair()
    kw = {**KW, "prompt": ["a fox", "a boat"], "negative_prompt": ["blur", "blur"], "num_inference_steps": 2}
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    ours = pipe(image=_image(0), num_frames=5, generator=gens(), **kw).frames
    ref = native(image=_image(0), num_frames=5, generator=gens(), **kw).frames
    assert ours.shape == ref.shape == (2, 5, 32, 32, 3) and np.abs(ours - ref).max() <= TOL
    alone = pipe(image=_image(0), num_frames=5, generator=gens()[1:], **{**kw, "prompt": "a boat",
                                                                           "negative_prompt": "blur"}).frames
    assert np.abs(alone[0] - ours[1]).max() <= TOL  # a seed's video does not depend on the rest of the batch


@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_video_to_video_frames_equal_diffusers_own_pipeline(scheduler):
    native, pipe = _pair(pipeline_class=V2V)
    if scheduler == "euler":  # FlowMatch Euler noises with scale_noise, UniPC with add_noise
        native.scheduler = pipe.scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    video = [_image(i) for i in range(9)]
    kw = {**KW, "num_inference_steps": 4}
    ours, ref = _both(native, pipe, video=video, strength=0.5, **kw)
    assert ours.shape == ref.shape == (1, 9, 32, 32, 3) and np.abs(ours - ref).max() <= TOL
    assert pipe.num_timesteps == 2  # the truncated schedule: int(4 * 0.5) steps
    ours, ref = _both(native, pipe, video=video, **kw)  # diffusers' default strength (0.8)
    assert np.abs(ours - ref).max() <= TOL


def test_a_conditioned_folder_saves_as_its_class_with_its_image_encoder_and_loads_again(tmp_path):
    native, _ = _pair()
    native.save_pretrained(tmp_path / "i2v")
    pipe = load_pipeline(tmp_path / "i2v", dtype="fp32")
    assert pipe.pipeline_class_name == I2V and pipe.image_encoder is not None and pipe.image_processor is not None
    pipe.sampling_config = {"num_inference_steps": 2, "guidance_scale": 3.0}
    pipe.save_pretrained(tmp_path / "again")
    index = json.loads((tmp_path / "again" / "model_index.json").read_text())
    assert index["_class_name"] == I2V
    assert index["image_encoder"][1] == "CLIPVisionModelWithProjection" and (tmp_path / "again" / "image_encoder").is_dir()
    assert index["image_processor"][1] == "CLIPImageProcessor" and (tmp_path / "again" / "image_processor").is_dir()
    again = load_pipeline(tmp_path / "again", dtype="fp32")
    assert again.pipeline_class_name == I2V and again.sampling_config.num_inference_steps == 2
    reread = diffusers.WanImageToVideoPipeline.from_pretrained(tmp_path / "again")  # diffusers' own class reads it
    a, b = reread.image_encoder.state_dict(), native.image_encoder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    kw = {**KW, "num_inference_steps": 2}
    ours = again(image=_image(0), num_frames=5, generator=torch.Generator().manual_seed(0), **kw).frames
    ref = reread(image=_image(0), num_frames=5, generator=torch.Generator().manual_seed(0), **kw).frames
    assert np.abs(ours - ref).max() <= TOL


def test_the_latent_channels_come_from_the_output_not_the_input():
    _, pipe = _pair()
    gen = pipe.flow_generator
    assert (gen.in_channels, gen.latent_channels) == (36, 16)  # 16 latents + 4 mask + 16 image latents in
    with pytest.raises(UnsupportedError, match=r"training: WanTransformer3DModel reads 20 condition channels"):
        gen.loss(torch.zeros(1, 16, 2, 2, 2))


def test_conditions_the_folder_cannot_take_are_refused_by_name_before_any_work():
    _, t2v = _pair(pipeline_class="WanPipeline")
    with pytest.raises(UnsupportedError, match=r"image: WanPipeline \(the folder's class\) does not take it; load a "
                                               r"folder of WanImageToVideoPipeline"):
        t2v("a fox", image=_image(0), num_frames=5, height=16, width=16)
    with pytest.raises(UnsupportedError, match=r"video, strength: WanPipeline .* WanVideoToVideoPipeline"):
        t2v("a fox", video=[_image(0)] * 5, strength=0.5, num_frames=5, height=16, width=16)
    _, v2v = _pair(pipeline_class=V2V)
    with pytest.raises(UnsupportedError, match=r"guidance_scale_2: not available for WanVideoToVideoPipeline"):
        v2v("a fox", video=[_image(0)] * 5, guidance_scale_2=2.0, height=16, width=16)
    with pytest.raises(InvalidInputError, match=r"num_frames=6: WanImageToVideoPipeline encodes its condition in "
                                                r"whole latent frames; pass 1 \+ a multiple of 4 \(e.g. 5\)"):
        _pair()[1]("a fox", image=_image(0), num_frames=6, height=16, width=16)

"""Image-to-video fine-tuning from shards of (first frame, clip) pairs on tiny Wan ``WanImageToVideoPipeline``
folders (Wan 2.1 with a CLIP image encoder, Wan 2.2 without one): the shards keep each clip's frame 0, the condition
is the class's own (``prepare_latents``, ``encode_image``), the loss is finite, the weights change, and the saved
transformer runs in diffusers' own ``WanImageToVideoPipeline`` with vidgen's frames; a resumed LoRA run is
bit-identical."""
from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from helpers.shards import write_captioned_clips
from vidgen.data.shards import ShardDataset
from vidgen.pipelines import DiffusersVideoPipeline
from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
from vidgen.training import encode_dataset, load_config
from vidgen.training.finetune import FineTuneConfig, finetune

I2V = "WanImageToVideoPipeline"
CAPTIONS = ["a red fox running", "a boat on a lake", "snow falling"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def i2v(tmp_path_factory):
    """variant -> (tiny WanImageToVideoPipeline folder, shards with first frames); and the clips' folder. The Wan 2.1
    shards are encoded through the command line (``vidgen data encode --first-frames``), the others in process."""
    from vidgen.cli import main as cli
    root = tmp_path_factory.mktemp("finetune_i2v")
    src = write_captioned_clips(root / "src", {f"{i}.mp4": (9, 32, 32, CAPTIONS[i % 3]) for i in range(4)})
    out = {"src": src}
    for variant in (None, "two_transformers"):
        folder = root / f"wan-{variant or 'clip'}"
        tiny_native_pipeline("wan", pipeline_class=I2V, variant=variant).save_pretrained(folder)
        shards = root / f"shards-{variant or 'clip'}"
        if variant is None:
            assert cli(["data", "encode", str(src), "--tokenizer", str(folder / "vae"), "--out", str(shards),
                        "--buckets", "9x32x32", "--text-encoder", str(folder), "--max-text-tokens", "16",
                        "--workers", "0", "--first-frames"]) == 0
        else:
            encode_dataset(src, folder / "vae", shards, buckets="9x32x32", text_encoder=str(folder),
                           max_text_tokens=16, num_workers=0, show_progress=False, first_frames=True)
        out[variant] = folder, shards
    return out


def _config(folder, shards, run_dir, *extra) -> FineTuneConfig:
    return load_config(None, [f"pipeline={folder}", f"data.root={shards}", "data.batch=2", "data.max_text_tokens=16",
                              f"run_dir={run_dir}", "steps=3", "log_every=1", "ckpt_every=3",
                              "optim.warmup_steps=0", "optim.lr=5e-2", "precision=fp32", "threads=1", *extra],
                       schema=FineTuneConfig)


def _call(seed=0) -> dict:
    image = Image.fromarray((np.random.RandomState(seed).rand(32, 32, 3) * 255).astype("uint8"))
    return dict(prompt="a red fox running", image=image, num_frames=9, height=32, width=32, num_inference_steps=2,
                guidance_scale=4.0, max_sequence_length=16, output_type="np",
                generator=torch.Generator().manual_seed(seed))


def test_the_shards_keep_each_clips_first_frame_as_its_rgb_image(i2v):
    from vidgen.io import read_video
    _, shards = i2v[None]
    ds = ShardDataset(shards)
    assert ds.info["first_frames"] is True
    frames = ds.first_frames("9x32x32", range(4))
    assert frames.shape == (4, 32, 32, 3) and frames.dtype == torch.uint8
    keys = [ds.clips("9x32x32", [i])[2][0] for i in range(4)]
    for frame, key in zip(frames, keys):  # the clip's own frame 0, as decoded at the bucket's size
        video, _ = read_video(i2v["src"] / key, num_frames=9, size=(32, 32))
        want = ((video[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
        assert torch.equal(frame, want)


@pytest.mark.parametrize("variant", [None, "two_transformers"], ids=["wan2.1-clip", "wan2.2-no-clip"])
def test_an_i2v_fine_tune_trains_and_diffusers_own_i2v_pipeline_runs_the_result(i2v, variant, tmp_path):
    folder, shards = i2v[variant]
    metrics = finetune(_config(folder, shards, tmp_path / "run"))
    assert metrics["step"] == 3 and np.isfinite(metrics["loss"])
    trained = diffusers.WanTransformer3DModel.from_pretrained(tmp_path / "run" / "final" / "transformer")
    base = diffusers.WanImageToVideoPipeline.from_pretrained(folder)
    changed = max((v - base.transformer.state_dict()[k]).abs().max().item() for k, v in trained.state_dict().items())
    assert changed > 1e-3  # the weights moved
    native = diffusers.WanImageToVideoPipeline.from_pretrained(folder, transformer=trained)
    native.set_progress_bar_config(disable=True)
    ref = native(**_call()).frames
    assert ref.shape == (1, 9, 32, 32, 3) and np.isfinite(ref).all()
    assert np.abs(ref - base(**_call()).frames).max() > 1e-4  # the fine-tune changed the frames
    ours = DiffusersVideoPipeline.from_native(native)
    ours.set_progress_bar_config(disable=True)
    assert np.abs(ours(**_call()).frames - ref).max() <= 1e-5  # vidgen samples the trained folder as diffusers does


def test_the_condition_is_the_classs_own_for_each_first_frame(i2v):
    """The step's condition for a batch of frames equals WanImageToVideoPipeline's own prepare_latents /
    encode_image on each frame as an image= (the same call a user makes)."""
    from vidgen.families import family_named
    from vidgen.tokenizers import DiffusersVideoVAE
    from vidgen.training.first_frame import FirstFrameCondition
    folder, shards = i2v[None]
    pipe = diffusers.WanImageToVideoPipeline.from_pretrained(folder)
    frames = ShardDataset(shards).first_frames("9x32x32", [0, 1])
    inputs = FirstFrameCondition(pipe, family_named("wan"), DiffusersVideoVAE(pipe.vae), "cpu")(
        frames, "9x32x32", (16, 3, 4, 4))
    assert inputs["condition"].shape == (2, 20, 3, 4, 4) and inputs["image_embeds"].shape[0] == 2
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame.numpy())
        pixels = pipe.video_processor.preprocess(image, height=32, width=32)
        _, condition = pipe.prepare_latents(pixels, 1, 16, 32, 32, 9, torch.float32, "cpu", None,
                                            torch.zeros(1, 16, 3, 4, 4))
        assert torch.equal(inputs["condition"][i:i + 1], condition)
        assert torch.equal(inputs["image_embeds"][i:i + 1], pipe.encode_image(image, "cpu"))


def test_a_resumed_i2v_lora_run_is_bit_identical(i2v, tmp_path):
    from safetensors.torch import load_file
    folder, shards = i2v[None]
    same = ("lora.rank=2", "ckpt_every=2", "optim.schedule_steps=4")  # one LR schedule for the three calls
    finetune(_config(folder, shards, tmp_path / "a", "steps=4", *same))
    finetune(_config(folder, shards, tmp_path / "b", "steps=2", *same))
    finetune(_config(folder, shards, tmp_path / "b", "steps=4", *same))  # resumes at 2

    def last(run):
        return load_file(str(sorted((run / "checkpoints").glob("step_*"))[-1] / "diffusion_pytorch_model.safetensors"))
    a, b = last(tmp_path / "a"), last(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.endswith("lora_B.default.weight") and a[k].abs().max() > 0 for k in a)  # the adapter trained

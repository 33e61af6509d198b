"""``CausalVideoPipeline(image=...)``: the block-causal stream started from a first frame. The image is encoded by the
pipeline's VAE as the first latent chunk and committed clean: frame 0 of the video is the VAE's round trip of the
image, the chunks after it attend it (another image, the same seed: other frames), the call is deterministic and
equals ``pipe.stream(..., image=)`` collected; a chunk of more latent frames than one image makes holds the image
still; the CLI's ``--init-video`` of an image is the stream's first frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vidgen.cli import main
from vidgen.io import read_video
from vidgen.pipelines import first_chunk_latents
from vidgen.pipelines.conditions import image_pixels
from vidgen.tokenizers.tokens import tokens_to_video, video_to_tokens

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = dict(num_frames=9, height=32, width=32)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    return tiny_pipeline("causal")


def _image(seed: int) -> torch.Tensor:
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _round_trip(pipe, image) -> torch.Tensor:
    """The VAE's reconstruction of ``image`` (3, H, W) in [0, 1], as the pipeline outputs frames (clamped)."""
    with torch.no_grad():
        x = tokens_to_video(pipe.vae, video_to_tokens(pipe.vae, image_pixels("image", image, 32, 32)), 1, 32, 32)
    return ((x[0, :, 0] + 1) / 2).clamp(0, 1)


def _call(pipe, image=None, seed=1, **kwargs):
    kwargs = {**SIZE, "output_type": "pt", **kwargs}
    return pipe("a red circle moving left", image=image, generator=torch.Generator().manual_seed(seed),
                **kwargs).frames  # (B, T, 3, H, W); latents (B, C, t, h, w)


def test_frame_0_is_the_vae_round_trip_of_the_image_and_its_latent_chunk_is_kept(pipe):
    image = _image(0)
    frames = _call(pipe, image)
    assert frames.shape == (1, 9, 3, 32, 32)
    assert (frames[0, 0] - _round_trip(pipe, image)).abs().max() <= 1e-5
    latents = _call(pipe, image, output_type="latent")
    assert torch.equal(latents[:, :, :1], first_chunk_latents(pipe.vae, image, height=32, width=32))
    pil = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert (_call(pipe, pil)[0, 0] - _round_trip(pipe, pil)).abs().max() <= 1e-5  # a PIL image as well


def test_the_image_reaches_the_frames_after_it(pipe):
    """Two images with the same seed (the same noise for every later chunk): the later frames differ."""
    a, b = _call(pipe, _image(0)), _call(pipe, _image(0).flip(-1))
    assert (a[0, 1:] - b[0, 1:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_a_stream_from_an_image_is_deterministic_and_equals_the_call(pipe):
    image = _image(2)
    first, again = _call(pipe, image, seed=5), _call(pipe, image, seed=5)
    assert torch.equal(first, again)
    parts = list(pipe.stream("a red circle moving left", image=image, generator=torch.Generator().manual_seed(5),
                             output_type="pt", **SIZE))
    assert len(parts) > 1 and (torch.cat(parts, 1) - first).abs().max() <= 1e-6


def test_every_video_of_a_batch_starts_from_the_image(pipe):
    image = _image(3)
    frames = pipe("a red circle moving left", image=image, num_videos_per_prompt=2, output_type="pt",
                  generator=[torch.Generator().manual_seed(s) for s in (1, 2)], **SIZE).frames
    want = _round_trip(pipe, image)
    assert all((frames[k, 0] - want).abs().max() <= 1e-5 for k in range(2))
    assert (frames[0, 1:] - frames[1, 1:]).abs().max() > 1e-3  # each video its own noise after the image


def test_a_chunk_of_two_latent_frames_holds_the_image_still(tiny_pipeline):
    """Chunks of 2 latent frames: the first chunk is the image held for 1 + 4 frames, encoded; frame 0 is its
    round trip and the stream continues after it."""
    pipe = tiny_pipeline("causal", chunk_frames=2, window_chunks=1, sink_chunks=0)
    image = _image(4)
    latents = _call(pipe, image, output_type="latent")
    with torch.no_grad():
        held = video_to_tokens(pipe.vae, image_pixels("image", image, 32, 32).expand(-1, -1, 5, -1, -1))
    assert latents.shape[2] == 3 and torch.equal(latents[:, :, :2], held[:, :, :2])
    assert (_call(pipe, image)[0, 0] - _round_trip(pipe, image)).abs().max() <= 1e-5


def test_the_cli_init_video_of_an_image_starts_the_causal_stream(tiny_pipeline, tmp_path, capsys):
    tiny_pipeline("causal").save_pretrained(tmp_path / "causal")
    pixels = (_image(5).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "first.png")
    args = ["generate", "a red circle moving left", "--pipeline", str(tmp_path / "causal"), "--num-frames", "9",
            "--height", "32", "--width", "32", "--threads", "1", "--seed", "0"]
    assert main([*args, "--init-video", str(tmp_path / "first.png"), "--out", str(tmp_path / "v.mp4")]) == 0
    assert main([*args, "--out", str(tmp_path / "plain.mp4")]) == 0
    with_image, plain = read_video(tmp_path / "v.mp4")[0], read_video(tmp_path / "plain.mp4")[0]
    assert with_image.shape[1] == 9
    first = with_image[:, 0].permute(1, 2, 0).numpy() * 0.5 + 0.5  # (H, W, 3) in [0, 1], through the MP4
    want = _round_trip(tiny_pipeline("causal"), _image(5)).permute(1, 2, 0).numpy()
    assert np.abs(first - want).mean() < np.abs(plain[:, 0].permute(1, 2, 0).numpy() * 0.5 + 0.5 - want).mean()

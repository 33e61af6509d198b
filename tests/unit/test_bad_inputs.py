"""One growing corpus of bad inputs across vidgen's public surface.

Every entry of :data:`CASES` is ``Case(id, target, trigger, error, match[, after])``: ``trigger(env)`` must raise
``error`` (a :class:`~vidgen.errors.VidgenError`) whose message matches ``match`` - a regex that names the input (file,
argument, tensor) *and* the problem; ``after(env)`` checks side effects (no pickle payload ran, no half-written file).
After each case the target object gets a follow-up valid call (:data:`SANITY`) whose result must equal the one computed
before any bad input was seen: the process and the object stay usable. Add new bad inputs here, to the table.

Inputs that vidgen accepts by documented conversion (float64 metrics inputs, int32 ids, float64 latents, the empty
prompt, over-long prompts) are tested below the table: with the same result as the canonical input.

Tiny models only (tiny tokenizer presets, tiny generators on a 4x4x4 grid); no feature network is loaded.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import wave
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLWan, DDIMScheduler, FlowMatchEulerDiscreteScheduler
from PIL import Image
from safetensors.torch import load_file, save_file

from vidgen.data.shards import parse_buckets
from vidgen.adapters.causal import block_causal
from vidgen.adapters.window import window_attention
from vidgen.generators.causal import CausalFlowVideoTransformer
from vidgen.generators.flow_sampler import distillation_spec
from vidgen.generators.sampling import Guidance, step_callback
from vidgen.pipelines.loading import student_class
from vidgen.training.lora import add_lora
from vidgen.data.shards import ShardDataset
from vidgen.data.shards.sources import list_source, read_manifest
from vidgen.errors import (ConfigError, InvalidInputError, MissingWeightsError, ShardError, UnknownArgumentError,
                           UnsupportedError, VidgenError, VideoIOError)
from vidgen.generators import (AutoregressiveVideoTransformer, FlowSamplingConfig, FlowVideoTransformer,
                               MaskedSamplingConfig, MaskedVideoTransformer, check_scheduler, generate_ids,
                               generate_tokens, generator_class)
from vidgen.data import SceneClips, ShapesDataset
from vidgen.data.capture import Capture, apply_capture
from vidgen.io import probe_video, read_video, write_video
from vidgen.metrics import FeatureStats, FrechetInceptionDistance, FrechetVideoDistance, frechet_distance, psnr, ssim
from vidgen.metrics import preprocess_for_i3d, temporal_flicker
from vidgen.metrics.fid import load_inception, preprocess_for_inception
from vidgen.metrics.fvd import PREPROCESSING as FVD_PREPROCESSING
from vidgen.metrics.i3d import FEATURE_NETWORK_ID as I3D_ID
from vidgen.metrics.i3d import load_i3d
from vidgen.metrics.baselines import ResizeBaseline
from vidgen.metrics.weights import UnsafeWeightsError
from vidgen.pipelines import FlowVideoPipeline, load_pipeline
from vidgen.rng import RowGenerator
from vidgen.testing import perturb_weights
from vidgen.text import check_prompts
from vidgen.tokenizers import CausalVAE, CausalVQVAE, DiffusersVideoVAE, load_tokenizer
from vidgen.parallel import SequenceParallel, check_sequence_parallel
from vidgen.training import GeneratorTrainConfig, build_model, encode_dataset, load_config
from vidgen.training.repa import RepaConfig, check_repa
from vidgen.training.shards import bucket_settings
from vidgen.training.data import EpochSampler, joint_batch

from helpers.tiny_models import causal_wan

T, H, W = 5, 16, 16  # the valid video every sanity call uses: 2 latent frames of 2x2
HUGE_LATENT = (1, 4, 1000, 10_000, 10_000)  # decodes to 3997 frames of 80000x80000: petabytes
HUGE_VIDEO = (1, 3, 100_000, 40_000, 40_000)
GIB = r"would need about [\d,]+\.\d GiB, more than the [\d,]+\.\d GiB of"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class _Payload:
    """A pickle that would run ``touch marker`` when unpickled by an unrestricted loader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _ffmpeg(*args) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True, timeout=60)


def _smooth_video(frames: int = 12, size: int = 32) -> torch.Tensor:
    """A moving colour gradient ``(3, frames, size, size)`` in [-1, 1]: a small, valid H.264 clip once written."""
    t, y, x = torch.meshgrid(torch.arange(frames), torch.arange(size), torch.arange(size), indexing="ij")
    phase = (x + y + 2 * t).float() / (2 * size)
    return torch.stack([torch.sin(6.28 * phase), torch.cos(6.28 * phase), 2 * phase % 2 - 1]) * 0.9


def _rename_weight(folder: Path, old: str, new: str) -> None:
    """Rename the tensor ``old`` of ``folder``'s diffusers weight file to ``new``."""
    file = folder / "diffusion_pytorch_model.safetensors"
    weights = load_file(file)
    weights[new] = weights.pop(old)
    save_file(weights, file, metadata={"format": "pt"})


def _save_with_adapter(folder: Path) -> None:
    """The transformer saved with an unfused peft adapter, as diffusers' own ``save_pretrained`` writes it."""
    from diffusers import WanTransformer3DModel
    model = WanTransformer3DModel.from_pretrained(folder / "transformer")
    add_lora(model, 2)
    model.save_pretrained(folder / "transformer")


def _load_with_sampling_config(env, name: str, text: str):
    """Load a copy of the flow pipeline folder whose ``sampling_config.json`` holds ``text``."""
    return load_pipeline(env.broken_pipe(name, lambda p: (p / "sampling_config.json").write_text(text)))


def _quantized(mapping: dict):
    """A diffusers ``PipelineQuantizationConfig`` quantizing each named component to torchao int8 weight-only."""
    pytest.importorskip("torchao", reason="torchao is not installed (the `quant` extra; make install installs it)")
    from diffusers import PipelineQuantizationConfig, TorchAoConfig
    from torchao.quantization import Int8WeightOnlyConfig
    return PipelineQuantizationConfig(quant_mapping={k: TorchAoConfig(Int8WeightOnlyConfig()) for k in mapping})


def _edit_json(path: Path, **changes) -> None:
    """Set keys of a JSON file; ``a__b=v`` sets the nested key ``a.b``."""
    data = json.loads(path.read_text())
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        node = data
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    path.write_text(json.dumps(data))


class Env:
    """Everything the cases need, built lazily once per module; reference results are computed before any case."""

    def __init__(self, root: Path):
        self.root = root
        self.markers: list[Path] = []  # files the pickle payloads would create
        self.reference: dict[str, Any] = {}  # SANITY results before any bad input

    # ------------------------------------------------------------------ files
    def path(self, name: str) -> Path:
        return self.root / name

    @cached_property
    def good_mp4(self) -> Path:
        return write_video(self.path("good.mp4"), _smooth_video(), fps=8)

    def file(self, name: str, data: bytes) -> Path:
        path = self.path(name)
        path.write_bytes(data)
        return path

    @cached_property
    def truncated_mp4(self) -> Path:
        data = self.good_mp4.read_bytes()
        return self.file("cut.mp4", data[: len(data) * 2 // 3])  # the moov atom at the end is cut off

    @cached_property
    def truncated_faststart_mp4(self) -> Path:
        full = self.path("faststart.mp4")
        _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=8", "-frames:v", "24", "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", str(full))
        data = full.read_bytes()
        return self.file("cut_faststart.mp4", data[: len(data) * 6 // 10])

    @cached_property
    def corrupt_mp4(self) -> Path:
        data = bytearray(self.good_mp4.read_bytes())
        for i in range(len(data) // 3, len(data) * 2 // 3):
            data[i] = (data[i] * 7 + 13) % 256
        return self.file("corrupt.mp4", bytes(data))

    @cached_property
    def zero_frame_avi(self) -> Path:
        """A container with a video stream that holds zero frames."""
        path = self.path("zero.avi")
        _ffmpeg("-f", "lavfi", "-i", "color=size=32x32:rate=8", "-t", "0", "-pix_fmt", "yuv420p", str(path))
        return path

    @cached_property
    def no_stream_mp4(self) -> Path:
        path = self.path("nostream.mp4")
        _ffmpeg("-f", "lavfi", "-i", "color=size=32x32:rate=8", "-frames:v", "0", "-pix_fmt", "yuv420p", str(path))
        return path

    def folder(self, name: str, images: dict[str, Any]) -> Path:
        path = self.path(name)
        path.mkdir()
        for file, content in images.items():
            if isinstance(content, bytes):
                (path / file).write_bytes(content)
            else:
                Image.fromarray(content).save(path / file)
        return path

    # ------------------------------------------------------------------ tokenizers
    @cached_property
    def x(self) -> torch.Tensor:
        return torch.rand(1, 3, T, H, W, generator=torch.Generator().manual_seed(0)) * 2 - 1

    @cached_property
    def vae(self) -> CausalVAE:
        torch.manual_seed(0)
        return perturb_weights(CausalVAE.from_preset("tiny")).eval()

    @cached_property
    def vq(self) -> CausalVQVAE:
        torch.manual_seed(0)
        return perturb_weights(CausalVQVAE.from_preset("tiny", quantizer="fsq")).eval()

    @cached_property
    def vae_folder(self) -> Path:
        self.vae.save_pretrained(self.path("vae"))
        return self.path("vae")

    @cached_property
    def vq_folder(self) -> Path:
        self.vq.save_pretrained(self.path("vq"))
        return self.path("vq")

    @cached_property
    def shards(self) -> Path:
        """A one-clip shard dataset (``vidgen data encode``) through the tiny VAE, no captions."""
        from vidgen.training import encode_dataset
        src = self.path("shard-src")
        src.mkdir(exist_ok=True)
        shutil.copy(self.good_mp4, src / "clip.mp4")
        encode_dataset(src, self.vae_folder, self.path("shards"), buckets="9x32x32", text_encoder="none",
                       num_workers=0, show_progress=False)
        return self.path("shards")

    def truncated_shards(self) -> Path:
        copy = self.path("shards-cut")
        if not copy.exists():
            shutil.copytree(self.shards, copy, ignore=shutil.ignore_patterns("parts"))
            _truncate(next((copy / "9x32x32").glob("*.bin")))
        return copy

    @cached_property
    def diffusers_vae(self) -> DiffusersVideoVAE:
        """A tiny diffusers Wan VAE (16 latent channels, 4x8x8 compression) through vidgen's adapter."""
        torch.manual_seed(0)
        return DiffusersVideoVAE(AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                                  temperal_downsample=[False, True, True]).eval())

    @cached_property
    def image_vae_folder(self) -> Path:
        """A diffusers *image* VAE folder (``_class_name: AutoencoderKL``)."""
        AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4).save_pretrained(self.path("img"))
        return self.path("img")

    def broken_vae(self, name: str, edit: Callable[[Path], None]) -> Path:
        """A copy of the saved tiny VAE, broken by ``edit(folder)``."""
        path = self.path(name)
        shutil.copytree(self.vae_folder, path)
        edit(path)
        return path

    def payload(self, name: str, saver=pickle.dump) -> Path:
        """A malicious pickle (``touch marker`` on load) written under ``name``."""
        marker = self.path(f"pwned_{name.replace('/', '_')}")
        self.markers.append(marker)
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            saver({"weights": _Payload(marker)}, handle)
        return path

    def no_payload_ran(self) -> None:
        assert not [m for m in self.markers if m.exists()], "a weight pickle was executed"

    # ------------------------------------------------------------------ generators and pipelines
    @cached_property
    def masked(self) -> MaskedVideoTransformer:
        torch.manual_seed(0)
        return MaskedVideoTransformer.from_preset("tiny", vocab_size=64, max_grid=(4, 4, 4)).eval()

    @cached_property
    def autoregressive(self) -> AutoregressiveVideoTransformer:
        torch.manual_seed(0)
        return AutoregressiveVideoTransformer.from_preset("tiny", vocab_size=64, max_grid=(4, 4, 4)).eval()

    @cached_property
    def autoregressive_patched(self) -> AutoregressiveVideoTransformer:
        torch.manual_seed(0)
        return AutoregressiveVideoTransformer.from_preset("tiny", vocab_size=64, max_grid=(4, 2, 2),
                                                          patch_size=(1, 2, 2)).eval()

    @cached_property
    def pipe(self) -> FlowVideoPipeline:
        """Tiny text-conditioned latent-flow pipeline (the text encoder loads only if a prompt is encoded)."""
        torch.manual_seed(0)
        vae = CausalVAE.from_preset("tiny")
        gen = FlowVideoTransformer.from_preset("tiny", in_channels=4, text_dim=384, max_text_tokens=8,
                                                    max_grid=(4, 4, 4))
        perturb_weights(vae, gen)
        pipe = FlowVideoPipeline(vae, gen, FlowMatchEulerDiscreteScheduler())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @cached_property
    def student_pipe(self) -> FlowVideoPipeline:
        """The tiny flow pipeline with a distilled student (1, 2 or 4 steps, guidance 3 built in)."""
        from vidgen.distillation.losses import make_student
        return self.pipe.with_student(make_student(self.pipe.transformer, distillation_spec("dmd2", [1, 2, 4], 3.0)))

    @cached_property
    def causal_pipe(self):
        """A tiny block-causal pipeline in chunks of 2 latent frames."""
        from vidgen.pipelines import CausalVideoPipeline
        torch.manual_seed(0)
        gen = CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, text_dim=384, max_text_tokens=8,
                                                     max_grid=(4, 4, 4), chunk_frames=2, window_chunks=1,
                                                     sink_chunks=0)
        pipe = CausalVideoPipeline(self.pipe.vae, perturb_weights(gen), FlowMatchEulerDiscreteScheduler())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def run_pipe(self, prompt=None, **kwargs):
        kwargs = {"num_frames": T, "height": H, "width": W, "num_inference_steps": 1, **kwargs}
        return self.pipe(prompt, generator=torch.Generator().manual_seed(0), **kwargs).frames

    @cached_property
    def pipe_folder(self) -> Path:
        self.pipe.save_pretrained(self.path("pipe"))
        return self.path("pipe")

    @cached_property
    def diffusers_pipe(self):
        """A tiny diffusers WanPipeline folder loaded as a vidgen flow pipeline."""
        from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
        tiny_native_pipeline("wan").save_pretrained(self.path("wan"))
        return load_pipeline(self.path("wan"), dtype="fp32")

    def broken_wan(self, name: str, edit: Callable[[Path], None]) -> Path:
        """A copy of the tiny Wan folder, broken by ``edit(folder)``."""
        self.diffusers_pipe  # writes the folder
        path = self.path(name)
        shutil.copytree(self.path("wan"), path)
        edit(path)
        return path

    def run_diffusers_pipe(self, prompt="a fox", **kwargs):
        kwargs = {"num_frames": 5, "height": 16, "width": 16, "num_inference_steps": 1, "output_type": "latent",
                  **kwargs}
        return self.diffusers_pipe(prompt, generator=torch.Generator().manual_seed(0), **kwargs).frames

    @cached_property
    def wan_i2v(self):
        """A tiny diffusers WanImageToVideoPipeline (CLIP image encoder) as a vidgen pipeline."""
        from vidgen.pipelines import DiffusersVideoPipeline
        from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
        pipe = DiffusersVideoPipeline.from_native(tiny_native_pipeline("wan", pipeline_class="WanImageToVideoPipeline"))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @cached_property
    def wan_v2v(self):
        """A tiny diffusers WanVideoToVideoPipeline as a vidgen pipeline."""
        from vidgen.pipelines import DiffusersVideoPipeline
        from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
        pipe = DiffusersVideoPipeline.from_native(tiny_native_pipeline("wan", pipeline_class="WanVideoToVideoPipeline"))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @cached_property
    def family_i2v(self) -> dict:
        """Tiny image-to-video folders of the other families as vidgen pipelines, built when first used."""
        return {}

    def run_family_i2v(self, family: str, prompt="a fox", **kwargs):
        """One step of a tiny ``family`` image-to-video pipeline (ltx, hunyuan_video), 9 frames of 32x32."""
        from vidgen.pipelines import DiffusersVideoPipeline
        from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
        classes = {"ltx": "LTXImageToVideoPipeline", "hunyuan_video": "HunyuanVideoImageToVideoPipeline"}
        if family not in self.family_i2v:
            pipe = DiffusersVideoPipeline.from_native(tiny_native_pipeline(family, pipeline_class=classes[family]))
            pipe.set_progress_bar_config(disable=True)
            self.family_i2v[family] = pipe
        template = {"prompt_template": {"template": "{}", "crop_start": 0, "image_emb_len": 16, "image_emb_start": 5,
                                        "image_emb_end": 21}} if family == "hunyuan_video" else {}
        kwargs = {"num_frames": 9, "height": 32, "width": 32, "num_inference_steps": 1, "output_type": "latent",
                  "max_sequence_length": 32 if template else 16, "image": _rgb(32), **template, **kwargs}
        return self.family_i2v[family](prompt, generator=torch.Generator().manual_seed(0), **kwargs).frames

    def run_conditioned(self, pipe: str, prompt="a fox", **kwargs):
        """One step of the tiny image-to-video (``pipe="i2v"``) or video-to-video pipeline, 5 frames of 16x16."""
        kwargs = {"height": 16, "width": 16, "num_inference_steps": 1, "output_type": "latent",
                  "max_sequence_length": 8, **kwargs}
        if pipe == "i2v":
            kwargs = {"num_frames": 5, **kwargs}
        target = self.wan_i2v if pipe == "i2v" else self.wan_v2v
        return target(prompt, generator=torch.Generator().manual_seed(0), **kwargs).frames

    def broken_pipe(self, name: str, edit: Callable[[Path], None]) -> Path:
        path = self.path(name)
        shutil.copytree(self.pipe_folder, path)
        edit(path)
        return path

    # ------------------------------------------------------------------ metrics
    @cached_property
    def fvd(self) -> FrechetVideoDistance:
        return FrechetVideoDistance(progress=False)  # the I3D loads lazily: none of the cases needs it

    def stats(self, name: str, dim: int = 400, **meta) -> Path:
        features = np.random.default_rng(0).normal(size=(8, dim))
        stats = FeatureStats(dim, meta=meta).update(features)
        stats.save(self.path(name))
        return self.path(name)

    @cached_property
    def fvd_stats(self) -> Path:
        """Reference statistics under this FVD's protocol (no parameter hash: the network is not loaded)."""
        return self.stats("fvd_ok.npz", metric="FVD", feature_network=I3D_ID, preprocessing=FVD_PREPROCESSING)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    env = Env(tmp_path_factory.mktemp("bad_inputs"))
    env.reference = {name: fn(env) for name, fn in SANITY.items()}
    return env


# ---------------------------------------------------------------------------------------------------- sanity calls
def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


#: target -> a valid follow-up call on the object the cases of that target hit; its result must not change
SANITY: dict[str, Callable[[Env], Any]] = {
    "io": lambda env: (read_video(env.good_mp4, num_frames=4, start=2)[0], probe_video(env.good_mp4).num_frames),
    "write": lambda env: (write_video(env.path("bad.mp4"), env.x[0], fps=8), read_video(env.path("bad.mp4"))[0].shape,
                          env.path("bad.mp4").unlink())[1],
    "vae": lambda env: (env.vae.encode(env.x).latent_dist.mean, env.vae.decode(torch.ones(1, 4, 2, 2, 2)).sample),
    "vq": lambda env: (env.vq.tokenize(env.x), env.vq.detokenize(torch.ones(1, 2, 2, 2, dtype=torch.long))),
    "load": lambda env: load_tokenizer(env.vae_folder).encode(env.x).latent_dist.mean,
    "diffusers_vae": lambda env: (env.diffusers_vae.encode(env.x).latent_dist.mean,
                                  env.diffusers_vae.decode(torch.ones(1, 16, 2, 2, 2), num_frames=T).sample),
    "metrics": lambda env: (psnr(env.x, env.x * 0.5), ssim(env.x, env.x * 0.5),
                            preprocess_for_i3d(env.x)[..., ::37, ::37],
                            preprocess_for_inception(env.x[:, :, 0])[..., ::50, ::50]),
    "fvd": lambda env: (env.fvd.load_real_stats(env.fvd_stats), env.fvd.real.count, env.fvd.real.mean)[1:],
    "config": lambda env: (load_config(overrides=["steps=3", "model.preset=tiny"]).steps,
                           build_model(load_config(overrides=["model.preset=tiny"]).model).num_parameters()),
    "generator": lambda env: (env.masked.check_ids(torch.zeros(1, 2, 2, 2, dtype=torch.long)),
                              env.autoregressive.check_ids(torch.full((1, 2, 2, 2), 63)),
                              generator_class("masked").__name__),
    "pipeline": lambda env: env.run_pipe(),
    "data": lambda env: (SceneClips("val", num_frames=3, size=8)[0]["video"],
                         ResizeBaseline().decode(ResizeBaseline().encode(torch.ones(1, 3, 3, 8, 8)), 3, 8, 8)),
    "pipeline_folder": lambda env: type(load_pipeline(env.pipe_folder)).__name__,
    "diffusers_pipeline": lambda env: env.run_diffusers_pipe(),
    "diffusers_i2v": lambda env: env.run_conditioned("i2v", image=_rgb(16)),
    "diffusers_v2v": lambda env: env.run_conditioned("v2v", video=[_rgb(16, i) for i in range(5)], strength=1.0),
    "ltx_i2v": lambda env: env.run_family_i2v("ltx"),
    "hunyuan_i2v": lambda env: env.run_family_i2v("hunyuan_video"),
}


# ---------------------------------------------------------------------------------------------------- the corpus
@dataclass(frozen=True)
class Case:
    id: str
    target: str  # key of SANITY
    trigger: Callable[[Env], Any]
    error: type
    match: str  # regex: the input's name and the problem
    after: Callable[[Env], None] | None = None  # extra check once the error was raised


def _rgb(size: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A random ``size`` x ``size`` PIL image (``mode``: RGB, or RGBA for the bad inputs)."""
    data = (np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8")
    return Image.fromarray(data).convert(mode)


def _nan(shape) -> torch.Tensor:
    x = torch.zeros(shape)
    x.view(-1)[1] = float("nan")
    return x


def _inf(shape) -> torch.Tensor:
    x = torch.zeros(shape)
    x.view(-1)[-1] = float("inf")
    return x


def _write(env: Env, video, fps: float = 8, name: str = "bad.mp4"):
    return write_video(env.path(name), video, fps=fps)


def _nothing_written(env: Env) -> None:
    left = [p.name for p in env.root.iterdir() if p.name.startswith(("bad.", ".bad."))]  # incl. mkstemp's temp
    assert not left, f"a failed write left {left} behind"


def _drop_tensor(folder: Path) -> None:
    weights = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["decoder.head.bias"]
    save_file(state, weights, metadata={"format": "pt"})


def _extra_tensor(folder: Path) -> None:
    weights = folder / "diffusion_pytorch_model.safetensors"
    save_file({**load_file(weights), "decoder.extra.weight": torch.zeros(2)}, weights, metadata={"format": "pt"})


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _config_file(env: Env, name: str, text: str) -> Path:
    return env.file(name, text.encode())


def _wav_bytes() -> bytes:
    """One second of 8 kHz audio: a valid media file without a video stream."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\x00\x01" * 8000)
    return buffer.getvalue()


def _distill_teacher(env, kind: str):
    """A distillation run whose teacher is a masked generator or an epsilon-prediction model."""
    from vidgen.distillation.task import DistillTrainConfig, distill
    folder = env.path(f"teacher-{kind}")
    if not folder.exists():
        torch.manual_seed(0)
        model = MaskedVideoTransformer.from_preset("tiny", vocab_size=64, max_grid=(4, 4, 4)) if kind == "masked" \
            else FlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=(4, 4, 4), prediction_type=kind)
        model.save_pretrained(folder)
    distill(load_config(None, [f"distill.teacher={folder}", f"run_dir={env.path('distill-run')}"],
                        schema=DistillTrainConfig))


def _distill_diffusers(env, *overrides):
    """A diffusers distillation run with a CogVideoX (v-prediction) folder as teacher, or without a LoRA rank."""
    import json

    from vidgen.distillation.diffusers_task import DiffusersDistillConfig, distill_diffusers
    folder = env.path("cogvideox-index")
    folder.mkdir(exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    distill_diffusers(load_config(None, [f"distill.teacher={folder}", f"run_dir={env.path('distill-run')}",
                                         *overrides], schema=DiffusersDistillConfig))


def _finetune_i2v(env, variant=None, first_frames=True, bucket="9x32x32", pipeline_class="WanImageToVideoPipeline"):
    """A fine-tune of a tiny Wan conditioned folder (``variant`` of ``tiny_conditioned_components``) on shards of its
    VAE, encoded with or without first frames at ``bucket``."""
    from helpers.shards import write_captioned_clips
    from vidgen.pipelines.diffusers_tiny import tiny_native_pipeline
    from vidgen.training import encode_dataset
    from vidgen.training.finetune import FineTuneConfig, finetune
    folder = env.path(f"i2v-{pipeline_class}-{variant}")
    if not folder.exists():
        tiny_native_pipeline("wan", pipeline_class=pipeline_class, variant=variant).save_pretrained(folder)
    shards = env.path(f"i2v-shards-{pipeline_class}-{variant}-{first_frames}-{bucket}")
    if not shards.exists():
        src = env.path("i2v-clips")
        if not src.exists():
            write_captioned_clips(src, {f"{i}.mp4": (9, 32, 32, "a red fox") for i in range(2)})
        encode_dataset(src, folder / "vae", shards, buckets=bucket, text_encoder=str(folder), max_text_tokens=16,
                       num_workers=0, show_progress=False, first_frames=first_frames)
    finetune(load_config(None, [f"pipeline={folder}", f"data.root={shards}", "data.max_text_tokens=16", "steps=1",
                                f"run_dir={env.path('i2v-run')}", "precision=fp32", "threads=1"],
                         schema=FineTuneConfig))


TINY_RUN = ["model.preset=tiny", "data.num_frames=5", "data.size=16", "data.num_clips=4", "data.video_batch=1",
            "data.image_batch=1", "data.eval_clips=1", "data.eval_frames=5", "loss.perceptual=0", "loss.gan=0",
            "log_every=1", "eval_every=100", "sample_every=100", "stats_clips=1", "ckpt_every=1", "steps=1"]


def _resume_with(env, *overrides):
    """Resume a 1-step tiny tokenizer run (trained once) with other settings."""
    from vidgen.training import train
    run = env.path("tok-run")
    if not (run / "final").exists():
        train(load_config(None, TINY_RUN + [f"run_dir={run}", "resume="]))
        env.reference["tok-run-config"] = (run / "config.yaml").read_text()
    train(load_config(None, TINY_RUN + [f"run_dir={run}", "steps=2", *overrides]))


def _restore_into_wider(env):
    """Every trainer (generators, distillation, fine-tuning) resumes through ``restore``: a tiny flow generator's
    checkpoint restored into a wider one."""
    from vidgen.generators import FlowVideoTransformer
    from vidgen.training.checkpoint import restore, save_checkpoint
    small = FlowVideoTransformer.from_preset("tiny")
    ckpt = save_checkpoint(env.path("gen-run"), 1, small, {"step": 1})
    restore(ckpt, FlowVideoTransformer.from_preset("tiny", architecture={"dim": 2 * small.backbone_config.dim}),
            None, None, None)


def _routing_check(start=1, end=-1, **arch):
    """Token routing checked against a tiny flow generator with ``arch`` (vidgen.training.routing)."""
    from types import SimpleNamespace

    from vidgen.training.routing import RoutingConfig, check_run_routing
    model = FlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=(4, 4, 4), **arch)
    cfg = SimpleNamespace(routing=RoutingConfig(0.5, start, end), model=SimpleNamespace(generator="flow"))
    check_run_routing(cfg, model)


def _run_record_unchanged(env) -> None:
    run = env.path("tok-run")
    assert (run / "config.yaml").read_text() == env.reference["tok-run-config"], "the refused resume rewrote config.yaml"
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000001"]


def _eval_folder(env) -> Path:
    """Two 9-frame videos and a 4-frame one between them."""
    folder = env.path("recon-folder")
    if not folder.exists():
        folder.mkdir()
        g = torch.Generator().manual_seed(0)
        for name, frames in (("a_good.mp4", 9), ("b_short.mp4", 4), ("c_good.mp4", 9)):
            write_video(folder / name, torch.rand(3, frames, 16, 16, generator=g) * 2 - 1, fps=8)
    return folder


def _recon_args(*argv):
    import argparse

    from vidgen.cli import eval_recon
    parser = argparse.ArgumentParser()
    eval_recon.add_arguments(parser)
    return eval_recon.settle_protocol(parser.parse_args(["bicubic", *argv]))


CASES: list[Case] = [
    # --------------------------------------------------------------------------- video files: read_video / probe_video
    Case("read/missing", "io", lambda env: read_video(env.path("nope.mp4")), VideoIOError, r"nope\.mp4: no such file"),
    Case("read/empty-file", "io", lambda env: read_video(env.file("empty.mp4", b"")), VideoIOError,
         r"empty\.mp4: the file is empty \(0 bytes\)"),
    Case("probe/empty-file", "io", lambda env: probe_video(env.file("empty2.mp4", b"")), VideoIOError,
         r"empty2\.mp4: the file is empty"),
    Case("read/not-a-video", "io", lambda env: read_video(env.file("notes.mp4", b"meeting notes, not a video\n" * 40)),
         VideoIOError, r"notes\.mp4: cannot open as a video: the file is corrupt, truncated or not a video"),
    Case("probe/not-a-video", "io", lambda env: probe_video(env.file("notes2.mp4", b"\x00not a video" * 40)),
         VideoIOError, r"notes2\.mp4: cannot open as a video"),
    Case("read/audio-only", "io", lambda env: read_video(env.file("sound.mp4", _wav_bytes())), VideoIOError,
         r"sound\.mp4: the file has no video stream \(not a video"),
    Case("probe/audio-only", "io", lambda env: probe_video(env.file("sound2.wav.mp4", _wav_bytes())), VideoIOError,
         r"sound2\.wav\.mp4: the file has no video stream"),
    Case("read/truncated-moov", "io", lambda env: read_video(env.truncated_mp4), VideoIOError,
         r"cut\.mp4: .*truncated"),
    Case("probe/truncated-moov", "io", lambda env: probe_video(env.truncated_mp4), VideoIOError,
         r"cut\.mp4: .*truncated"),
    Case("read/truncated-in-mdat", "io", lambda env: read_video(env.file("cut_early.mp4",
                                                                          env.good_mp4.read_bytes()[:700])),
         VideoIOError, r"cut_early\.mp4: .*truncated"),
    Case("read/truncated-faststart", "io", lambda env: read_video(env.truncated_faststart_mp4), VideoIOError,
         r"cut_faststart\.mp4: .*truncated video"),
    Case("read/corrupt-stream", "io", lambda env: read_video(env.corrupt_mp4), VideoIOError,
         r"corrupt\.mp4: .*corrupt"),
    Case("read/zero-frames", "io", lambda env: read_video(env.zero_frame_avi), VideoIOError,
         r"zero\.avi: zero frames could be decoded"),
    Case("probe/zero-frames", "io", lambda env: probe_video(env.zero_frame_avi), VideoIOError,
         r"zero\.avi: the video stream has zero frames"),
    Case("read/no-video-stream", "io", lambda env: read_video(env.no_stream_mp4), VideoIOError,
         r"nostream\.mp4: the file has no video stream"),
    Case("read/unsupported-suffix", "io", lambda env: read_video(env.file("clip.txt", b"x")), VideoIOError,
         r"clip\.txt: unsupported format '\.txt'"),
    Case("read/truncated-gif", "io", lambda env: read_video(env.file("cut.gif", b"GIF89a" + b"\x00" * 10)),
         VideoIOError, r"cut\.gif: cannot open as a video"),
    Case("read/frame-folder-without-frames", "io",
         lambda env: read_video(env.folder("noframes", {"readme.txt": b"no frames"})), VideoIOError,
         r"noframes: the folder contains no \.png/\.jpg/\.jpeg frames \(zero frames\)"),
    Case("probe/frame-folder-without-frames", "io", lambda env: probe_video(env.folder("noframes2", {})),
         VideoIOError, r"noframes2: the folder contains no .* frames"),
    Case("read/frame-not-an-image", "io", lambda env: read_video(env.folder("brokenpng", {"000.png": b"not a png"})),
         VideoIOError, r"000\.png: not a readable image"),
    Case("read/frames-of-different-sizes", "io",
         lambda env: read_video(env.folder("mixed", {"0.png": np.zeros((8, 8, 3), np.uint8),
                                                     "1.png": np.zeros((8, 9, 3), np.uint8)})),
         VideoIOError, r"mixed: frames have different sizes"),
    Case("read/more-frames-than-the-video", "io", lambda env: read_video(env.good_mp4, num_frames=99), VideoIOError,
         r"good\.mp4: asked for 99 frames .* but the video has only 12 frames"),
    Case("read/start-past-the-end", "io", lambda env: read_video(env.good_mp4, start=40), VideoIOError,
         r"good\.mp4: start=40 is past the last frame"),
    Case("read/zero-num-frames", "io", lambda env: read_video(env.good_mp4, num_frames=0), InvalidInputError,
         r"good\.mp4: num_frames must be a positive int or None, got 0"),
    Case("read/zero-size", "io", lambda env: read_video(env.good_mp4, size=0), InvalidInputError,
         r"size must be positive, got 0"),
    # --------------------------------------------------------------------------- write_video
    Case("write/rank-3", "write", lambda env: _write(env, torch.zeros(3, 8, 8)), InvalidInputError,
         r"bad\.mp4: expected 4 dims \(3,T,H,W\) or \(T,H,W,3\), got shape \(3, 8, 8\)", _nothing_written),
    Case("write/rank-5-batch", "write", lambda env: _write(env, torch.zeros(1, 3, 2, 8, 8)), InvalidInputError,
         r"bad\.mp4: expected 4 dims .* got shape \(1, 3, 2, 8, 8\)", _nothing_written),
    Case("write/4-channels", "write", lambda env: _write(env, torch.zeros(4, 2, 8, 8)), InvalidInputError,
         r"bad\.mp4: expected 3 colour channels first or last, got shape \(4, 2, 8, 8\)", _nothing_written),
    Case("write/nan", "write", lambda env: _write(env, _nan((3, 2, 8, 8))), InvalidInputError,
         r"bad\.mp4: contains NaN or infinite values", _nothing_written),
    Case("write/inf", "write", lambda env: _write(env, _inf((3, 2, 8, 8))), InvalidInputError,
         r"bad\.mp4: contains NaN or infinite values", _nothing_written),
    Case("write/int64", "write", lambda env: _write(env, torch.zeros(3, 2, 8, 8, dtype=torch.long)),
         InvalidInputError, r"bad\.mp4: dtype must be floating point in \[-1, 1\] or uint8, got torch\.int64",
         _nothing_written),
    Case("write/zero-frames", "write", lambda env: _write(env, torch.zeros(3, 0, 8, 8)), InvalidInputError,
         r"bad\.mp4: has zero frames", _nothing_written),
    Case("write/zero-height", "write", lambda env: _write(env, torch.zeros(3, 2, 0, 8)), InvalidInputError,
         r"bad\.mp4: frames are empty", _nothing_written),
    Case("write/fps-zero", "write", lambda env: _write(env, torch.zeros(3, 2, 8, 8), fps=0), InvalidInputError,
         r"bad\.mp4: fps must be a positive finite number, got 0", _nothing_written),
    Case("write/fps-inf", "write", lambda env: _write(env, torch.zeros(3, 2, 8, 8), fps=float("inf")),
         InvalidInputError, r"bad\.mp4: fps must be a positive finite number, got inf", _nothing_written),
    Case("write/unwritable-suffix", "write", lambda env: _write(env, torch.zeros(3, 2, 8, 8), name="bad.avi"),
         VideoIOError, r"bad\.avi: cannot write '\.avi'", _nothing_written),
    # --------------------------------------------------------------------------- tokenizers: encode / tokenize
    Case("vae.encode/rank-4", "vae", lambda env: env.vae.encode(env.x[0]), InvalidInputError,
         r"x must have 5 dims \(B, 3, T, H, W\), got shape \(3, 5, 16, 16\) \(add a batch axis"),
    Case("vae.encode/4-channels", "vae", lambda env: env.vae.encode(torch.zeros(1, 4, T, H, W)), InvalidInputError,
         r"x must have 3 \(RGB\) channels on axis 1, got 4"),
    Case("vae.encode/zero-frames", "vae", lambda env: env.vae.encode(torch.zeros(1, 3, 0, H, W)), InvalidInputError,
         r"x is empty \(shape \(1, 3, 0, 16, 16\)\)"),
    Case("vae.encode/nan", "vae", lambda env: env.vae.encode(_nan((1, 3, T, H, W))), InvalidInputError,
         r"x contains NaN or Inf values"),
    Case("vae.encode/inf", "vae", lambda env: env.vae.encode(_inf((1, 3, T, H, W))), InvalidInputError,
         r"x contains NaN or Inf values"),
    Case("vae.encode/out-of-range", "vae", lambda env: env.vae.encode(env.x * 3), InvalidInputError,
         r"x values must be in \[-1, 1\], got \[-[23][.\d]*, [23][.\d]*\]"),
    Case("vae.encode/float64", "vae", lambda env: env.vae.encode(env.x.double()), InvalidInputError,
         r"x has dtype torch\.float64 but the model computes in torch\.float32"),
    Case("vae.encode/uint8", "vae", lambda env: env.vae.encode(((env.x + 1) * 127).to(torch.uint8)),
         InvalidInputError, r"x must be a float tensor in \[-1, 1\], got dtype torch\.uint8 \(for uint8 frames"),
    Case("vae.encode/int32", "vae", lambda env: env.vae.encode(torch.zeros(1, 3, T, H, W, dtype=torch.int32)),
         InvalidInputError, r"x must be a float tensor .* got dtype torch\.int32"),
    Case("vae.encode/not-a-tensor", "vae", lambda env: env.vae.encode(env.x.tolist()), InvalidInputError,
         r"x must be a torch\.Tensor of shape \(B, 3, T, H, W\), got list"),
    Case("vae.encode/chunk-frames-0", "vae", lambda env: env.vae.encode(env.x, chunk_frames=0), InvalidInputError,
         r"chunk_frames must be a positive int or None, got 0"),
    Case("vae.encode/enormous", "vae", lambda env: env.vae.encode(torch.zeros(1, 1, 1, 1, 1).expand(*HUGE_VIDEO)),
         InvalidInputError, r"x: encoding 1 video\(s\) of 100000 frames of 40000x40000 " + GIB),
    Case("vq.tokenize/rank-4", "vq", lambda env: env.vq.tokenize(env.x[0]), InvalidInputError,
         r"x must have 5 dims \(B, 3, T, H, W\), got shape \(3, 5, 16, 16\)"),
    Case("vq.tokenize/2-channels", "vq", lambda env: env.vq.tokenize(torch.zeros(1, 2, T, H, W)), InvalidInputError,
         r"x must have 3 \(RGB\) channels on axis 1, got 2"),
    Case("vq.tokenize/nan", "vq", lambda env: env.vq.tokenize(_nan((1, 3, T, H, W))), InvalidInputError,
         r"x contains NaN or Inf values"),
    Case("vq.tokenize/float64", "vq", lambda env: env.vq.tokenize(env.x.double()), InvalidInputError,
         r"x has dtype torch\.float64 but the model computes in torch\.float32"),
    Case("vq.encode/enormous", "vq", lambda env: env.vq.encode(torch.zeros(1, 1, 1, 1, 1).expand(*HUGE_VIDEO)),
         InvalidInputError, r"x: encoding 1 video\(s\) of 100000 frames of 40000x40000 " + GIB),
    # --------------------------------------------------------------------------- tokenizers: decode / detokenize
    Case("vae.decode/5-channels", "vae", lambda env: env.vae.decode(torch.zeros(1, 5, 2, 2, 2)), InvalidInputError,
         r"z must have shape \(B, 4, t, h, w\), got \(1, 5, 2, 2, 2\)"),
    Case("vae.decode/rank-4", "vae", lambda env: env.vae.decode(torch.zeros(4, 2, 2, 2)), InvalidInputError,
         r"z must have shape \(B, 4, t, h, w\), got \(4, 2, 2, 2\)"),
    Case("vae.decode/inf", "vae", lambda env: env.vae.decode(_inf((1, 4, 2, 2, 2))), InvalidInputError,
         r"z contains NaN or Inf values"),
    Case("vae.decode/float64", "vae", lambda env: env.vae.decode(torch.zeros(1, 4, 2, 2, 2, dtype=torch.float64)),
         InvalidInputError, r"z has dtype torch\.float64 but the model computes in torch\.float32"),
    Case("vae.decode/int64", "vae", lambda env: env.vae.decode(torch.zeros(1, 4, 2, 2, 2, dtype=torch.long)),
         InvalidInputError, r"z must be a float tensor, got dtype torch\.int64"),
    Case("vae.decode/num-frames-too-many", "vae", lambda env: env.vae.decode(torch.zeros(1, 4, 2, 2, 2), num_frames=9),
         InvalidInputError, r"num_frames=9 is out of range for latents of shape \(1, 4, 2, 2, 2\) \(1\.\.5\)"),
    Case("vae.decode/enormous", "vae", lambda env: env.vae.decode(torch.zeros(1, 1, 1, 1, 1).expand(*HUGE_LATENT)),
         InvalidInputError, r"z: decoding 1 video\(s\) of 3997 frames of 80000x80000 " + GIB),
    Case("vae.decode/enormous-chunked-and-tiled", "vae",
         lambda env: (env.vae.enable_tiling(), env.vae.decode(torch.zeros(1, 1, 1, 1, 1).expand(*HUGE_LATENT),
                                                              chunk_frames=1)),
         InvalidInputError, r"z: decoding .* " + GIB + r".*chunk_frames and enable_tiling\(\) reduce the working "
         r"memory, not the output", lambda env: env.vae.disable_tiling()),
    Case("vq.decode/codes-with-ids-shape", "vq", lambda env: env.vq.decode(torch.zeros(1, 2, 2, 2, dtype=torch.long)),
         InvalidInputError, r"z must have shape \(B, 4, t, h, w\), got \(1, 2, 2, 2\)"),
    Case("vq.detokenize/id-above-vocab", "vq", lambda env: env.vq.detokenize(torch.full((1, 2, 2, 2), 1000)),
         InvalidInputError, r"ids must be in \[0, 1000\), got range \[1000, 1000\]"),
    Case("vq.detokenize/negative-id", "vq", lambda env: env.vq.detokenize(torch.full((1, 2, 2, 2), -1)),
         InvalidInputError, r"ids must be in \[0, 1000\), got range \[-1, -1\]"),
    Case("vq.detokenize/float-ids", "vq", lambda env: env.vq.detokenize(torch.zeros(1, 2, 2, 2)), InvalidInputError,
         r"ids must be an int64 \(or int32\) tensor, got dtype torch\.float32"),
    Case("vq.detokenize/int16-ids", "vq", lambda env: env.vq.detokenize(torch.zeros(1, 2, 2, 2, dtype=torch.int16)),
         InvalidInputError, r"ids must be an int64 \(or int32\) tensor, got dtype torch\.int16"),
    Case("vq.detokenize/rank-3", "vq", lambda env: env.vq.detokenize(torch.zeros(2, 2, 2, dtype=torch.long)),
         InvalidInputError, r"ids must be a LongTensor of shape \(B, t, h, w\), got \(2, 2, 2\)"),
    Case("vq.detokenize/enormous", "vq",
         lambda env: env.vq.detokenize(torch.zeros(1, 1, 1, 1, dtype=torch.long).expand(1, *HUGE_LATENT[2:])),
         InvalidInputError, r"ids: decoding 1 video\(s\) of 3997 frames of 80000x80000 " + GIB),
    Case("vq.stream_decoder/id-above-vocab", "vq",
         lambda env: env.vq.stream_decoder().push(torch.full((1, 1, 2, 2), 5000)), InvalidInputError,
         r"ids must be in \[0, 1000\), got range \[5000, 5000\]"),
    # --------------------------------------------------------------------------- generators: ids
    Case("masked.check_ids/id-equal-to-vocab", "generator",
         lambda env: env.masked.check_ids(torch.full((1, 2, 2, 2), 64)), InvalidInputError,
         r"ids must be in \[0, 64\), got \[64, 64\]"),
    Case("masked.check_ids/mask-id-not-allowed", "generator",
         lambda env: env.masked.check_ids(torch.full((1, 2, 2, 2), 65), "latents", allow_special=True),
         InvalidInputError, r"latents must be in \[0, 65\), got \[65, 65\]"),
    Case("masked.check_ids/float", "generator", lambda env: env.masked.check_ids(torch.zeros(1, 2, 2, 2)),
         InvalidInputError, r"ids must be a \(B, t, h, w\) long tensor, got torch\.float32 \(1, 2, 2, 2\)"),
    Case("masked.generate_ids/greedy-steps-negative", "generator",
         lambda env: generate_ids(env.masked, grid=(2, 2, 2), batch=1, greedy_steps=-1), InvalidInputError,
         r"greedy_steps must be an int >= 0, got -1"),
    Case("masked.generate_ids/greedy-steps-bool", "generator",
         lambda env: generate_ids(env.masked, grid=(2, 2, 2), batch=1, greedy_steps=True), InvalidInputError,
         r"greedy_steps must be an int >= 0, got True"),
    Case("masked.generate_ids/top-p-above-one", "generator",
         lambda env: generate_ids(env.masked, grid=(2, 2, 2), batch=1, top_p=1.5), InvalidInputError,
         r"top_p must be a number in \(0, 1\] or None, got 1\.5"),
    Case("autoregressive.init/story-prob-above-one", "generator",
         lambda env: AutoregressiveVideoTransformer(vocab_size=8, story_prob=1.5), InvalidInputError,
         r"story_prob must be a number in \[0, 1\], got 1\.5"),
    Case("flow.init/story-prob-negative", "generator",
         lambda env: FlowVideoTransformer.from_preset("tiny", in_channels=4, story_prob=-0.1), InvalidInputError,
         r"story_prob must be a number in \[0, 1\], got -0\.1"),
    Case("autoregressive.init/story-context-zero", "generator",
         lambda env: AutoregressiveVideoTransformer(vocab_size=8, story_context=0), InvalidInputError,
         r"story_context must be"),
    Case("autoregressive.check_ids/negative", "generator",
         lambda env: env.autoregressive.check_ids(torch.full((1, 2, 2, 2), -3)), InvalidInputError,
         r"ids must be in \[0, 64\), got \[-3, -3\]"),
    Case("autoregressive.check_ids/rank-3", "generator",
         lambda env: env.autoregressive.check_ids(torch.zeros(2, 2, 2, dtype=torch.long)), InvalidInputError,
         r"ids must be a \(B, t, h, w\) long tensor, got torch\.int64 \(2, 2, 2\)"),
    Case("masked.init/patch-size-zero", "generator",
         lambda env: MaskedVideoTransformer.from_preset("tiny", vocab_size=64, patch_size=(1, 0, 2)), InvalidInputError,
         r"patch_size must be three ints >= 1 \(ids per backbone token\), got \(1, 0, 2\)"),
    Case("autoregressive.init/patch-across-frames", "generator",
         lambda env: AutoregressiveVideoTransformer.from_preset("tiny", vocab_size=64, patch_size=(2, 2, 2)),
         InvalidInputError, r"patch_size must be \(1, ph, pw\) .* got \(2, 2, 2\)"),
    Case("autoregressive.generate/grid-not-a-multiple-of-the-patch", "generator",
         lambda env: generate_tokens(env.autoregressive_patched, grid=(2, 4, 3), batch=1), InvalidInputError,
         r"id grid \(2, 4, 3\) is not a multiple of this model's patch_size \(1, 2, 2\)"),
    Case("autoregressive.generate/compile-not-a-mode", "generator",
         lambda env: generate_tokens(env.autoregressive, grid=(2, 4, 4), batch=1, compile="graphs"), InvalidInputError,
         r"compile must be False, True or 'cuda_graph', got 'graphs'"),
    Case("autoregressive.generate/cuda-graph-without-cache", "generator",
         lambda env: generate_tokens(env.autoregressive, grid=(2, 4, 4), batch=1, compile="cuda_graph",
                                     use_cache=False), InvalidInputError, r"it needs use_cache=True"),
    Case("autoregressive.generate/cuda-graph-on-cpu", "generator",
         lambda env: generate_tokens(env.autoregressive, grid=(2, 4, 4), batch=1, compile="cuda_graph"),
         UnsupportedError, r"compile='cuda_graph' replays the decode step on a CUDA device; the model is on cpu"),
    # --------------------------------------------------------------------------- metrics
    Case("fvd.preprocess/rank-4", "metrics", lambda env: preprocess_for_i3d(env.x[0]), InvalidInputError,
         r"videos must have shape \(N, 3, T, H, W\), got \(3, 5, 16, 16\)"),
    Case("fvd.preprocess/1-channel", "metrics", lambda env: preprocess_for_i3d(torch.zeros(1, 1, T, H, W)),
         InvalidInputError, r"videos must have shape \(N, 3, T, H, W\), got \(1, 1, 5, 16, 16\)"),
    Case("fvd.preprocess/nan", "metrics", lambda env: preprocess_for_i3d(_nan((1, 3, T, H, W))), InvalidInputError,
         r"videos contains NaN or infinite values"),
    Case("fvd.preprocess/int32", "metrics",
         lambda env: preprocess_for_i3d(torch.zeros(1, 3, T, H, W, dtype=torch.int32)), InvalidInputError,
         r"videos must be float in \[-1, 1\] or uint8 in \[0, 255\], got dtype torch\.int32"),
    Case("fvd.preprocess/float-0-255", "metrics", lambda env: preprocess_for_i3d((env.x + 1) * 127.5),
         InvalidInputError, r"videos must be in \[-1, 1\] \(or uint8\), got values in \[0\.\d+, 25\d\.\d+\]"),
    Case("fvd.features/empty-batch", "metrics", lambda env: env.fvd.features(torch.zeros(0, 3, T, H, W)),
         InvalidInputError, r"FVD input must be a non-empty batch tensor \(N, 3, \.\.\.\), got \(0, 3, 5, 16, 16\)"),
    Case("fvd/channels-last-not-a-bool", "metrics", lambda env: FrechetVideoDistance(channels_last="no"),
         InvalidInputError, r"channels_last must be True \(the fast default\) or False \(the reference layout\), "
                            r"got 'no'"),
    Case("fid/channels-last-not-a-bool", "metrics", lambda env: FrechetInceptionDistance(channels_last=1),
         InvalidInputError, r"channels_last must be True \(the fast default\) or False \(the reference layout\), "
                            r"got 1"),
    Case("fid.preprocess/video-instead-of-images", "metrics", lambda env: preprocess_for_inception(env.x),
         InvalidInputError, r"images must have shape \(N, 3, H, W\), got \(1, 3, 5, 16, 16\)"),
    Case("fid.preprocess/inf", "metrics", lambda env: preprocess_for_inception(_inf((2, 3, H, W))),
         InvalidInputError, r"images contains NaN or infinite values"),
    Case("fid.features/rank-3", "metrics",
         lambda env: FrechetInceptionDistance(progress=False).features(env.x[0, :, 0]),
         InvalidInputError, r"FID input must be images \(N, 3, H, W\) or videos \(N, 3, T, H, W\), got \(3, 16, 16\)"),
    Case("psnr/rank-4", "metrics", lambda env: psnr(env.x[0], env.x[0]), InvalidInputError,
         r"x must have shape \(B, 3, T, H, W\), got \(3, 5, 16, 16\)"),
    Case("psnr/shape-mismatch", "metrics", lambda env: psnr(env.x, env.x[:, :, :2]), InvalidInputError,
         r"x and y must have the same shape, got \(1, 3, 5, 16, 16\) and \(1, 3, 2, 16, 16\)"),
    Case("psnr/int64", "metrics", lambda env: psnr(env.x.long(), env.x.long()), InvalidInputError,
         r"x must be a float tensor in \[-1, 1\], got dtype torch\.int64"),
    Case("psnr/nan", "metrics", lambda env: psnr(env.x, _nan((1, 3, T, H, W))), InvalidInputError,
         r"y contains NaN or infinite values"),
    Case("ssim/frames-smaller-than-window", "metrics", lambda env: ssim(env.x[..., :8, :8], env.x[..., :8, :8]),
         InvalidInputError, r"frames must be at least 11x11 pixels, got \(8, 8\)"),
    Case("ssim/4-channels", "metrics", lambda env: ssim(torch.zeros(1, 4, T, H, W), torch.zeros(1, 4, T, H, W)),
         InvalidInputError, r"x must have shape \(B, 3, T, H, W\), got \(1, 4, 5, 16, 16\)"),
    Case("temporal_flicker/inf", "metrics", lambda env: temporal_flicker(_inf((1, 3, T, H, W)), env.x),
         InvalidInputError, r"x contains NaN or infinite values"),
    Case("feature-stats/wrong-dim", "metrics", lambda env: FeatureStats(400).update(np.zeros((2, 2048))),
         InvalidInputError, r"features must have shape \(N, 400\), got \(2, 2048\)"),
    Case("frechet/nan-mean", "metrics",
         lambda env: frechet_distance(np.full(3, np.nan), np.eye(3), np.zeros(3), np.eye(3)), InvalidInputError,
         r"first distribution: statistics contain NaN or infinite values"),
    Case("fvd.load_real_stats/other-protocol", "fvd",
         lambda env: env.fvd.load_real_stats(env.stats("cleanfid.npz", metric="FVD", feature_network=I3D_ID,
                                                       preprocessing="PIL bicubic resize with antialiasing")),
         InvalidInputError, r"cleanfid\.npz was computed under a different protocol: \{'preprocessing'"),
    Case("fvd.load_real_stats/fid-stats", "fvd",
         lambda env: env.fvd.load_real_stats(env.stats("fid.npz", dim=2048, metric="FID")), InvalidInputError,
         r"fid\.npz holds 2048-d statistics, FVD uses 400-d features"),
    Case("fvd.load_real_stats/not-a-stats-file", "fvd",
         lambda env: env.fvd.load_real_stats(env.file("stats.npz", b"not a zip")), InvalidInputError,
         r"stats\.npz is not a vidgen statistics file"),
    # --------------------------------------------------------------------------- saved tokenizers (config vs weights)
    Case("load_tokenizer/config-edited-to-another-width", "load",
         lambda env: load_tokenizer(env.broken_vae("vae_width", lambda p: _edit_json(p / "config.json",
                                                                                     widths=[16, 32, 32]))),
         ConfigError, r"vae_width/config\.json does not match the weights in .*vae_width: .*expected shape"),
    Case("load_tokenizer/config-edited-latent-channels", "load",
         lambda env: CausalVAE.from_pretrained(env.broken_vae("vae_latent", lambda p: _edit_json(p / "config.json",
                                                                                                 latent_channels=8))),
         ConfigError, r"vae_latent/config\.json does not match the weights"),
    Case("load_tokenizer/config-invalid-value", "load",
         lambda env: load_tokenizer(env.broken_vae("vae_tc", lambda p: _edit_json(p / "config.json",
                                                                                  temporal_compression=3))),
         ConfigError, r"vae_tc/config\.json: temporal_compression must be 1, 2, 4 or 8, got 3"),
    Case("load_tokenizer/config-not-json", "load",
         lambda env: load_tokenizer(env.broken_vae("vae_json", lambda p: (p / "config.json").write_text("{oops"))),
         ConfigError, r"vae_json/config\.json: not valid JSON"),
    Case("load_tokenizer/config-names-no-tokenizer", "load",
         lambda env: load_tokenizer(env.broken_vae("vae_cls", lambda p: _edit_json(p / "config.json",
                                                                                   _class_name="UNet2DModel"))),
         ConfigError, r"vae_cls/config\.json: _class_name 'UNet2DModel' is not a vidgen tokenizer"),
    Case("load_tokenizer/vae-folder-as-vqvae", "load", lambda env: CausalVQVAE.from_pretrained(env.vae_folder),
         ConfigError, r"vae/config\.json: describes a CausalVAE, not a CausalVQVAE"),
    Case("load_tokenizer/weights-missing-a-tensor", "load",
         lambda env: load_tokenizer(env.broken_vae("vae_drop", _drop_tensor)),
         MissingWeightsError, r"vae_drop: the weight file does not match .*config\.json: 1 tensor\(s\) of the model "
         r"are missing \['decoder\.head\.bias'\]"),
    Case("load_tokenizer/weights-with-an-extra-tensor", "load",
         lambda env: load_tokenizer(env.broken_vae("vae_extra", _extra_tensor)), MissingWeightsError,
         r"vae_extra: the weight file does not match .* 1 in the file are unexpected \['decoder\.extra\.weight'\]"),
    Case("load_tokenizer/truncated-weights", "load",
         lambda env: load_tokenizer(env.broken_vae("vae_cut", lambda p: _truncate(
             p / "diffusion_pytorch_model.safetensors"))),
         MissingWeightsError,
         r"vae_cut: cannot load the CausalVAE weights: .*vae_cut/diffusion_pytorch_model\.safetensors"),
    Case("load_tokenizer/no-config", "load", lambda env: load_tokenizer(env.path("nothing_here")), MissingWeightsError,
         r"nothing_here: no config\.json here"),
    Case("load_tokenizer/diffusers-image-vae-folder", "load", lambda env: load_tokenizer(env.image_vae_folder),
         ConfigError, r"img/config\.json: _class_name 'AutoencoderKL' is not a vidgen tokenizer .* nor a supported "
         r"diffusers video VAE \(AutoencoderKLCogVideoX, AutoencoderKLWan"),
    # --------------------------------------------------------------------------- diffusers video VAEs (the adapter)
    Case("DiffusersVideoVAE/image-vae", "diffusers_vae",
         lambda env: DiffusersVideoVAE(AutoencoderKL(block_out_channels=(8,), norm_num_groups=4)), InvalidInputError,
         r"vae: diffusers\..*\.AutoencoderKL is not a supported diffusers video VAE .*an image VAE"),
    Case("diffusers_vae.decode/4-channels", "diffusers_vae",
         lambda env: env.diffusers_vae.decode(torch.zeros(1, 4, 2, 2, 2)), InvalidInputError,
         r"z must have shape \(B, 16, t, h, w\), got \(1, 4, 2, 2, 2\)"),
    Case("diffusers_vae.stream_decoder", "diffusers_vae", lambda env: env.diffusers_vae.stream_decoder(16, 16),
         UnsupportedError, r"AutoencoderKLWan: streaming decode .* needs a vidgen causal tokenizer"),
    # --------------------------------------------------------------------------- pickles in place of weights
    Case("load_tokenizer/pickle-named-safetensors", "load",
         lambda env: load_tokenizer(env.broken_vae("vae_pickle", lambda p: env.payload(
             "vae_pickle/diffusion_pytorch_model.safetensors"))),
         MissingWeightsError, r"vae_pickle: cannot load the CausalVAE weights: .*diffusion_pytorch_model\.safetensors",
         lambda env: env.no_payload_ran()),
    Case("load_tokenizer/pickle-as-bin-fallback", "load",
         lambda env: load_tokenizer(env.broken_vae("vae_bin", lambda p: (
             (p / "diffusion_pytorch_model.safetensors").unlink(),
             env.payload("vae_bin/diffusion_pytorch_model.bin", torch.save)))),
         MissingWeightsError, r"vae_bin: cannot load the CausalVAE weights: .*no file named "
         r"diffusion_pytorch_model\.safetensors", lambda env: env.no_payload_ran()),
    Case("load_i3d/pickle-ckpt", "fvd", lambda env: load_i3d(env.payload("evil_i3d.ckpt")), UnsafeWeightsError,
         r"evil_i3d\.ckpt: refusing to load posix\.system", lambda env: env.no_payload_ran()),
    Case("load_i3d/pickle-pt", "fvd", lambda env: load_i3d(env.payload("evil_i3d.pt", torch.save)),
         MissingWeightsError, r"evil_i3d\.pt is not a readable \.pt state dict: Weights only load failed",
         lambda env: env.no_payload_ran()),
    Case("load_inception/pickle-pt", "metrics",
         lambda env: load_inception(env.payload("evil_inception.pt", torch.save)),
         MissingWeightsError, r"evil_inception\.pt is not a TorchScript Inception network",
         lambda env: env.no_payload_ran()),
    Case("load_pipeline/pickle-transformer-weights", "pipeline_folder",
         lambda env: load_pipeline(env.broken_pipe("pipe_pickle", lambda p: env.payload(
             "pipe_pickle/transformer/diffusion_pytorch_model.safetensors"))),
         MissingWeightsError, r"pipe_pickle/transformer: cannot load the FlowVideoTransformer weights",
         lambda env: env.no_payload_ran()),
    # --------------------------------------------------------------------------- pipeline folders
    Case("load_pipeline/no-model-index", "pipeline_folder", lambda env: load_pipeline(env.path("vae")),
         MissingWeightsError, r"vae: no model_index\.json"),
    Case("load_pipeline/missing-component-folder", "pipeline_folder",
         lambda env: load_pipeline(env.broken_pipe("pipe_novae", lambda p: shutil.rmtree(p / "vae"))),
         MissingWeightsError, r"pipe_novae: component 'vae' \(CausalVAE\) is listed in model_index\.json but its "
         r"folder .*pipe_novae/vae is missing"),
    Case("load_pipeline/wrong-kind-component", "pipeline_folder",
         lambda env: load_pipeline(env.broken_pipe("pipe_kind", lambda p: _edit_json(
             p / "model_index.json", vae=["vidgen.tokenizers.vqvae", "CausalVQVAE"]))),
         ConfigError, r"pipe_kind/vae/config\.json: describes a CausalVAE, not a CausalVQVAE"),
    Case("load_pipeline/generator-as-tokenizer", "pipeline_folder",
         lambda env: load_pipeline(env.broken_pipe("pipe_gen", lambda p: _edit_json(
             p / "model_index.json", vae=["vidgen.generators.masked", "MaskedVideoTransformer"]))),
         ConfigError, r"pipe_gen/vae/config\.json: describes a CausalVAE, not a MaskedVideoTransformer"),
    Case("load_pipeline/unknown-class", "pipeline_folder",
         lambda env: load_pipeline(env.broken_pipe("pipe_nocls", lambda p: _edit_json(
             p / "model_index.json", vae=["vidgen.tokenizers.vae", "CausalNope"]))),
         ConfigError, r"pipe_nocls/model_index\.json: component 'vae' names class 'CausalNope', which "
         r"vidgen\.tokenizers\.vae does not have"),
    Case("load_pipeline/unknown-module", "pipeline_folder",
         lambda env: load_pipeline(env.broken_pipe("pipe_nomod", lambda p: _edit_json(
             p / "model_index.json", vae=["vidgen.tokenizers.nope", "CausalVAE"]))),
         ConfigError, r"pipe_nomod/model_index\.json: component 'vae' names module 'vidgen\.tokenizers\.nope'"),
    Case("load_pipeline/not-a-vidgen-pipeline", "pipeline_folder",
         lambda env: load_pipeline(env.broken_pipe("pipe_sd", lambda p: _edit_json(
             p / "model_index.json", _class_name="StableDiffusionPipeline"))),
         ConfigError, r"pipe_sd/model_index\.json: _class_name 'StableDiffusionPipeline' is not a supported video "
                      r"pipeline \(vidgen's .* or diffusers' \['CogVideoXImageToVideoPipeline', 'CogVideoXPipeline', .*"
                      r"'MochiPipeline', 'WanImageToVideoPipeline', 'WanPipeline', 'WanVideoToVideoPipeline'\]\)"),
    Case("load_pipeline/model-index-not-json", "pipeline_folder",
         lambda env: load_pipeline(env.broken_pipe("pipe_json", lambda p: (p / "model_index.json").write_text("{"))),
         ConfigError, r"pipe_json/model_index\.json: not valid JSON"),
    Case("load_pipeline/transformer-config-edited", "pipeline_folder",
         lambda env: load_pipeline(env.broken_pipe("pipe_dim", lambda p: _edit_json(
             p / "transformer" / "config.json", architecture__dim=128))),
         ConfigError, r"pipe_dim/transformer/config\.json does not match the weights"),
    Case("load_pipeline/scheduler-of-another-kind", "pipeline_folder",
         lambda env: load_pipeline(env.broken_pipe("pipe_ddim", lambda p: _edit_json(
             p / "model_index.json", scheduler=["diffusers", "DDIMScheduler"]))),
         InvalidInputError, r"scheduler: a flow-matching model needs a FlowMatch\* scheduler, got DDIMScheduler"),
    Case("autoregressive_pipeline/model-offload", "pipeline_folder",
         lambda env: load_pipeline("pretrained/shapes-autoregressive", dtype="fp32").enable_model_cpu_offload(),
         UnsupportedError, r"AutoregressiveVideoPipeline: model offload is not supported .* pipe\.to\('cuda'\)"),
    # --------------------------------------------------------------------------- sampling_config.json
    Case("sampling_config/unknown-key", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_key", '{"guidance": 3.0}'), ConfigError,
         r"sc_key/sampling_config\.json: key 'guidance' is not a keyword argument of FlowVideoPipeline\.__call__; "
         r"remove it \(the settings are \['context_frames', 'guidance_interval', 'guidance_scale', "
         r"'num_inference_steps'\]\)"),
    Case("sampling_config/input-not-setting", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_input", '{"prompt": "a red circle"}'), ConfigError,
         r"sc_input/sampling_config\.json: key 'prompt' is an input of FlowVideoPipeline\.__call__, not a sampling "
         r"setting; remove it"),
    Case("sampling_config/setting-of-another-pipeline", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_topk", '{"top_k": 1}'), ConfigError,
         r"sc_topk/sampling_config\.json: key 'top_k' is not a keyword argument of FlowVideoPipeline\.__call__"),
    Case("sampling_config/steps-as-string", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_str", '{"num_inference_steps": "25"}'), ConfigError,
         r"sc_str/sampling_config\.json: key 'num_inference_steps': num_inference_steps must be an int >= 1, got '25'; "
         r"correct the value in the file or remove the key \(the class default is 25\)"),
    Case("sampling_config/negative-context-frames", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_ctx", '{"context_frames": -1}'), ConfigError,
         r"sc_ctx/sampling_config\.json: key 'context_frames': context_frames must be a whole number >= 0, got -1; "
         r"correct the value in the file or remove the key \(the class default is 1\)"),
    Case("sampling_config/assigned-negative-guidance", "pipeline",
         lambda env: setattr(env.pipe, "sampling_config", {"guidance_scale": -2.0}), ConfigError,
         r"sampling_config: key 'guidance_scale': guidance_scale must be a number >= 0, got -2\.0; correct the value "
         r"given or remove the key"),
    Case("sampling_config/fractional-context-frames", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_ctx2", '{"context_frames": 1.5}'), ConfigError,
         r"sc_ctx2/sampling_config\.json: key 'context_frames': context_frames must be a whole number >= 0, got 1\.5"),
    Case("sampling_config/negative-guidance", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_neg", '{"guidance_scale": -3.0}'), ConfigError,
         r"sc_neg/sampling_config\.json: key 'guidance_scale': guidance_scale must be a number >= 0, got -3\.0; "
         r"correct the value"),
    Case("sampling_config/guidance-interval-above-one", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_gi", '{"guidance_interval": [0.3, 1.5]}'), ConfigError,
         r"sc_gi/sampling_config\.json: key 'guidance_interval': guidance_interval must be None or a \(low, high\) "
         r"pair with 0 <= low < high <= 1 .*got \[0\.3, 1\.5\]"),
    Case("sampling_config/steps-float", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_float", '{"num_inference_steps": 12.5}'), ConfigError,
         r"sc_float/sampling_config\.json: key 'num_inference_steps': num_inference_steps must be an int >= 1"),
    Case("sampling_config/not-json", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_json", '{"guidance_scale": 3.0,}'), ConfigError,
         r"sc_json/sampling_config\.json: not valid JSON .*; write a JSON object"),
    Case("sampling_config/a-list", "pipeline_folder",
         lambda env: _load_with_sampling_config(env, "sc_list", '[["guidance_scale", 3.0]]'), ConfigError,
         r"sc_list/sampling_config\.json: expected a JSON object of sampling settings, got list"),
    Case("sampling_config/assigned-bad-value", "pipeline",
         lambda env: setattr(env.pipe, "sampling_config", {"guidance_scale": float("nan")}), ConfigError,
         r"sampling_config: key 'guidance_scale': guidance_scale must be a number >= 0, got nan"),
    Case("load_pipeline/fp16-on-cpu", "pipeline_folder", lambda env: load_pipeline(env.pipe_folder, dtype="fp16"),
         ConfigError, r"dtype='fp16' is not a precision; choose one of \('auto', 'fp32', 'bf16'\) \(fp16 is GPU-only"),
    Case("load_pipeline/unknown-dtype", "pipeline_folder", lambda env: load_pipeline(env.pipe_folder, dtype=torch.int8),
         ConfigError, r"dtype=torch\.int8 is not supported; choose one of"),
    Case("load_pipeline/dtype-dict-bad-value", "pipeline_folder",
         lambda env: FlowVideoPipeline.from_pretrained(env.pipe_folder, dtype={"vae": "half", "default": "fp32"}),
         ConfigError, r"dtype='half' is not a precision"),
    Case("load_pipeline/dtype-dict-bad-key", "pipeline_folder",
         lambda env: FlowVideoPipeline.from_pretrained(env.pipe_folder, dtype={0: torch.float32}), InvalidInputError,
         r"dtype: a dict maps component names \(and 'default'\) to dtypes"),
    Case("sampling_config/bad-value-at-construction", "generator", lambda env: MaskedSamplingConfig(top_k=0),
         InvalidInputError, r"top_k must be an int >= 1 or None, got 0"),
    Case("sampling_config/replace-unknown-setting", "generator",
         lambda env: FlowSamplingConfig().replace(guidance=2.0), InvalidInputError,
         r"guidance: not a sampling setting of FlowSamplingConfig \(the settings are num_inference_steps, "),
    Case("masked.generate_ids/config-of-another-generator", "generator",
         lambda env: generate_ids(env.masked, None, FlowSamplingConfig(), grid=(2, 2, 2), batch=1), InvalidInputError,
         r"config must be a MaskedSamplingConfig, got FlowSamplingConfig"),
    Case("load_pipeline/dtype-and-torch-dtype", "pipeline_folder",
         lambda env: load_pipeline(env.pipe_folder, dtype="fp32", torch_dtype=torch.bfloat16), InvalidInputError,
         r"dtype='fp32' and torch_dtype=torch\.bfloat16 disagree \(torch_dtype is diffusers' spelling of dtype\); "
         r"pass one of them"),
    Case("load_pipeline/diffusers-dtype-and-torch-dtype", "diffusers_pipeline",
         lambda env: load_pipeline(env.path("wan"), dtype=torch.float32, torch_dtype="bf16"), InvalidInputError,
         r"dtype=torch\.float32 and torch_dtype='bf16' disagree"),
    Case("load_pipeline/quantize-a-component-the-folder-lacks", "diffusers_pipeline",
         lambda env: load_pipeline(env.path("wan"), quantization_config=_quantized(["transformer_x"])), ConfigError,
         r"wan: quantization_config names component\(s\) \['transformer_x'\] that the folder does not have; its model "
         r"components are \['text_encoder', 'transformer', 'vae'\]"),
    Case("load_pipeline/quantize-a-vidgen-component-the-folder-lacks", "pipeline_folder",
         lambda env: load_pipeline(env.pipe_folder, quantization_config=_quantized(["generator"])), ConfigError,
         r"pipe: quantization_config names component\(s\) \['generator'\] that the folder does not have; its model "
         r"components are \['transformer', 'vae'\]"),
    Case("load_pipeline/quantization-config-of-one-model", "diffusers_pipeline",
         lambda env: load_pipeline(env.path("wan"), quantization_config=_quantized(["transformer"]).quant_mapping[
             "transformer"]), InvalidInputError,
         r"quantization_config must be a diffusers PipelineQuantizationConfig, got TorchAoConfig"),
    Case("load_pipeline/repo-id-not-in-the-cache", "pipeline_folder",
         lambda env: load_pipeline("no-org/No-Such-Model-Diffusers", cache_dir=env.path("empty_hub")),
         MissingWeightsError, r"no-org/No-Such-Model-Diffusers: no such folder, and not in the local Hugging Face "
         r"cache .*empty_hub .*`huggingface-cli download no-org/No-Such-Model-Diffusers`.*HF_HUB_CACHE \(or HF_HOME\)"),
    Case("load_pipeline/diffusers-renamed-weight", "diffusers_pipeline",
         lambda env: load_pipeline(env.broken_wan("wan_renamed", lambda p: _rename_weight(
             p / "transformer", "blocks.0.attn1.to_q.weight", "blocks.0.attn1.to_qq.weight"))),
         MissingWeightsError, r"wan_renamed/transformer: the weights do not match the WanTransformer3DModel its "
         r"config\.json builds: 1 tensor\(s\) of the model are missing \['blocks\.0\.attn1\.to_q\.weight'\], 1 in "
         r"the file are unexpected \['blocks\.0\.attn1\.to_qq\.weight'\]"),
    Case("load_pipeline/diffusers-unfused-adapter", "diffusers_pipeline",
         lambda env: load_pipeline(env.broken_wan("wan_peft", _save_with_adapter)), MissingWeightsError,
         r"wan_peft/transformer: the weights do not match .* missing \['blocks\.0\.attn1\.to_k\.bias', .* "
         r"unexpected \['blocks\.0\.attn1\.to_k\.base_layer\.bias', .*the unexpected names are a peft LoRA "
         r"adapter's: the folder was saved with an adapter loaded and not fused"),
    # --------------------------------------------------------------------------- configs: unknown names and values
    Case("load_config/unknown-precision", "config", lambda env: load_config(overrides=["precision=half"]), ConfigError,
         r"precision='half' is not a precision; choose one of"),
    Case("load_config/precision-disagrees-with-mixed-precision", "config",
         lambda env: load_config(overrides=["precision=bf16", "mixed_precision=no"]), ConfigError,
         r"precision='bf16' and mixed_precision=False disagree; set only precision"),
    Case("load_config/compile-not-a-bool", "config", lambda env: load_config(overrides=["compile=yes please"]),
         ConfigError, r"compile must be true or false, got 'yes please'"),
    Case("load_config/zoom-aug-not-a-probability", "config", lambda env: load_config(overrides=["data.zoom_aug=2"]),
         ConfigError, r"data\.zoom_aug is a probability in \[0, 1\], got 2"),
    Case("load_config/render-workers-not-a-count", "config",
         lambda env: load_config(overrides=["data.render_workers=-1"]), ConfigError,
         r"data\.render_workers is a number of processes \(0 renders each clip on first use\), got -1"),
    Case("load_config/schedule-ends-before-the-run", "config",
         lambda env: load_config(overrides=["steps=2000", "optim.schedule_steps=1000"]), ConfigError,
         r"optim\.schedule_steps=1000 is below steps=2000: the schedule would end before the run"),
    Case("joint_batch/zoom-aug-without-a-small-enough-crop", "config",
         lambda env: joint_batch(list(torch.zeros(2, 3, 2, 16, 16)), EpochSampler(2, 0), 2, 0, 12,
                                 RowGenerator(torch.Generator().manual_seed(0)), zoom=0.5), ConfigError,
         r"data\.zoom_aug needs data\.crop \(got 12\) of at most half the clips' size \(16x16\)"),
    Case("sampler/fewer-clips-than-processes", "config", lambda env: EpochSampler(1, 0, rank=0, world=2), ConfigError,
         r"1 clips for 2 data-parallel processes: each process needs at least one clip"),
    Case("load_config/bool-not-a-bool", "config", lambda env: load_config(overrides=["deterministic=maybe"]),
         ConfigError, r"deterministic must be true or false, got 'maybe'"),
    Case("load_config/nested-bool-not-a-bool", "config",
         lambda env: load_config(overrides=["loss.adaptive_gan=maybe"]), ConfigError,
         r"loss\.adaptive_gan must be true or false, got 'maybe'"),
    Case("load_config/sample-prompts-not-a-list", "config",
         lambda env: load_config(overrides=["sample.prompts=hello"], schema=GeneratorTrainConfig), ConfigError,
         r"sample\.prompts must be a list \(\[a, b\] in YAML\), got 'hello'"),
    Case("load_config/fsq-levels-not-numbers", "config",
         lambda env: build_model(load_config(overrides=["model.kind=vqvae",
                                                        "model.overrides={quantizer: fsq, fsq_levels: abc}"]).model),
         ConfigError, r"fsq_levels must be a list of integers >= 2 \(e\.g\. \[8, 5, 5, 5\]\), got 'abc'"),
    Case("train/unknown-perceptual-kind", "config",
         lambda env: __import__("vidgen.training", fromlist=["train"]).train(
             load_config(None, TINY_RUN + [f"run_dir={env.path('perc-kind')}", "loss.perceptual=0.1",
                                           "loss.perceptual_kind=lpipz"])), ConfigError,
         r"loss\.perceptual_kind='lpipz': kind must be 'auto', 'lpips' or 'stlpips', got 'lpipz'; or 'none'"),
    Case("train/folder-without-root", "config",
         lambda env: __import__("vidgen.training", fromlist=["train"]).train(
             load_config(None, TINY_RUN + [f"run_dir={env.path('no-root')}", "data.dataset=folder"])), ConfigError,
         r"data\.dataset=folder reads the videos under data\.root, which is not set: give data\.root=FOLDER"),
    Case("train/run-dir-is-a-file", "config",
         lambda env: __import__("vidgen.training", fromlist=["train"]).train(
             load_config(None, TINY_RUN + [f"run_dir={env.file('run-dir-file.txt', b'x')}"])), InvalidInputError,
         r"run_dir .*run-dir-file\.txt: .*run-dir-file\.txt is a file, not a folder; give a folder path"),
    Case("load_config/steps-below-one", "config", lambda env: load_config(overrides=["steps=-5"]), ConfigError,
         r"steps must be a whole number >= 1, got -5; set it in the config file or with steps=VALUE"),
    Case("train/negative-steps-write-nothing", "config",
         lambda env: __import__("vidgen.training", fromlist=["train"]).train(
             load_config(None, TINY_RUN + [f"run_dir={env.path('neg-steps')}", "steps=-5"])), ConfigError,
         r"steps must be a whole number >= 1, got -5",
         lambda env: not env.path("neg-steps").exists() or pytest.fail("a refused run wrote its run_dir")),
    Case("load_config/learning-rate-zero", "config", lambda env: load_config(overrides=["optim.lr=0"]), ConfigError,
         r"optim\.lr must be a number > 0, got 0"),
    Case("load_config/negative-loss-weight", "config", lambda env: load_config(overrides=["loss.perceptual=-0.1"]),
         ConfigError, r"loss\.perceptual must be a number >= 0, got -0\.1"),
    Case("load_config/ema-decay-one", "config", lambda env: load_config(overrides=["ema_decay=1"]), ConfigError,
         r"ema_decay must be a number >= 0 and < 1, got 1"),
    Case("load_config/log-every-zero", "config", lambda env: load_config(overrides=["log_every=0"]), ConfigError,
         r"log_every must be a whole number >= 1, got 0"),
    Case("load_config/fractional-frames", "config", lambda env: load_config(overrides=["data.num_frames=8.5"]),
         ConfigError, r"data\.num_frames must be a whole number >= 1, got 8\.5"),
    Case("load_config/nan-grad-clip", "config", lambda env: load_config(overrides=["optim.grad_clip=.nan"]),
         ConfigError, r"optim\.grad_clip must be a number > 0, got nan"),
    Case("load_config/adam-beta-one", "config", lambda env: load_config(overrides=["optim.betas=[0.9, 1.0]"]),
         ConfigError, r"optim\.betas must be two numbers in \[0, 1\) \(Adam's decay rates\), got \[0\.9, 1\.0\]"),
    Case("load_config/no-clips-per-step", "config",
         lambda env: load_config(overrides=["data.video_batch=0", "data.image_batch=0"]), ConfigError,
         r"data\.video_batch and data\.image_batch are both 0: a step would see no clip"),
    Case("load_config/generator-batch-zero", "config",
         lambda env: load_config(overrides=["data.batch=0"], schema=GeneratorTrainConfig), ConfigError,
         r"data\.batch must be a whole number >= 1, got 0"),
    Case("load_config/routing-ratio-one", "config",
         lambda env: load_config(overrides=["routing.ratio=1"], schema=GeneratorTrainConfig), ConfigError,
         r"routing\.ratio must be a number >= 0 and < 1 .*got 1"),
    Case("load_config/routing-start-not-before-end", "config",
         lambda env: load_config(overrides=["routing.ratio=0.5", "routing.start=4", "routing.end=2"],
                                 schema=GeneratorTrainConfig), ConfigError,
         r"routing\.start=4 must be below routing\.end=2: the routed span is blocks \[start, end\)"),
    Case("routing/windowed-layout", "generator", lambda env: _routing_check(layout="window", depth=4),
         UnsupportedError, r"routing: block 1 .* layout='window' .*needs full attention .*set model\.overrides\.layout=full, or "
         r"routing\.ratio=0"),
    Case("routing/span-outside-the-blocks", "generator", lambda env: _routing_check(start=3, end=9), ConfigError,
         r"routing\.start=3, routing\.end=9: blocks \[3, 9\) are not a non-empty span of this model's 2 blocks"),
    Case("load_config/context-swap-above-one", "config",
         lambda env: load_config(overrides=["context_swap=1.5"], schema=GeneratorTrainConfig), ConfigError,
         r"context_swap must be a number >= 0 and <= 1, got 1\.5"),
    Case("load_config/rollout-switch-above-one", "config",
         lambda env: load_config(overrides=["distill.rollout_switch=2"],
                                 schema=__import__("vidgen.distillation.task", fromlist=["x"]).DistillTrainConfig),
         ConfigError, r"distill\.rollout_switch must be a number >= 0 and <= 1, got 2"),
    Case("load_config/unknown-optimizer", "config",
         lambda env: load_config(overrides=["optim.optimizer=sgd"], schema=GeneratorTrainConfig), ConfigError,
         r"optim\.optimizer must be one of \('adamw', 'muon'\), got 'sgd'"),
    Case("train_generator/video-tokenizer-not-trained-yet", "config",
         lambda env: __import__("vidgen.training", fromlist=["train_generator"]).train_generator(
             load_config(overrides=[f"run_dir={env.path('gen-no-tok')}", f"video_tokenizer={env.path('no-tok')}"],
                         schema=GeneratorTrainConfig)), MissingWeightsError,
         r"video_tokenizer=.*no-tok: .*; train the tokenizer stage that writes it first, or set video_tokenizer=PATH"),
    Case("train/muon-for-a-tokenizer", "config",
         lambda env: __import__("vidgen.training", fromlist=["x"]).train(
             load_config(None, TINY_RUN + [f"run_dir={env.path('muon-tok')}", "optim.optimizer=muon"])),
         UnsupportedError, r"optim\.optimizer=muon: TokenizerTask does not train with Muon .*set optim\.optimizer=adamw"),
    Case("load_config/repa-weight-negative", "config",
         lambda env: load_config(overrides=["repa.weight=-0.5"], schema=GeneratorTrainConfig), ConfigError,
         r"repa\.weight must be a number >= 0, got -0\.5; set it in the config file or with repa\.weight=VALUE"),
    Case("load_config/repa-encoder-is-an-evaluation-network", "config",
         lambda env: load_config(overrides=["repa.encoder=inception"], schema=GeneratorTrainConfig), ConfigError,
         r"repa\.encoder='inception' is FID's feature network, used to evaluate the generators; choose one of "
         r"\['stlpips-alex', 'stlpips-vgg'\]"),
    Case("load_config/repa-encoder-unknown", "config",
         lambda env: load_config(overrides=["repa.encoder=dinov2"], schema=GeneratorTrainConfig), ConfigError,
         r"repa\.encoder='dinov2' is unknown; choose one of \['stlpips-alex', 'stlpips-vgg'\]"),
    Case("check_repa/depth-beyond-the-blocks", "generator",
         lambda env: check_repa(RepaConfig(weight=0.5, depth=3), "flow",
                                FlowVideoTransformer.from_preset("tiny", in_channels=4, max_grid=(4, 4, 4))),
         ConfigError, r"repa\.depth=3: this flow model has 2 transformer blocks; set repa\.depth to 1\.\.2"),
    Case("check_repa/token-ids-generator", "generator",
         lambda env: check_repa(RepaConfig(weight=0.5, depth=1), "masked", env.masked), UnsupportedError,
         r"repa: model\.generator='masked' has no continuous latent tokens; .* set repa\.weight=0"),
    Case("load_config/distill-guidance-negative", "config",
         lambda env: load_config(overrides=["distill.guidance_scale=-1"],
                                 schema=__import__("vidgen.distillation.task", fromlist=["x"]).DistillTrainConfig),
         ConfigError, r"distill\.guidance_scale must be a number >= 0, got -1"),
    Case("train/resume-with-another-preset", "config", lambda env: _resume_with(env, "model.preset=small"),
         ConfigError, r"resume: the checkpoint .*tok-run/checkpoints/step_00000001 was written by a run with another "
         r"model; differing settings: model\.preset \('tiny' in the checkpoint, 'small' in this run\); differing "
         r"architecture: .*latent_channels \(4 in the checkpoint, 16 in this run\).*start a fresh run",
         _run_record_unchanged),
    Case("train/resume-with-another-kind", "config", lambda env: _resume_with(env, "model.kind=vqvae"), ConfigError,
         r"model\.kind \('vae' in the checkpoint, 'vqvae' in this run\); differing architecture: class \(CausalVAE "
         r"in the checkpoint, CausalVQVAE in this run\)", _run_record_unchanged),
    Case("train/resume-with-another-override", "config",
         lambda env: _resume_with(env, "model.overrides={latent_channels: 8}"), ConfigError,
         r"model\.overrides\.latent_channels \(unset in the checkpoint, 8 in this run\); differing architecture: "
         r"latent_channels \(4 in the checkpoint, 8 in this run\)\.", _run_record_unchanged),
    Case("restore/checkpoint-of-another-generator", "generator", lambda env: _restore_into_wider(env),
         ConfigError, r"resume: the checkpoint .*gen-run/checkpoints/step_00000001 was written by a run with another "
                      r"model; differing settings: architecture .*differing weights: .* in the checkpoint, .* in this "
                      r"run.*start a fresh run"),
    # --------------------------------------------------------------------------- reconstruction benchmark inputs
    Case("eval_recon/short-clip-without-skip-bad", "data",
         lambda env: __import__("vidgen.cli.eval_recon", fromlist=["x"]).load_eval_set(str(_eval_folder(env)), 3, 9, 16),
         VideoIOError, r"--data .*recon-folder: .*b_short\.mp4: asked for 9 frames .* only 4 frames .*; pass "
         r"--skip-bad to skip such clips"),
    Case("eval_recon/only-bad-clips", "data",
         lambda env: __import__("vidgen.cli.eval_recon", fromlist=["x"]).load_eval_set(
             str(_eval_folder(env)), 3, 30, 16, skipped=[]), InvalidInputError,
         r"--data .*recon-folder: no usable clips of 30 frames \(3 skipped, e\.g\. .*a_good\.mp4"),
    Case("eval_recon/protocol-contradicted", "data", lambda env: _recon_args("--protocol", "published-17x256",
                                                                             "--size", "128"),
         ConfigError, r"--size 128 contradicts --protocol published-17x256 \(size 256\); drop the option"),
    Case("eval_recon/protocol-other-perceptual", "data",
         lambda env: _recon_args("--protocol", "published-17x256", "--perceptual", "stlpips"), ConfigError,
         r"--perceptual stlpips contradicts --protocol published-17x256 \(perceptual lpips\)"),
    Case("load_config/unknown-key", "config", lambda env: load_config(overrides=["model.blocks=3"]), ConfigError,
         r"unknown config key 'model\.blocks'"),
    Case("load_config/unknown-block-option", "config",
         lambda env: build_model(load_config(overrides=["model.preset=tiny", "model.overrides.attn_block=2"]).model),
         ConfigError, r"CausalVAE\.from_preset\('tiny'\): unknown option\(s\) \['attn_block'\] for CausalVAE"),
    Case("load_config/unknown-quantizer", "config",
         lambda env: build_model(load_config(overrides=["model.kind=vqvae", "model.preset=tiny",
                                                        "model.overrides.quantizer=nope"]).model),
         ConfigError, r"quantizer must be one of \('vq', 'fsq', 'lfq', 'bsq'\), got 'nope'"),
    Case("load_config/unknown-model-kind", "config",
         lambda env: build_model(load_config(overrides=["model.kind=unet"]).model), ConfigError,
         r"model\.kind='unet' is unknown"),
    Case("load_config/string-for-an-int", "config",
         lambda env: build_model(load_config(overrides=["model.preset=tiny",
                                                        "model.overrides.latent_channels=abc"]).model),
         ConfigError, r"latent_channels must be an int .* got 'abc'"),
    Case("load_config/invalid-yaml-file", "config",
         lambda env: load_config(_config_file(env, "broken.yaml", "model: [tiny\n")), ConfigError,
         r"config file .*broken\.yaml is not valid YAML"),
    Case("load_config/invalid-json-file", "config",
         lambda env: load_config(_config_file(env, "broken.json", "{model: tiny}")), ConfigError,
         r"config file .*broken\.json is not valid JSON"),
    Case("load_config/override-below-a-value", "config", lambda env: load_config(overrides=["steps=3", "steps.x=1"]),
         ConfigError, r"override steps\.x: steps is already set to 3, not a mapping"),
    Case("load_config/unknown-generator", "config",
         lambda env: generator_class(load_config(schema=GeneratorTrainConfig,
                                                 overrides=["model.generator=gan"]).model.generator),
         ConfigError, r"generator='gan' is unknown; choose from \['autoregressive', 'causal', 'flow', 'masked'\]"),
    Case("CausalVQVAE.from_preset/unknown-quantizer", "config",
         lambda env: CausalVQVAE.from_preset("tiny", quantizer="nope"), ConfigError,
         r"quantizer must be one of \('vq', 'fsq', 'lfq', 'bsq'\), got 'nope'"),
    Case("CausalVAE.from_preset/unknown-preset", "config", lambda env: CausalVAE.from_preset("huge"), ConfigError,
         r"unknown VAE preset 'huge'"),
    Case("generator.from_preset/unknown-option", "config",
         lambda env: FlowVideoTransformer.from_preset("tiny", in_channels=4, num_experts=8), ConfigError,
         r"FlowVideoTransformer\.from_preset\('tiny'\): unknown option\(s\) \['num_experts'\]"),
    Case("generator.from_preset/unknown-layout", "config",
         lambda env: MaskedVideoTransformer.from_preset("tiny", vocab_size=64, layout="dilated"), ConfigError,
         r"layout must be one of .* got 'dilated'"),
    Case("check_scheduler/flow-model-ddim", "config",
         lambda env: check_scheduler(env.pipe.transformer, DDIMScheduler()), InvalidInputError,
         r"scheduler: a flow-matching model needs a FlowMatch\* scheduler, got DDIMScheduler"),
    Case("check_scheduler/epsilon-model-flow-scheduler", "config",
         lambda env: check_scheduler(FlowVideoTransformer.from_preset("tiny", in_channels=4,
                                                                          prediction_type="epsilon"),
                                     FlowMatchEulerDiscreteScheduler()),
         InvalidInputError, r"scheduler: the model predicts 'epsilon'; FlowMatchEulerDiscreteScheduler is configured"),
    # --------------------------------------------------------------------------- prompts
    Case("check_prompts/empty-list", "pipeline", lambda env: check_prompts([]), InvalidInputError,
         r"prompt must be a string or a non-empty list of strings, got \[\]"),
    Case("check_prompts/none-in-list", "pipeline", lambda env: check_prompts(["a red circle", None]),
         InvalidInputError, r"prompt must be a string or a non-empty list of strings, got \['a red circle', None\]"),
    Case("check_prompts/bytes", "pipeline", lambda env: check_prompts(b"a red circle", "negative_prompt"),
         InvalidInputError, r"negative_prompt must be a string or a non-empty list of strings, got b'a red circle'"),
    Case("pipeline/conditioning-index-out-of-range", "pipeline",
         lambda env: env.run_pipe(conditioning_frames=torch.zeros(3, T, H, W), conditioning_latent_indices=[0, 9]),
         InvalidInputError, r"conditioning_latent_indices must be whole numbers in \[-2, 1\] \(this call's 2 latent "
         r"frames\), got \[0, 9\]"),
    Case("pipeline/conditioning-index-a-float", "pipeline",
         lambda env: env.run_pipe(conditioning_frames=torch.zeros(3, T, H, W), conditioning_latent_indices=[1.0]),
         InvalidInputError, r"conditioning_latent_indices must be whole numbers .*got \[1\.0\]"),
    Case("pipeline/conditioning-frames-longer-than-the-video", "pipeline",
         lambda env: env.run_pipe(conditioning_frames=torch.zeros(3, T + 4, H, W)), InvalidInputError,
         r"conditioning_frames has 9 frames, more than num_frames=5; pass at most num_frames of them"),
    Case("pipeline/callback-returns-a-tensor", "pipeline",
         lambda env: env.run_pipe(callback_on_step_end=lambda p, i, t, kw: kw["latents"]), InvalidInputError,
         r"callback_on_step_end must return a dict \(e\.g\. \{'latents': \.\.\.\}\) or None, got Tensor at step 0"),
    Case("pipeline_folder/misspelt-load-option", "pipeline_folder",
         lambda env: load_pipeline(env.pipe_folder, dtpye="fp32"), UnknownArgumentError,
         r"dtpye: FlowVideoPipeline.from_pretrained has no such option; did you mean dtype\?"),
    Case("pipeline_folder/fp16-on-the-cpu", "pipeline_folder",
         lambda env: load_pipeline(env.pipe_folder, dtype=torch.float16, device_map="cpu"), ConfigError,
         r"dtype=torch.float16 on a CPU: fp16 is GPU-only here"),
    Case("pipeline/misspelt-argument", "pipeline", lambda env: env.run_pipe(num_frame=9), UnknownArgumentError,
         r"num_frame: FlowVideoPipeline.__call__ has no such argument; did you mean num_frames or "),
    Case("pipeline/unknown-argument", "pipeline", lambda env: env.run_pipe(zzz=1), UnknownArgumentError,
         r"zzz: FlowVideoPipeline.__call__ has no such argument; it takes prompt, negative_prompt, "),
    Case("pipeline/callback-sets-negative-guidance", "pipeline",
         lambda env: env.run_pipe(callback_on_step_end=lambda p, i, t, kw: setattr(p, "_guidance_scale", -2.0)),
         InvalidInputError, r"pipe._guidance_scale must be a number >= 0, got -2.0"),
    Case("sampler/callback-returns-nan-guidance", "generator",
         lambda env: step_callback(lambda i, t, d: {"guidance_scale": float("nan")}, 3, 0.5, "latents",
                                   torch.zeros(1), Guidance(3.0)),
         InvalidInputError, r"the guidance_scale a step callback returned at step 3 must be a number >= 0, got nan"),
    Case("pipeline/callback-changes-the-latents-shape", "pipeline",
         lambda env: env.run_pipe(callback_on_step_end=lambda p, i, t, kw: {"latents": kw["latents"][:, :2]}),
         InvalidInputError, r"callback_on_step_end returned latents of shape \(1, 2, .*\) at step 0; they must keep "
         r"the shape they were given"),
    Case("pipeline/prompt-and-class-labels", "pipeline", lambda env: env.run_pipe("a fox", class_labels=[3]),
         InvalidInputError, r"pass either a prompt \(or prompt_embeds\) or class_labels, not both"),
    Case("pipeline/empty-prompt-list", "pipeline", lambda env: env.run_pipe([]), InvalidInputError,
         r"prompt must be a string or a non-empty list of strings"),
    Case("pipeline/negative-prompt-without-prompt", "pipeline", lambda env: env.run_pipe(negative_prompt="blurry"),
         InvalidInputError, r"negative_prompt needs a prompt"),
    # --------------------------------------------------------------------------- pipeline calls
    Case("pipeline/height-100000", "pipeline", lambda env: env.run_pipe(height=100_000, width=100_000),
         InvalidInputError, r"num_frames / height / width: decoding 1 video\(s\) of 5 frames of 100000x100000 " + GIB),
    Case("pipeline/ten-million-frames", "pipeline", lambda env: env.run_pipe(num_frames=10_000_000),
         InvalidInputError, r"num_frames / height / width: decoding 1 video\(s\) of 10000000 frames of 16x16 " + GIB),
    Case("pipeline/zero-frames", "pipeline", lambda env: env.run_pipe(num_frames=0), InvalidInputError,
         r"num_frames must be an int >= 1, got 0"),
    Case("pipeline/height-past-the-model", "pipeline", lambda env: env.run_pipe(height=64 * H), InvalidInputError,
         r"height / width: \d+x\d+ is larger than this model's largest frame, \d+x\d+ \(max_grid .*; pass a size of "
         r"at most"),
    Case("pipeline/generator-an-int", "pipeline",
         lambda env: env.pipe("a red circle", num_frames=T, height=H, width=W, generator=0), InvalidInputError,
         r"generator: expected a torch.Generator, a list of them \(one per video\) or None, got int; for a seed"),
    Case("pipeline/stream-generator-an-int", "pipeline",
         lambda env: next(iter(env.pipe.stream("a red circle", num_frames=T, height=H, width=W, generator=[0]))),
         InvalidInputError, r"generator: expected a torch.Generator.* got int"),
    Case("pipeline/nan-guidance", "pipeline", lambda env: env.run_pipe(guidance_scale=float("nan")), InvalidInputError,
         r"guidance_scale must be a number >= 0, got nan"),
    Case("pipeline/guidance-interval-reversed", "pipeline", lambda env: env.run_pipe(guidance_interval=(0.8, 0.2)),
         InvalidInputError, r"guidance_interval must be None or a \(low, high\) pair with 0 <= low < high <= 1 "
         r"\(the noise levels where guidance applies\), got \(0\.8, 0\.2\)"),
    Case("pipeline/guidance-interval-one-number", "pipeline", lambda env: env.run_pipe(guidance_interval=0.5),
         InvalidInputError, r"guidance_interval must be None or a \(low, high\) pair .* got 0\.5"),
    Case("pipeline/student-untrained-step-count", "pipeline",
         lambda env: env.student_pipe(num_frames=T, height=H, width=W, num_inference_steps=3), InvalidInputError,
         r"num_inference_steps=3: this student was distilled for \[1, 2, 4\] steps only; pass one of those"),
    Case("pipeline/student-given-guidance", "pipeline",
         lambda env: env.student_pipe(num_frames=T, height=H, width=W, guidance_scale=4.0), InvalidInputError,
         r"guidance_scale=4.0: this student has its teacher's guidance \(3.0\) built in and samples at "
         r"guidance_scale=1"),
    Case("pipeline/cache-on-a-vidgen-generator", "pipeline", lambda env: env.pipe.enable_cache(object()),
         UnsupportedError, r"enable_cache: FlowVideoPipeline samples vidgen's FlowVideoTransformer, which has no "
         r"diffusers cache hooks"),
    Case("diffusers_pipeline/leaf-level-disk-offload-over-tied-weights", "diffusers_pipeline",
         lambda env: env.diffusers_pipe.enable_group_offload(torch.device("cpu"), offload_type="leaf_level",
                                                             offload_to_disk_path=env.path("offload")),
         UnsupportedError, r"text_encoder ties shared\.weight and encoder\.embed_tokens\.weight .* "
                           r"offload_type='block_level', or .* exclude_modules=\['text_encoder'\]"),
    Case("diffusers_pipeline/zero-frames-is-not-the-default", "diffusers_pipeline",
         lambda env: env.run_diffusers_pipe(num_frames=0), InvalidInputError, r"num_frames must be an int >= 1, got 0"),
    Case("diffusers_pipeline/zero-height-is-not-the-default", "diffusers_pipeline",
         lambda env: env.run_diffusers_pipe(height=0), InvalidInputError, r"height must be an int >= 1, got 0"),
    Case("diffusers_pipeline/cache-config-unknown", "diffusers_pipeline",
         lambda env: env.diffusers_pipe.enable_cache("first-block"), InvalidInputError,
         r"enable_cache: Cache config <class 'str'> is not supported\. \(pass a config of diffusers\.hooks"),
    Case("diffusers_pipeline/faster-cache-separate-guidance", "diffusers_pipeline",
         lambda env: env.diffusers_pipe.enable_cache(_diffusers_hooks().FasterCacheConfig()), UnsupportedError,
         r"enable_cache: FasterCacheConfig reuses the unconditional half of a batched \[uncond; cond\] model call; "
         r"the WanPipeline family guides by separate passes"),
    Case("diffusers_pipeline/mag-cache-calibration-over-a-cache", "diffusers_pipeline",
         lambda env: _calibrate_over_a_cache(env.diffusers_pipe), InvalidInputError,
         r"calibrate_mag_cache: a cache is on; pipe\.disable_cache\(\) first"),
    Case("pipeline/student-not-distilled", "pipeline", lambda env: env.pipe.with_student(env.pipe.transformer),
         InvalidInputError, r"student: not a distilled FlowVideoTransformer"),
    Case("distill/masked-teacher", "config", lambda env: _distill_teacher(env, "masked"), ConfigError,
         r"distill.teacher: distillation needs a flow-matching teacher .*got MaskedVideoTransformer"),
    Case("distill/epsilon-teacher", "config", lambda env: _distill_teacher(env, "epsilon"), ConfigError,
         r"distill.teacher: distillation needs a flow-matching teacher .*prediction_type='epsilon'"),
    Case("distill/diffusers-v-prediction-teacher", "config", lambda env: _distill_diffusers(env, "lora.rank=4"),
         ConfigError, r"distill.teacher=.*cogvideox-index: distillation needs a flow-matching teacher; "
         r"CogVideoXPipeline predicts 'v_prediction'"),
    Case("distill/diffusers-without-lora", "config", lambda env: _distill_diffusers(env), ConfigError,
         r"lora.rank: distilling a diffusers model trains a LoRA"),
    Case("causal/chunk-of-zero-frames", "config",
         lambda env: CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, chunk_frames=0), ConfigError,
         r"chunk_frames must be an int >= 1, got 0"),
    Case("causal/sink-without-window", "config",
         lambda env: CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, window_chunks=0, sink_chunks=1),
         ConfigError, r"sink_chunks=1 needs a window \(window_chunks >= 1\)"),
    Case("causal/chunks-longer-than-the-trained-context", "config",
         lambda env: CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, chunk_frames=4, window_chunks=2,
                                                           max_grid=(8, 4, 4)), ConfigError,
         r"attends 16 token frames, more than the trained context \(max_grid t = 8\)"),
    Case("causal/prompt-switch-inside-a-chunk", "pipeline",
         lambda env: env.causal_pipe({0: "a red circle", 9: "a blue square"}, num_frames=17, height=32, width=32),
         InvalidInputError, r"prompt: the prompt at frame 9 starts at latent frame 3, inside a chunk of 2 latent "
         r"frames; a prompt switches at a chunk boundary: schedule it at frame 5 or 13"),
    Case("causal/window-larger-than-the-cache", "pipeline",
         lambda env: env.causal_pipe("a red circle", num_frames=9, height=32, width=32, window_chunks=2),
         InvalidInputError, r"window_chunks=2 is larger than the cache this model keeps \(the sink and "
         r"window_chunks=1 chunks"),
    Case("causal/window-layout", "config",
         lambda env: CausalFlowVideoTransformer.from_preset("tiny", in_channels=4, layout="window"), ConfigError,
         r"layout='window': a block-causal model attends its chunks densely"),
    Case("causal/context-frames", "pipeline",
         lambda env: env.causal_pipe.stream("a red circle", num_frames=9, context_frames=1), InvalidInputError,
         r"context_frames: the causal pipeline gives each chunk the earlier ones through its KV cache"),
    Case("causal/prompt-switch-unknown", "pipeline",
         lambda env: env.causal_pipe({0: "a red circle", 5: "a blue square"}, num_frames=9, height=32, width=32,
                                     prompt_switch="keep"),
         InvalidInputError, r"prompt_switch must be one of \('recache', 'reset'\), got 'keep'"),
    Case("causal/scheduler-not-flow", "pipeline",
         lambda env: type(env.causal_pipe)(env.pipe.vae, env.causal_pipe.transformer, DDIMScheduler()),
         InvalidInputError, r"scheduler: the block-causal model is a flow-matching model and needs a FlowMatch\* "
         r"scheduler, got DDIMScheduler"),
    Case("distill/student-folder-without-config", "config",
         lambda env: student_class(env.path("no-such-student")), ConfigError,
         r"no-such-student: no config.json; pass a distillation run's final/ or checkpoints/step_\*"),
    Case("distill/shift-not-positive", "config",
         lambda env: distillation_spec("dmd2", [1, 2], 3.0, shift=-1.0), ConfigError, r"distill.shift must be a number > 0"),
    Case("pipeline/nan-latents", "pipeline", lambda env: env.run_pipe(latents=_nan((1, 4, 2, 2, 2))),
         InvalidInputError, r"latents must be a finite float tensor \(starting noise\), got dtype torch\.float32 with "
         r"NaN or Inf values"),
    Case("pipeline/integer-latents", "pipeline",
         lambda env: env.run_pipe(latents=torch.zeros(1, 4, 2, 2, 2, dtype=torch.long)), InvalidInputError,
         r"latents must be a finite float tensor \(starting noise\), got dtype torch\.int64"),
    Case("pipeline/latents-of-another-grid", "pipeline", lambda env: env.run_pipe(latents=torch.zeros(1, 4, 3, 2, 2)),
         InvalidInputError, r"latents must have shape \(1, 4, 2, 2, 2\), got \(1, 4, 3, 2, 2\)"),
    Case("pipeline/uint8-conditioning-frames", "pipeline",
         lambda env: env.run_pipe(conditioning_frames=torch.zeros(3, 1, H, W, dtype=torch.uint8)), InvalidInputError,
         r"conditioning_frames must be a float tensor in \[-1, 1\], got dtype torch\.uint8"),
    Case("pipeline/nan-conditioning-frames", "pipeline",
         lambda env: env.run_pipe(conditioning_frames=_nan((3, 1, H, W))), InvalidInputError,
         r"conditioning_frames contains NaN or Inf values"),
    Case("pipeline/4-channel-conditioning-frames", "pipeline",
         lambda env: env.run_pipe(conditioning_frames=torch.zeros(4, 1, H, W)), InvalidInputError,
         r"conditioning_frames must have 3 \(RGB\) channels on axis 1, got 4"),
    Case("pipeline/output-type", "pipeline", lambda env: env.run_pipe(output_type="gif"), InvalidInputError,
         r"output_type must be one of \('np', 'pil', 'pt', 'latent'\), got 'gif'"),
    # --------------------------------------------------------------------------- prompt schedules (stories)
    Case("story/non-integer-index", "pipeline", lambda env: env.run_pipe({0: "a", 2.5: "b"}, num_frames=20),
         InvalidInputError, r"prompt: frame index 2\.5 is not an integer"),
    Case("story/negative-index", "pipeline", lambda env: env.run_pipe({0: "a", -3: "b"}, num_frames=20),
         InvalidInputError, r"prompt: frame index -3 is negative"),
    Case("story/index-beyond-num-frames", "pipeline", lambda env: env.run_pipe({0: "a", 20: "b"}, num_frames=20),
         InvalidInputError, r"prompt: frame index 20 is beyond the video \(num_frames=20, last frame 19\)"),
    Case("story/empty-prompt", "pipeline", lambda env: env.run_pipe({0: "a", 8: ""}, num_frames=20),
         InvalidInputError, r"prompt: the prompt at frame 8 is empty"),
    Case("story/no-frame-0", "pipeline", lambda env: env.run_pipe({4: "a", 8: "b"}, num_frames=20),
         InvalidInputError, r"prompt: the schedule has no prompt at frame 0"),
    Case("story/more-segments-than-latent-frames", "pipeline",
         lambda env: env.run_pipe({0: "a", 1: "b", 2: "c"}, num_frames=3), InvalidInputError,
         r"prompt: 3 prompts for 3 frames, which are 2 latent frames"),
    Case("story/two-prompts-in-one-latent-frame", "pipeline",
         lambda env: env.run_pipe({0: "a", 6: "b", 7: "c"}, num_frames=20), InvalidInputError,
         r"prompt: the prompts at frames 6 and 7 both start at latent frame 3"),
    Case("story/empty-schedule", "pipeline", lambda env: env.run_pipe({}, num_frames=20), InvalidInputError,
         r"prompt: an empty schedule"),
    Case("story/context-frames-of-a-whole-window", "pipeline",
         lambda env: env.run_pipe({0: "a", 8: "b"}, num_frames=20, context_frames=4), InvalidInputError,
         r"context_frames must be in \[0, 3\]"),
    Case("story/stream-pil", "pipeline", lambda env: env.pipe.stream("a", num_frames=20, output_type="pil"),
         InvalidInputError, r"output_type must be 'np', 'pt' or 'latent' for stream\(\), got 'pil'"),
    Case("story/prompt-inside-the-conditioning-frames", "pipeline",
         lambda env: env.run_pipe({0: "a", 5: "b"}, num_frames=20, conditioning_frames=torch.zeros(3, 9, H, W)),
         InvalidInputError, r"prompt: the prompt at frame 5 starts at latent frame 2, inside the 3 latent frames the "
         r"conditioning_frames give \(output frames 0 to 8, kept, not sampled\); schedule it at frame 9 or later"),
    Case("story/conditioning-latent-indices", "pipeline",
         lambda env: env.run_pipe({0: "a", 8: "b"}, num_frames=20, conditioning_frames=torch.zeros(3, 1, H, W),
                                  conditioning_latent_indices=[0]),
         InvalidInputError, r"conditioning_latent_indices: not supported for long videos and prompt schedules"),
    Case("causal/conditioning-frames", "pipeline",
         lambda env: env.causal_pipe.stream("a", num_frames=9, height=H, width=W,
                                            conditioning_frames=torch.zeros(3, 1, H, W)),
         UnsupportedError, r"conditioning_frames: CausalVideoPipeline cannot continue a video \(its block-causal "
         r"stream starts from noise"),
    Case("causal/image-wrong-size", "pipeline",
         lambda env: env.causal_pipe("a", num_frames=9, height=32, width=32, image=_rgb(16)), InvalidInputError,
         r"image: 16x16 pixels \(height x width\), but the call makes 32x32 frames; pass height=16, width=16, or "
         r"resize the image to 32x32"),
    Case("causal/image-channels", "pipeline",
         lambda env: env.causal_pipe.stream("a", num_frames=9, height=32, width=32, image=torch.zeros(4, 32, 32)),
         InvalidInputError, r"image: 4 channels \(shape \(4, 32, 32\)\); the pipeline takes RGB images with 3"),
    Case("causal/image-values-outside-0-1", "pipeline",
         lambda env: env.causal_pipe("a", num_frames=9, height=32, width=32, image=torch.full((3, 32, 32), -1.0)),
         InvalidInputError, r"image: tensor values in \[-1, -1\]; pass a \(3, H, W\) tensor in \[0, 1\]"),
    Case("causal/image-uint8-tensor", "pipeline",
         lambda env: env.causal_pipe("a", num_frames=9, height=32, width=32,
                                     image=torch.zeros(3, 32, 32, dtype=torch.uint8)),
         InvalidInputError, r"image: a torch.uint8 tensor; pass a float \(3, H, W\) tensor in \[0, 1\]"),
    Case("causal/image-longer-than-the-call", "pipeline",
         lambda env: env.causal_pipe("a", num_frames=1, height=32, width=32, image=_rgb(32)), InvalidInputError,
         r"num_frames=1: image= fills the first chunk of 2 latent frames \(5 frames\), more than the call makes; "
         r"pass num_frames >= 5"),
    Case("causal/last-image", "pipeline",
         lambda env: env.causal_pipe("a", num_frames=9, height=32, width=32, image=_rgb(32), last_image=_rgb(32, 1)),
         UnsupportedError, r"last_image: CausalVideoPipeline takes a first frame \(image=\) only; its block-causal "
                           r"stream makes each chunk after the earlier ones"),
    Case("causal/video", "pipeline",
         lambda env: env.causal_pipe("a", num_frames=9, height=32, width=32, video=[_rgb(32)] * 5, strength=0.5),
         UnsupportedError, r"video, strength: CausalVideoPipeline takes a first frame \(image=\) only"),
    Case("causal/block-causal-image-to-video-transformer", "generator",
         lambda env: block_causal(causal_wan(channels=16, in_channels=36), chunk_frames=2), UnsupportedError,
         r"block_causal: WanTransformer3DModel reads 36 input channels, its 16 latent channels and 20 of condition"),
    # --------------------------------------------------------------------- layered scenes, capture, resize baseline
    Case("shapes/unknown-wrap", "data", lambda env: ShapesDataset(wrap="later"), InvalidInputError,
         r"wrap must be .*'torus-late'.*got 'later'"),
    Case("shapes/motion-frames-above-the-clip", "data", lambda env: ShapesDataset(num_frames=9, motion_frames=17),
         InvalidInputError, r"motion_frames must be .*\[2, num_frames=9\].*got 17"),
    Case("shapes/motion-frames-one", "data", lambda env: ShapesDataset(num_frames=9, motion_frames=1),
         InvalidInputError, r"motion_frames must be .*got 1"),
    Case("scenes/unknown-split", "data", lambda env: SceneClips("validation"), InvalidInputError,
         r"split must be one of \('train', 'val', 'test'\), got 'validation'"),
    Case("scenes/zero-frames", "data", lambda env: SceneClips(num_frames=0), InvalidInputError,
         r"num_frames must be a positive int, got 0"),
    Case("scenes/too-many-layers", "data", lambda env: SceneClips(layers=9), InvalidInputError,
         r"layers must be an int in \[0, 4\], got 9"),
    Case("capture/unknown-codec", "data", lambda env: Capture(codec="h265"), InvalidInputError,
         r"Capture.codec must be one of \('none', 'jpeg', 'inter'\), got 'h265'"),
    Case("capture/quality-100", "data", lambda env: Capture(quality=100), InvalidInputError,
         r"Capture.quality is a JPEG quality in \[1, 95\], got 100"),
    Case("capture/batched-clip", "data", lambda env: apply_capture(torch.zeros(1, 3, 2, 8, 8), Capture(),
                                                                   torch.Generator()), InvalidInputError,
         r"apply_capture expects a \(3, T, H, W\) clip, got shape \(1, 3, 2, 8, 8\)"),
    Case("baseline/unknown-name", "data", lambda env: ResizeBaseline.from_name("bilinear-4x2"), InvalidInputError,
         r"resize baseline name must be 'bicubic' or 'bicubic-SxT'.*got 'bilinear-4x2'"),
    Case("baseline/indivisible-size", "data", lambda env: ResizeBaseline().encode(torch.zeros(1, 3, 3, 30, 30)),
         InvalidInputError, r"frame size 30x30 is not divisible by the baseline's 4x resize"),
    Case("baseline/frame-count", "data", lambda env: ResizeBaseline().decode(torch.zeros(1, 3, 2, 8, 8), 9, 32, 32),
         InvalidInputError, r"2 coded frames cannot decode to 9 frames \(that needs 5\)"),
    # --------------------------------------------------------------------- shard datasets, buckets, encode sources
    Case("shards/not-a-dataset", "data", lambda env: ShardDataset(env.root), ShardError,
         r"bad_inputs\d*: no info.json: not an encoded shard dataset, or its encode has not finished"),
    Case("shards/other-tokenizer", "data", lambda env: ShardDataset(env.shards, fingerprint="0" * 16), ShardError,
         r"shards: encoded with another tokenizer \(fingerprint [0-9a-f]{16}.*the configured tokenizer's is 0{16}"),
    Case("shards/truncated", "data", lambda env: ShardDataset(env.truncated_shards()), ShardError,
         r"shards-cut/9x32x32/.*\.bin: shard truncated or damaged: \d+ bytes, its index records \d+"),
    Case("shards/unknown-bucket", "data", lambda env: ShardDataset(env.shards, buckets=["17x64x64"]), ShardError,
         r"shards: no clips in bucket\(s\) \['17x64x64'\]; it has \['9x32x32'\]"),
    Case("shards/no-captions", "data", lambda env: ShardDataset(env.shards).text([1]), ShardError,
         r"shards: encoded without a text encoder \(--text-encoder none\)"),
    Case("shards/rerun-other-buckets", "data",
         lambda env: encode_dataset(env.path("shard-src"), env.vae_folder, env.shards, buckets="9x32x48",
                                    text_encoder="none", num_workers=0, show_progress=False), ConfigError,
         r"shards: holds an encode with other settings \(buckets: \['9x32x32'\] -> \['9x32x48'\]\)"),
    Case("encode/dtype-for-ids", "data",
         lambda env: encode_dataset(env.shards.parent / "shard-src", env.vq_folder, env.path("ids-out"), dtype="float32",
                                    num_workers=0, show_progress=False), ConfigError,
         r"dtype='float32': .* is a discrete tokenizer, whose ids are stored as int16 or int32"),
    Case("buckets/two-numbers", "data", lambda env: parse_buckets("17x64"), ConfigError,
         r"buckets: expected FRAMESxHEIGHTxWIDTH such as '17x64x64' \(positive ints\), got '17x64'"),
    Case("buckets/config-unknown-key", "data",
         lambda env: bucket_settings([{"shape": "9x32x32", "size": 2}], {"9x32x32": 1}, {"9x32x32": (4, 3, 4, 4)}, 2,
                                     "d"), ConfigError,
         r"data.buckets\[0\]: unknown key\(s\) \['size'\]; valid: shape, batch, weight"),
    Case("buckets/config-not-in-dataset", "data",
         lambda env: bucket_settings(["17x64x64"], {"9x32x32": 1}, {"9x32x32": (4, 3, 4, 4)}, 2, "d"), ConfigError,
         r"data.buckets\[0\]: bucket 17x64x64 is not in the dataset at d"),
    Case("encode/missing-source", "data", lambda env: list_source(env.path("nowhere")), VideoIOError,
         r"nowhere: no such folder or manifest file"),
    Case("encode/empty-source", "data", lambda env: list_source(""), InvalidInputError,
         r"source is empty: give a folder of videos or a manifest file"),
    Case("encode/manifest-end-before-start", "data",
         lambda env: read_manifest(_config_file(env, "clips.csv", "path,start,end\na.mp4,2,1\n")), VideoIOError,
         r"clips.csv: row 1: end \(1.0\) must be after start \(2.0\)"),
    Case("encode/manifest-no-path", "data",
         lambda env: read_manifest(_config_file(env, "clips.jsonl", '{"caption": "x"}\n')), VideoIOError,
         r"clips.jsonl: row 1: needs a 'path' \(or 'file_name'\) string"),
    # diffusers video pipeline folders (Wan / CogVideoX / LTX-Video) as vidgen flow pipelines
    Case("diffusers/misspelt-argument", "diffusers_pipeline",
         lambda env: env.run_diffusers_pipe(negative_promt="blurry"), UnknownArgumentError,
         r"negative_promt: DiffusersVideoPipeline.__call__ has no such argument; did you mean negative_prompt or "),
    Case("diffusers/story", "diffusers_pipeline", lambda env: env.run_diffusers_pipe({0: "a fox", 4: "a boat"}),
         UnsupportedError, r"stories and long videos .*not available for the WanPipeline family"),
    Case("diffusers/prediction", "diffusers_pipeline",
         lambda env: env.run_diffusers_pipe(conditioning_frames=torch.zeros(3, 1, 16, 16)), UnsupportedError,
         r"conditioning_frames: not available for the WanPipeline family"),
    Case("diffusers/lora-missing-target-modules", "diffusers_pipeline",
         lambda env: add_lora(env.diffusers_pipe.transformer, 4, target_modules=["to_q", "to_qq"]), ConfigError,
         r"lora target_modules \['to_qq'\]: not modules of WanTransformer3DModel"),
    Case("diffusers/window-layers", "diffusers_pipeline",
         lambda env: window_attention(env.diffusers_pipe.transformer, (1, 3, 3), layers=[5]), InvalidInputError,
         r"layers: \[5\] are not block indices of this WanTransformer3DModel \(0..1\)"),
    # --------------------------------------------------------------------------- conditioned calls (image=, video=)
    Case("conditioned/image-channels", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=torch.zeros(4, 16, 16)), InvalidInputError,
         r"image: 4 channels \(shape \(4, 16, 16\)\); the pipeline takes RGB images with 3 channels"),
    Case("conditioned/image-numpy", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=np.zeros((16, 16, 3))), InvalidInputError,
         r"image: a numpy array; pass a PIL image \(Image.fromarray"),
    Case("conditioned/image-rgba", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=_rgb(16, mode="RGBA")), InvalidInputError,
         r"image: a PIL image in mode 'RGBA'; the pipeline takes RGB images \(pass image.convert\('RGB'\)\)"),
    Case("conditioned/image-is-a-video", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=torch.zeros(5, 3, 16, 16)), InvalidInputError,
         r"image: an array / tensor of shape \(5, 3, 16, 16\); one image is \(H, W, 3\).*for a video pass video="),
    Case("conditioned/image-empty", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=torch.zeros(3, 0, 16)), InvalidInputError,
         r"image: an empty image \(shape \(3, 0, 16\)\)"),
    Case("conditioned/image-values-in-0-255", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=torch.full((3, 16, 16), 200.0)), InvalidInputError,
         r"image: tensor values in \[200, 200\]; pass a \(3, H, W\) tensor in \[0, 1\]"),
    Case("conditioned/image-uint8", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=torch.zeros(3, 16, 16, dtype=torch.uint8)), InvalidInputError,
         r"image: a torch.uint8 tensor; pass a float \(3, H, W\) tensor in \[0, 1\] \(image.float\(\) / 255"),
    Case("conditioned/video-frame-nan", "diffusers_v2v",
         lambda env: env.run_conditioned("v2v", video=np.full((5, 16, 16, 3), np.nan), strength=0.5),
         InvalidInputError, r"video\[0\]: array values in \[nan, nan\]; pass a \(H, W, 3\) array in \[0, 1\]"),
    Case("conditioned/image-missing", "diffusers_i2v", lambda env: env.run_conditioned("i2v"), InvalidInputError,
         r"image: WanImageToVideoPipeline samples from an image; pass image="),
    Case("conditioned/last-image-on-a-one-image-model", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=_rgb(16), last_image=_rgb(16, 1)), InvalidInputError,
         r"last_image: this Wan transformer reads one image's CLIP embeddings \(its config has no pos_embed_seq_len\)"),
    Case("conditioned/last-image-without-image", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", last_image=_rgb(16)), InvalidInputError,
         r"last_image: given without image; a first-last-frame call needs both"),
    Case("conditioned/frames-not-whole-latent-frames", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=_rgb(16), num_frames=7), InvalidInputError,
         r"num_frames=7: WanImageToVideoPipeline encodes its condition in whole latent frames; pass 1 \+ a multiple "
         r"of 4 \(e.g. 5\)"),
    Case("conditioned/size-not-whole-patches", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=_rgb(16), height=24), InvalidInputError,
         r"height=24, width=16: WanImageToVideoPipeline needs multiples of \(16, 16\)"),
    Case("conditioned/strength-on-image-to-video", "diffusers_i2v",
         lambda env: env.run_conditioned("i2v", image=_rgb(16), strength=0.5), UnsupportedError,
         r"strength: WanImageToVideoPipeline \(the folder's class\) does not take it; load a folder of "
         r"WanVideoToVideoPipeline"),
    Case("conditioned/strength-zero", "diffusers_v2v",
         lambda env: env.run_conditioned("v2v", video=[_rgb(16)] * 5, strength=0), InvalidInputError,
         r"strength must be a number in \(0, 1\] .*got 0"),
    Case("conditioned/strength-above-one", "diffusers_v2v",
         lambda env: env.run_conditioned("v2v", video=[_rgb(16)] * 5, strength=1.5), InvalidInputError,
         r"strength must be a number in \(0, 1\] .*got 1.5"),
    Case("conditioned/strength-leaves-no-step", "diffusers_v2v",
         lambda env: env.run_conditioned("v2v", video=[_rgb(16)] * 5, strength=0.5), InvalidInputError,
         r"strength=0.5: with num_inference_steps=1 no step is left"),
    Case("conditioned/video-and-latents", "diffusers_v2v",
         lambda env: env.run_conditioned("v2v", video=[_rgb(16)] * 5, latents=torch.zeros(1, 16, 2, 2, 2)),
         InvalidInputError, r"latents: WanVideoToVideoPipeline starts from the noised video \(video=\); it takes "
                            r"one of video= and latents="),
    Case("conditioned/video-missing", "diffusers_v2v", lambda env: env.run_conditioned("v2v"), InvalidInputError,
         r"video: WanVideoToVideoPipeline samples from a video; pass video="),
    Case("conditioned/video-frame-count", "diffusers_v2v",
         lambda env: env.run_conditioned("v2v", video=[_rgb(16)] * 5, num_frames=9), InvalidInputError,
         r"num_frames=9: WanVideoToVideoPipeline samples as many frames as the video \(5\); leave num_frames out"),
    Case("conditioned/video-mixed-sizes", "diffusers_v2v",
         lambda env: env.run_conditioned("v2v", video=[_rgb(16)] * 4 + [_rgb(8)]), InvalidInputError,
         r"video: frames of different sizes \[\(8, 8\), \(16, 16\)\]; resize them to one size"),
    Case("conditioned/image-on-text-to-video-folder", "diffusers_pipeline",
         lambda env: env.run_diffusers_pipe(image=_rgb(16)), UnsupportedError,
         r"image: WanPipeline \(the folder's class\) does not take it; load a folder of WanImageToVideoPipeline"),
    Case("conditioned/video-on-text-to-video-folder", "diffusers_pipeline",
         lambda env: env.run_diffusers_pipe(video=[_rgb(16)] * 5), UnsupportedError,
         r"video: WanPipeline \(the folder's class\) does not take it; load a folder of WanVideoToVideoPipeline"),
    Case("conditioned/image-on-vidgen-pipeline", "pipeline", lambda env: env.run_pipe("a fox", image=_rgb(16)),
         UnsupportedError, r"image: FlowVideoPipeline samples from text only \(vidgen's own generators take no image "
                           r"or video.*load_pipeline"),
    Case("conditioned/video-on-shipped-pipeline", "pipeline_folder",
         lambda env: load_pipeline("pretrained/shapes-masked")("a red circle", video=[_rgb(16)] * 5, strength=0.5),
         UnsupportedError, r"video, strength: MaskedVideoPipeline samples from text only"),
    Case("conditioned/ltx-latents", "ltx_i2v", lambda env: env.run_family_i2v("ltx", latents=torch.zeros(1, 8, 3, 8, 8)),
         InvalidInputError, r"latents: LTXImageToVideoPipeline ignores the image when it is given latents \(they are "
                            r"the whole start, frame 0 included\); pass a generator instead"),
    Case("conditioned/hunyuan-template-without-image-slot", "hunyuan_i2v",
         lambda env: env.run_family_i2v("hunyuan_video", prompt_template={"template": "{}", "crop_start": 0}),
         InvalidInputError, r"prompt_template: an image slot of image_emb_len=576 tokens \(image_emb_start\.\."
                            r"image_emb_end: 576\), but the text encoder's vision tower gives 16 image tokens"),
    Case("conditioned/hunyuan-prompt-without-image", "hunyuan_i2v",
         lambda env: (env.run_family_i2v("hunyuan_video"), env.family_i2v["hunyuan_video"].encode_prompt("a fox")),
         InvalidInputError, r"image: HunyuanVideoImageToVideoPipeline encodes the prompt with the image"),
    # --------------------------------------------------------------------------- sequence parallelism (vidgen.parallel)
    Case("parallel/sp-size-without-launch", "pipeline", lambda env: env.run_pipe(sp_size=2), ConfigError,
         r"sp_size=2 needs a distributed launch \(accelerate launch or torchrun"),
    Case("parallel/sp-size-not-dividing-world", "pipeline", lambda env: _in_world_of_one(env, env.run_pipe, sp_size=2),
         ConfigError, r"sp_size=2 does not divide the world size 1"),
    Case("parallel/sp-size-config", "config", lambda env: load_config(overrides=["sp_size=0"]), ConfigError,
         r"sp_size must be an int >= 1"),
    Case("parallel/heads-not-divisible", "generator",
         lambda env: check_sequence_parallel(env.masked, SequenceParallel(None, 0, 3, 0, 1, owns_group=False)),
         ConfigError, r"sp_size=3 does not divide num_heads=2"),
    Case("parallel/sp-size-diffusers-pipeline", "diffusers_pipeline", lambda env: env.run_diffusers_pipe(sp_size=2),
         ConfigError, r"sp_size=2 needs a distributed launch \(accelerate launch or torchrun"),
    Case("parallel/diffusers-ring-without-lse", "diffusers_pipeline", lambda env: env.run_diffusers_pipe(sp_size=3),
         UnsupportedError, r"sp_size=3: WanTransformer3DModel has 2 attention heads, not a multiple of 3, so its "
                           r"tokens would be split by ring attention, .*diffusers' 'native' attention \(the only "
                           r"backend on CPU; no return_lse\)"),
    Case("parallel/diffusers-transformer-without-cp-plan", "diffusers_pipeline",
         lambda env: _diffusers_parallel().parallel_config(_tiny_transformer("cogvideox"), 2), UnsupportedError,
         r"sp_size=2: diffusers' CogVideoXTransformer3DModel has no context-parallel plan \(_cp_plan\)"),
    Case("parallel/diffusers-ltx-plan-fails", "diffusers_pipeline",
         lambda env: _diffusers_parallel().parallel_config(_tiny_transformer("ltx"), 2), UnsupportedError,
         r"sp_size=2: diffusers' LTXVideoTransformer3DModel has a context-parallel plan, but its attention processor "
         r"views the text mask per head"),
    Case("diffusers/mochi-one-step", "diffusers_pipeline",
         lambda env: _mochi_timesteps(1), InvalidInputError,
         r"num_inference_steps: Mochi's linear-quadratic schedule needs at least 2 steps, got 1"),
    Case("parallel/diffusers-backend-without-cp", "diffusers_pipeline",
         lambda env: _diffusers_parallel().parallel_config(_with_backend(_tiny_transformer("wan"), "_native_math"), 2),
         UnsupportedError, r"sp_size=2: WanTransformer3DModel's attention backend '_native_math' has no context "
                           r"parallelism in diffusers"),
    Case("parallel/sp-size-autoregressive-pipeline", "pipeline_folder",
         lambda env: load_pipeline("pretrained/shapes-autoregressive", dtype="fp32")("a red circle", sp_size=2),
         UnsupportedError, r"sp_size=2: AutoregressiveVideoPipeline cannot split its sampling over processes \(it "
                           r"samples one token per step against a KV cache\); call it with sp_size=1"),
    Case("parallel/attention-cannot-be-split", "diffusers_pipeline",
         lambda env: check_sequence_parallel(env.diffusers_pipe.transformer, None), UnsupportedError,
         r"WanTransformer3DModel has no vidgen video transformer backbone whose attention can be split"),
    Case("finetune/i2v-shards-without-first-frames", "config", lambda env: _finetune_i2v(env, first_frames=False),
         ShardError, r"data.root=.*: the shards hold no first frames, which WanImageToVideoPipeline is fine-tuned on; "
                     r"encode them again with `vidgen data encode \.\.\. --first-frames`"),
    Case("finetune/i2v-shards-of-a-frame-count-the-class-cannot-encode", "config",
         lambda env: _finetune_i2v(env, bucket="8x32x32"), ShardError,
         r"data.root=.*: bucket 8x32x32: WanImageToVideoPipeline encodes its first frame in whole latent frames and "
         r"cells; encode buckets of 1 \+ a multiple of 4 frames .*\(e.g. 5x32x32\)"),
    Case("finetune/i2v-per-token-timestep-model", "config", lambda env: _finetune_i2v(env, "expand_timesteps"),
         UnsupportedError, r"pipeline: WanImageToVideoPipeline with this config gives its image by replacing latent "
                           r"frames .*fine-tuning it is not built"),
    Case("finetune/i2v-first-last-frame-model", "config", lambda env: _finetune_i2v(env, "first_last"),
         UnsupportedError, r"pipeline: WanImageToVideoPipeline with a first-last-frame transformer \(its config has "
                           r"pos_embed_seq_len\) reads a first and a last image; the shards hold first frames only"),
    Case("finetune/video-to-video-folder", "config",
         lambda env: _finetune_i2v(env, pipeline_class="WanVideoToVideoPipeline"), UnsupportedError,
         r"pipeline: fine-tuning a WanVideoToVideoPipeline folder is not built .*fine-tune the family's WanPipeline "
         r"folder instead"),
]


def _diffusers_hooks():
    import diffusers.hooks
    return diffusers.hooks


def _calibrate_over_a_cache(pipe):
    from vidgen.pipelines.cache_configs import calibrate_mag_cache
    pipe.enable_cache(_diffusers_hooks().FirstBlockCacheConfig(threshold=0.1))
    try:
        calibrate_mag_cache(pipe, "a fox", num_inference_steps=1)
    finally:
        pipe.disable_cache()


def _diffusers_parallel():
    import vidgen.pipelines.diffusers_parallel as module
    return module


def _mochi_timesteps(steps: int):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from vidgen.families import family_named
    return family_named("mochi").timesteps(FlowMatchEulerDiscreteScheduler(), steps, None, "cpu")


def _tiny_transformer(family: str):
    from vidgen.pipelines.diffusers_tiny import tiny_components
    return tiny_components(family)["transformer"]


def _with_backend(model, backend: str):
    """``model`` with its attention processors on ``backend`` (as ``set_attention_backend`` sets them, which also
    switches a process-wide check on)."""
    for module in model.modules():
        if hasattr(getattr(module, "processor", None), "_attention_backend"):
            module.processor._attention_backend = backend
    return model


def _in_world_of_one(env: Env, fn, **kwargs):
    """``fn(**kwargs)`` inside a one-process gloo world (destroyed afterwards, as the test found it)."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{env.path('world_of_one')}", rank=0, world_size=1)
    try:
        return fn(**kwargs)
    finally:
        dist.destroy_process_group()


def test_the_corpus_is_large_and_ids_are_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.target for c in CASES} <= set(SANITY)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_clearly_and_the_process_stays_usable(case: Case, env: Env):
    with pytest.raises(case.error, match=case.match) as info:
        case.trigger(env)
    assert isinstance(info.value, VidgenError), f"{type(info.value).__name__} is not a VidgenError"
    if case.after is not None:
        case.after(env)
    after = SANITY[case.target](env)  # the same object, a valid call: same result as before any bad input
    assert all(_same(a, b) for a, b in zip(after, env.reference[case.target])) if isinstance(after, tuple) \
        else _same(after, env.reference[case.target])


# ---------------------------------------------------------------------------------------------- documented handling
def test_memory_check_compares_the_estimate_with_the_device_memory(env, monkeypatch):
    import vidgen.tokenizers.base as base

    z = torch.zeros(1, 4, 2, 2, 2)
    need = env.vae.estimate_memory(1, 5, 16, 16)
    assert 3 * 5 * 16 * 16 * 4 < need < 2**24  # at least the output, and small for a tiny decode
    monkeypatch.setattr(base, "device_memory_bytes", lambda device: need - 1)
    with pytest.raises(InvalidInputError, match=r"z: decoding 1 video\(s\) of 5 frames of 16x16 would need about"):
        env.vae.decode(z)
    monkeypatch.setattr(base, "device_memory_bytes", lambda device: need)
    assert env.vae.decode(z).sample.shape == (1, 3, 5, 16, 16)


def test_float64_and_uint8_metric_inputs_give_the_float32_result(env):
    x, y = env.x, env.x * 0.5
    assert psnr(x.double(), y.double()).dtype == torch.float64  # documented: float64 stays float64
    torch.testing.assert_close(psnr(x.double(), y.double()).float(), psnr(x, y))
    torch.testing.assert_close(ssim(x.double(), y.double()).float(), ssim(x, y))
    assert preprocess_for_i3d(x.double()).dtype == torch.float32
    torch.testing.assert_close(preprocess_for_i3d(x.double()), preprocess_for_i3d(x))
    pixels = torch.randint(0, 256, (1, 3, T, H, W), dtype=torch.uint8)
    torch.testing.assert_close(preprocess_for_i3d(pixels), preprocess_for_i3d(pixels.float() / 127.5 - 1))


def test_float64_video_writes_the_same_frames_as_float32(env):
    from vidgen.io import to_uint8_frames

    assert np.array_equal(to_uint8_frames(env.x[0].double()), to_uint8_frames(env.x[0]))


def test_int32_ids_decode_like_int64_ids(env):
    ids = env.vq.tokenize(env.x)
    assert torch.equal(env.vq.detokenize(ids.int()), env.vq.detokenize(ids))


def test_float64_starting_latents_give_the_float32_result(env):
    noise = torch.randn(1, 4, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    assert np.array_equal(env.run_pipe(latents=noise.double()), env.run_pipe(latents=noise))


def test_empty_prompt_is_valid_and_a_long_prompt_is_truncated_with_a_warning(env):
    empty = env.run_pipe("")  # documented: only the special tokens remain
    assert empty.shape == (1, T, H, W, 3) and np.isfinite(empty).all()
    short = "a red circle moving left on"  # exactly max_text_tokens=8 with [CLS] and [SEP]
    long = short + " a black background" * 2000
    with pytest.warns(UserWarning, match=r"prompt: 1 prompt\(s\) longer than max_text_tokens=8 tokens were "
                                         r"truncated"):
        truncated = env.run_pipe(long)
    assert np.array_equal(truncated, env.run_pipe(short))  # what is kept is the start of the prompt
    assert not np.array_equal(truncated, empty)

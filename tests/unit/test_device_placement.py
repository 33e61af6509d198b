"""Where tensors live when the weights do not stay put: diffusers' model offload and the EMA.

The lent H100 found these (experiments/log.md, 2026-11-26): the training loops left batches, conditioning and the
EMA on the CPU, and model offload left the conditioning and the VAE behind. CUDA itself is not available here, so
these tests check the mechanisms on the CPU (accelerate's hooks with another execution device, ``meta`` where only
placement matters); ``experiments/device/cuda_tests.sh`` runs the same paths on a GPU.
"""
import contextlib

import numpy as np
import pytest
import torch
from accelerate import cpu_offload_with_hook
from accelerate.hooks import CpuOffload
from accelerate.utils import send_to_device

from vidgen.errors import UnsupportedError
from vidgen.generators import Conditioning, FlowVideoTransformer
from vidgen.pipelines import load_pipeline
from vidgen.tokenizers import CausalVAE
from vidgen.training.ema import EMA
from vidgen.training.samples import latent_statistics, reconstruct_mode

PROMPT = "a red circle moving right on a black background"


@contextlib.contextmanager
def hooked_modules():
    """The class names of the modules accelerate's offload hook brings over, in the order of the calls."""
    calls, original = [], CpuOffload.pre_forward

    def counting(self, module, *args, **kwargs):
        calls.append(type(module).__name__)
        return original(self, module, *args, **kwargs)

    CpuOffload.pre_forward = counting
    try:
        yield calls
    finally:
        CpuOffload.pre_forward = original


def test_conditioning_moves_with_a_forwards_arguments():
    cond = Conditioning(torch.zeros(2, 4, 8), torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 8),
                        torch.tensor([1, 2]))
    moved = send_to_device(cond, "meta")  # what an offload hook does with each argument
    assert all(x.device.type == "meta" for x in (moved.text, moved.text_mask, moved.pooled, moved.class_labels))
    assert moved.text_mask.dtype == torch.bool and moved.class_labels.dtype == torch.long
    assert Conditioning(pooled=torch.zeros(1, 8)).to("meta").text is None


@pytest.mark.parametrize("make", [lambda: CausalVAE.from_preset("tiny"),
                                  lambda: FlowVideoTransformer.from_preset("tiny", in_channels=4)],
                         ids=["tokenizer", "generator"])
def test_device_is_the_offload_hooks_execution_device(make):
    model = make()
    assert model.device.type == "cpu"
    cpu_offload_with_hook(model, execution_device="meta")  # the weights stay on the CPU until a call
    assert next(model.parameters()).device.type == "cpu"
    assert model.device.type == "meta", "samplers would put their state where the weights are not used"


@pytest.mark.parametrize("name, generator_class", [("flow", "FlowVideoTransformer"),
                                                   ("masked", "MaskedVideoTransformer")])
def test_model_offload_runs_every_component_through_its_hook_and_changes_nothing(name, generator_class):
    pipe = load_pipeline(f"pretrained/shapes-{name}", dtype="fp32")
    kw = dict(num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    tokenizer_class = type(pipe.video_tokenizer).__name__
    ref = np.asarray(pipe(PROMPT, **kw).frames)
    pipe.enable_model_cpu_offload(device="cpu")
    kw["generator"] = torch.Generator().manual_seed(0)
    with hooked_modules() as calls:
        out = np.asarray(pipe(PROMPT, **kw).frames)
    assert {generator_class, tokenizer_class} <= set(calls), calls  # decode, not only forward, is hooked
    np.testing.assert_array_equal(out, ref)


def test_ema_follows_the_model_to_its_device():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.5)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # same device: the plain update
    torch.testing.assert_close(ema.shadow["weight"], before["weight"] + 0.5)
    model.to("meta")  # the accelerator moved the model after the EMA was made
    ema.update(model)
    assert all(v.device.type == "meta" for v in ema.shadow.values())


class _WhereItRuns(torch.nn.Module):
    """A stand-in tokenizer whose weights sit on ``meta`` (another device): it records where its inputs arrive and
    returns real CPU tensors, as a GPU model's outputs would be after the helpers bring them back."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(1, device="meta"))
        self.seen = []

    @property
    def device(self):  # as the tokenizers report it (CausalCodecMixin.device)
        return self.weight.device

    def reconstruct(self, x, sample_posterior=False):
        self.seen.append(x.device.type)
        return type("Out", (), {"sample": torch.zeros(x.shape)})()

    def encode(self, x):
        self.seen.append(x.device.type)
        mode = torch.ones(2)
        return type("Out", (), {"latent_dist": type("Dist", (), {"mode": lambda self: mode})()})()


def test_held_out_clips_go_to_the_tokenizers_device_and_come_back():
    # the H100 (2026-11-27) found eval PSNR feeding CPU clips to a CUDA tokenizer during tokenizer training
    model, videos = _WhereItRuns(), torch.rand(3, 3, 5, 8, 8)
    out = reconstruct_mode(model, videos, batch=2)
    assert model.seen == ["meta", "meta"] and out.device == videos.device and out.shape == videos.shape
    model.seen.clear()
    latent_statistics(model, videos, num_clips=2)
    assert model.seen == ["meta", "meta"]


def test_autoregressive_pipeline_refuses_model_offload_and_says_what_to_do():
    pipe = load_pipeline("pretrained/shapes-autoregressive", dtype="fp32")
    for enable in (pipe.enable_model_cpu_offload, pipe.enable_sequential_cpu_offload):
        with pytest.raises(UnsupportedError, match=r"model offload is not supported .* pipe\.to\('cuda'\)"):
            enable()


def test_stream_decoding_goes_through_the_offload_hook():
    """The autoregressive and long-video paths decode chunk by chunk (``stream_decoder``): each chunk is hooked."""
    from vidgen.tokenizers import CausalVQVAE
    tok = CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4)).eval()
    ids = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    ref = tok.stream_decoder().push(ids)
    cpu_offload_with_hook(tok, execution_device="cpu")
    with hooked_modules() as calls:
        out = tok.stream_decoder().push(ids)
    assert calls == ["CausalVQVAE"], "a streamed chunk was decoded without the offload hook"
    torch.testing.assert_close(out, ref)

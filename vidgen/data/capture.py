"""What a camera adds to a clean rendered clip: brightness and white-balance drift, sensor noise and compression.

Each effect draws its strength from a ``torch.Generator``, so a degraded clip stays a pure function of the clip's
seed. Applied in this order, as in a camera: light reaches the sensor (drift), the sensor adds noise, the encoder
compresses. Strengths span "clean" to "a cheap phone in a dim room"; each effect is off in some clips, so the
tokenizer also sees clean footage.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from vidgen.errors import InvalidInputError

CODECS = ("none", "jpeg", "inter")
#: Frames between intra frames of the "inter" codec (H.264's default GOP is longer; 8 keeps the drift visible in
#: a 17-frame clip without letting it dominate).
GOP = 8


@dataclass(frozen=True)
class Capture:
    """Per-clip capture settings.

    ``gain`` and ``white`` go linearly from their first to their second value over the clip (white: RGB
    multipliers). ``read_noise`` is the std of additive noise, ``shot_noise`` the variance per unit of signal
    (brighter pixels are noisier), both on [0, 1] pixel values. ``codec``: "none"; "jpeg" (every frame coded alone);
    "inter" (an intra frame every ``GOP`` frames, the others code their difference to the previous decoded frame,
    so quantisation error carries over frames as in H.264's P-frames). ``quality``: JPEG quality 1-95.
    """

    gain: tuple[float, float] = (1.0, 1.0)
    white: tuple[tuple[float, float, float], tuple[float, float, float]] = ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    read_noise: float = 0.0
    shot_noise: float = 0.0
    codec: str = "none"
    quality: int = 90

    def __post_init__(self):
        if self.codec not in CODECS:
            raise InvalidInputError(f"Capture.codec must be one of {CODECS}, got {self.codec!r}")
        if not 1 <= int(self.quality) <= 95:
            raise InvalidInputError(f"Capture.quality is a JPEG quality in [1, 95], got {self.quality!r}")
        if self.read_noise < 0 or self.shot_noise < 0:
            raise InvalidInputError(f"noise strengths must be >= 0, got {self.read_noise!r}, {self.shot_noise!r}")


def sample_capture(generator: torch.Generator) -> Capture:
    """Random capture settings; each effect is present in roughly 60-70 % of clips."""

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    gain, white = (1.0, 1.0), ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    if uniform(0, 1) < 0.6:  # auto-exposure and auto white balance hunting, or the light changing
        gain = (uniform(0.75, 1.2), uniform(0.75, 1.2))
        white = tuple(tuple(uniform(0.88, 1.12) for _ in range(3)) for _ in range(2))
    read, shot = 0.0, 0.0
    if uniform(0, 1) < 0.65:
        read, shot = uniform(0.002, 0.03), uniform(0.0, 0.004)
    codec = CODECS[int(torch.randint(len(CODECS), (), generator=generator))]
    return Capture(gain, white, read, shot, codec, int(round(uniform(25, 92))))


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of one (H, W, 3) uint8 frame (4:2:0 chroma, as cameras and H.264 store colour)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=int(quality), subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [0, 1] -> (T, H, W, 3) uint8."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


def _compress(video01: torch.Tensor, codec: str, quality: int) -> torch.Tensor:
    frames = _to_uint8(video01)
    if codec == "jpeg":
        out = np.stack([_jpeg(f, quality) for f in frames])
    else:  # "inter": intra frames every GOP, otherwise the coded difference to the previous decoded frame
        out, previous = [], None
        for index, frame in enumerate(frames):
            if index % GOP == 0:
                decoded = _jpeg(frame, quality)
            else:
                residual = (frame.astype(np.int16) - previous.astype(np.int16)) // 2 + 128  # 2x coarser, centred
                coded = _jpeg(np.clip(residual, 0, 255).astype(np.uint8), quality).astype(np.int16)
                decoded = np.clip(previous.astype(np.int16) + (coded - 128) * 2, 0, 255).astype(np.uint8)
            out.append(decoded)
            previous = decoded
        out = np.stack(out)
    return torch.from_numpy(out).permute(3, 0, 1, 2).float() / 255.0


def apply_capture(video: torch.Tensor, capture: Capture, generator: torch.Generator) -> torch.Tensor:
    """Degrade a clean ``(3, T, H, W)`` clip in [-1, 1]; returns a new clip in [-1, 1] of the same shape."""
    if video.dim() != 4 or video.shape[0] != 3:
        raise InvalidInputError(f"apply_capture expects a (3, T, H, W) clip, got shape {tuple(video.shape)}")
    x = (video.float() + 1.0) / 2.0
    frames = x.shape[1]
    ramp = torch.linspace(0.0, 1.0, frames) if frames > 1 else torch.zeros(1)
    gain = capture.gain[0] + (capture.gain[1] - capture.gain[0]) * ramp  # (T,)
    white0, white1 = torch.tensor(capture.white[0]), torch.tensor(capture.white[1])
    white = white0[:, None] + (white1 - white0)[:, None] * ramp[None]  # (3, T)
    x = (x * (gain[None] * white)[..., None, None]).clamp(0.0, 1.0)
    if capture.read_noise > 0 or capture.shot_noise > 0:
        std = (capture.read_noise**2 + capture.shot_noise * x).sqrt()
        x = (x + std * torch.randn(x.shape, generator=generator)).clamp(0.0, 1.0)
    if capture.codec != "none":
        x = _compress(x, capture.codec, capture.quality)
    return (x * 2.0 - 1.0).contiguous()

"""Tokenizer training losses: pixel reconstruction, perceptual, hinge GAN and the adaptive GAN weight."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidgen.rng import GeneratorLike, rows


def temporal_difference_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean |(y[t] - y[t-1]) - (x[t] - x[t-1])| over ``(B, C, T, H, W)`` clips; 0 for single frames."""
    if x.shape[2] < 2:
        return x.new_zeros(())
    return (y.diff(dim=2) - x.diff(dim=2)).abs().mean()


def spatial_difference_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean |dy - dx| over the vertical and horizontal neighbour differences of ``(B, C, T, H, W)`` clips (or
    ``(B, C, H, W)`` images): L1 on the image gradient, so a blurred or misplaced edge costs directly."""
    dh = (y.diff(dim=-2) - x.diff(dim=-2)).abs().mean()
    dw = (y.diff(dim=-1) - x.diff(dim=-1)).abs().mean()
    return (dh + dw) / 2


def reconstruction_loss(x: torch.Tensor, y: torch.Tensor, l1_weight: float = 1.0, l2_weight: float = 0.0,
                        temporal_weight: float = 0.0, spatial_weight: float = 0.0) -> torch.Tensor:
    """Weighted mean absolute + mean squared error over all elements, plus the temporal- and spatial-difference
    terms."""
    loss = x.new_zeros(())
    if l1_weight:
        loss = loss + l1_weight * (x - y).abs().mean()
    if l2_weight:
        loss = loss + l2_weight * (x - y).pow(2).mean()
    if temporal_weight:
        loss = loss + temporal_weight * temporal_difference_loss(x, y)
    if spatial_weight:
        loss = loss + spatial_weight * spatial_difference_loss(x, y)
    return loss


class PerceptualLoss(nn.Module):
    """Perceptual distance on ``frames_per_video`` random frames of each video (frames cost the most here).

    ``distance`` is an ``nn.Module`` mapping two ``(N, 3, H, W)`` batches in [-1, 1] to ``(N,)`` (e.g. from
    ``vidgen.metrics.perceptual.load_perceptual``); it is frozen.
    """

    def __init__(self, distance: nn.Module, frames_per_video: int = 2):
        super().__init__()
        self.distance = distance.eval().requires_grad_(False)
        self.frames_per_video = frames_per_video
        self.name = getattr(distance, "name", type(distance).__name__)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.distance.eval()  # the feature network never leaves eval mode
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        k = min(self.frames_per_video, t)
        idx = rows(generator).rand(b, t).argsort(1)[:, :k].to(x.device)  # (B, k) distinct frames per video
        pick = idx[:, None, :, None, None].expand(b, c, k, h, w)
        xf = x.gather(2, pick).transpose(1, 2).reshape(b * k, c, h, w)
        yf = y.gather(2, pick).transpose(1, 2).reshape(b * k, c, h, w)
        return self.distance(xf.float(), yf.float()).mean()


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float = 1e4, reduce=None) -> torch.Tensor:
    """Taming-transformers' balance: ||d rec / d W_last|| / ||d gan / d W_last|| (detached, clamped).

    ``reduce`` averages a tensor over data-parallel processes (e.g. ``lambda t: accelerator.reduce(t, "mean")``):
    ``autograd.grad`` bypasses DDP's gradient averaging, and the weight must come from the global batch's
    gradients, as one process with the whole batch would compute it."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    if reduce is not None:
        rec_grad, gan_grad = reduce(rec_grad), reduce(gan_grad)
    return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()

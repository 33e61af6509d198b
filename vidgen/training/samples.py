"""Evaluation helpers used during training: held-out PSNR, latent statistics, reconstruction samples."""
from __future__ import annotations

from pathlib import Path

import torch

from vidgen.metrics.reconstruction import psnr


@torch.no_grad()
def reconstruct_mode(model, videos: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """Deterministic reconstruction (posterior mode / no sampling) in eval mode, ``batch`` clips at a time; each batch
    runs on the model's device and comes back to ``videos``' device (held-out clips stay on the CPU while it trains on
    a GPU)."""
    was_training = model.training
    model.eval()
    outs = [model.reconstruct(videos[i:i + batch].to(model.device), sample_posterior=False).sample.float().clamp(-1, 1)
            .to(videos.device) for i in range(0, videos.shape[0], batch)]
    model.train(was_training)
    return torch.cat(outs)


def evaluate_psnr(model, videos: torch.Tensor) -> float:
    return psnr(videos, reconstruct_mode(model, videos)).mean().item()


@torch.no_grad()
def latent_statistics(model, clips, num_clips: int) -> tuple[float, float]:
    """``shift_factor`` = mean and ``scaling_factor`` = 1 / std of posterior-mode latents over ``num_clips``."""
    model.eval()
    zs = [model.encode(clips[i][None].to(model.device)).latent_dist.mode().flatten().cpu()
          for i in range(min(num_clips, len(clips)))]
    z = torch.cat(zs).double()
    return float(z.mean()), float(1.0 / z.std().clamp_min(1e-8))


def save_samples(model, videos: torch.Tensor, out_dir: Path, step: int, fps: float = 8.0) -> None:
    """``out_dir/step_XXXXXXXX.mp4`` (original | reconstruction, side by side) and a PNG contact sheet."""
    from vidgen.io import contact_sheet, save_image, write_video

    recon = reconstruct_mode(model, videos)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    side = torch.cat([torch.cat([v, r], dim=-1) for v, r in zip(videos, recon)], dim=-2)  # (3, T, B*H, 2W)
    write_video(out_dir / f"step_{step:08d}.mp4", side, fps=fps)
    rows, labels = [], []
    for i, (v, r) in enumerate(zip(videos, recon)):
        rows += [v, r]
        labels += [f"clip{i} orig", f"clip{i} recon"]
    sheet = contact_sheet(rows, labels=labels)
    save_image(out_dir / f"step_{step:08d}.png", sheet)

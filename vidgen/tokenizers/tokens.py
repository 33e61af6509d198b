"""Video <-> the tokens a generator trains on and samples, for every tokenizer vidgen takes: one place for the rule.

    tokens = video_to_tokens(tokenizer, video)            # (B, 3, T, H, W) in [-1, 1] ->
                                                          #   ids (B, t, h, w) for a discrete tokenizer,
                                                          #   normalized posterior-mode latents (B, C, t, h, w) else
    video = tokens_to_video(tokenizer, tokens, T, H, W)   # back to (B, 3, T, H, W), exactly T frames

Shard encoding, the generators' ``encode_videos`` / ``decode_videos`` (conditioning frames, training on pixels) and
the diffusers transformer adapter all call these two functions.
"""
from __future__ import annotations

from typing import Optional

import torch

from vidgen.tokenizers.loading import is_discrete


@torch.no_grad()
def video_to_tokens(tokenizer, video: torch.Tensor, chunk_frames: Optional[int] = None) -> torch.Tensor:
    """``video`` (B, 3, T, H, W) in [-1, 1] -> the tokens a generator trains on (see the module docstring), on the
    tokenizer's device. ``chunk_frames``: encode that many frames at a time (memory flat in length)."""
    video = video.to(tokenizer.device, tokenizer.dtype)
    if is_discrete(tokenizer):
        return tokenizer.tokenize(video, chunk_frames=chunk_frames)
    return tokenizer.normalize_latents(tokenizer.encode(video, chunk_frames=chunk_frames).latent_dist.mode())


@torch.no_grad()
def tokens_to_video(tokenizer, tokens: torch.Tensor, num_frames: int, height: int, width: int,
                    chunk_frames: Optional[int] = None) -> torch.Tensor:
    """The inverse of :func:`video_to_tokens`: ids or normalized latents -> video (B, 3, num_frames, height, width)."""
    if is_discrete(tokenizer):
        return tokenizer.detokenize(tokens, num_frames, height, width, chunk_frames=chunk_frames)
    z = tokenizer.denormalize_latents(tokens.to(tokenizer.dtype))
    return tokenizer.decode(z, num_frames, height, width, chunk_frames=chunk_frames).sample

"""Input checks and conditioning shared by the video pipelines: every argument checked once before any work
(diffusers' ``check_inputs``), prompts / class labels / embeddings -> :class:`~vidgen.generators.Conditioning`,
conditioning frames -> given latent frames, and per-video generators."""
from __future__ import annotations

from typing import Sequence

import torch

from vidgen.errors import InvalidInputError
from vidgen.generators import Conditioning
from vidgen.generators.base import check_positive_int
from vidgen.text import check_prompts
from vidgen.tokenizers.causal_codec import check_video

OUTPUT_TYPES = ("np", "pil", "pt", "latent")


class PipelineInputsMixin:
    """``check_inputs``, ``_conditioning``, ``_encode_conditioning`` and ``_generators`` of
    :class:`~vidgen.pipelines.VideoPipelineBase`."""

    def check_inputs(self, *, prompt=None, negative_prompt=None, class_labels=None, prompt_embeds=None,
                     negative_prompt_embeds=None, num_frames: int, height: int, width: int,
                     num_videos_per_prompt: int = 1, generator=None, output_type: str = "np",
                     callback_on_step_end_tensor_inputs: Sequence[str] = (), decode_chunk_frames=None) -> int:
        """Every check of the inputs the pipelines share, once, before any work (diffusers' ``check_inputs``);
        each subclass adds the grid and inputs of its generator. Returns the number of videos."""
        self._check_components("transformer", self.video_tokenizer_name, *self.sampling_components)
        for name, value in (("num_frames", num_frames), ("height", height), ("width", width),
                            ("num_videos_per_prompt", num_videos_per_prompt)):
            check_positive_int(name, value)
        if decode_chunk_frames is not None:
            check_positive_int("decode_chunk_frames", decode_chunk_frames)
        if prompt is not None and prompt_embeds is not None:
            raise InvalidInputError("pass either prompt or prompt_embeds, not both")
        if class_labels is not None and (prompt is not None or prompt_embeds is not None):
            raise InvalidInputError("pass either a prompt (or prompt_embeds) or class_labels, not both: a model is "
                                    "conditioned on one of them")
        if prompt_embeds is not None and not isinstance(prompt_embeds, Conditioning):
            raise InvalidInputError("prompt_embeds must be a vidgen.generators.Conditioning "
                                    "(pipe.encode_prompt(...)[0] is one)")
        if prompt is not None:
            conditions = len(check_prompts(prompt))
        elif prompt_embeds is not None:
            conditions = prompt_embeds.batch_size() or 1
        elif class_labels is not None:
            conditions = torch.as_tensor(class_labels).numel()
        else:
            conditions = 1
        batch = conditions * num_videos_per_prompt
        if negative_prompt is not None or negative_prompt_embeds is not None:
            if prompt is None and prompt_embeds is None:
                raise InvalidInputError("negative_prompt needs a prompt (or prompt_embeds) to contrast with")
            if negative_prompt is not None:
                negs = check_prompts(negative_prompt, "negative_prompt")
                if len(negs) not in (1, conditions):
                    raise InvalidInputError(f"negative_prompt has {len(negs)} entries for {conditions} prompts")
            elif not isinstance(negative_prompt_embeds, Conditioning) or \
                    (negative_prompt_embeds.batch_size() or 0) * num_videos_per_prompt != batch:
                raise InvalidInputError(f"negative_prompt_embeds must be a Conditioning of batch {conditions} (one "
                                        "per prompt), like prompt_embeds")
        if output_type not in OUTPUT_TYPES:
            raise InvalidInputError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if output_type != "latent":  # at least one decoded video must fit (the tokenizer's estimate, smallest chunks)
            self.video_tokenizer.check_memory("num_frames / height / width", 1, num_frames, height, width,
                                              chunk_frames=1)
        bad = [k for k in callback_on_step_end_tensor_inputs or () if k not in self._callback_tensor_inputs]
        if bad:
            raise InvalidInputError(f"callback_on_step_end_tensor_inputs {bad} are not in "
                                    f"{list(self._callback_tensor_inputs)}")
        self._generators(generator, batch)
        self._check_frame_size(height, width)
        return batch

    def _check_frame_size(self, height: int, width: int) -> None:
        """A frame larger than the generator's ``max_grid`` holds, refused by its size in pixels (the token grid it
        would make is the generator's business, not the caller's)."""
        model, step = self.transformer, self.video_tokenizer.codec_config.spatial_compression
        if not hasattr(model, "backbone_config"):  # a diffusers transformer: its own checks
            return
        limit, patch = model.backbone_config.max_grid, model.patch.patch_size
        largest = [m * p * step for m, p in zip(limit[1:], patch[1:])]
        if height > largest[0] or width > largest[1]:
            raise InvalidInputError(f"height / width: {height}x{width} is larger than this model's largest frame, "
                                    f"{largest[0]}x{largest[1]} (max_grid {tuple(limit)} tokens of {patch[1]}x"
                                    f"{patch[2]} latent positions, {step}x{step} pixels each); pass a size of at most "
                                    f"{largest[0]}x{largest[1]}")

    def _conditioning(self, prompt, negative_prompt, class_labels, prompt_embeds, negative_prompt_embeds,
                      num_videos_per_prompt: int):
        """-> (batch size, cond, negative cond); the inputs were checked by :meth:`check_inputs`."""
        if prompt is not None:
            cond = self._encode_text(prompt, num_videos_per_prompt)
        elif prompt_embeds is not None:
            cond = prompt_embeds.repeat(num_videos_per_prompt)
        elif class_labels is not None:
            labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
            cond = Conditioning(class_labels=labels.to(self.transformer.device)).repeat(num_videos_per_prompt)
        else:
            cond = None
        batch = (cond.batch_size() if cond is not None else None) or num_videos_per_prompt
        negative = None
        if negative_prompt is not None:
            negs = check_prompts(negative_prompt, "negative_prompt")
            negs = negs * (batch // num_videos_per_prompt) if len(negs) == 1 else negs
            negative = self._encode_text(negs, num_videos_per_prompt)
        elif negative_prompt_embeds is not None:
            negative = negative_prompt_embeds.repeat(num_videos_per_prompt)
        return batch, cond, negative

    def _encode_conditioning(self, frames, latent_indices, grid, batch: int, num_frames: int, height: int,
                             width: int):
        """``conditioning_frames`` (B or 1, 3, Tc, H, W) in [-1, 1] -> (given latents / ids padded to ``grid``,
        given mask (B, t) over latent frames). Without ``latent_indices`` every latent frame that the first Tc
        frames complete is given (image-to-video, prediction); with them (e.g. ``[0, -1]`` for interpolation, from a
        full-length video) only those."""
        if frames is None:
            if latent_indices is not None:
                raise InvalidInputError("conditioning_latent_indices needs conditioning_frames")
            return None, None
        if not isinstance(frames, torch.Tensor) or frames.dim() not in (4, 5):
            raise InvalidInputError("conditioning_frames must be a (3, Tc, H, W) or (B, 3, Tc, H, W) tensor in [-1, 1]")
        frames = frames[None] if frames.dim() == 4 else frames
        check_video(frames, "conditioning_frames")  # float in [-1, 1] and finite: never cast from uint8 silently
        if frames.shape[0] not in (1, batch) or tuple(frames.shape[-2:]) != (height, width):
            batches = "1" if batch == 1 else f"1 or {batch}"
            raise InvalidInputError(f"conditioning_frames must have batch {batches} and frames of {height}x{width}, "
                                    f"got shape {tuple(frames.shape)}")
        tok = self.video_tokenizer
        tc = tok.codec_config.temporal_compression
        t = grid[0]
        if frames.shape[2] > num_frames:
            raise InvalidInputError(f"conditioning_frames has {frames.shape[2]} frames, more than num_frames="
                                    f"{num_frames}; pass at most num_frames of them (or ask for more frames)")
        if latent_indices is not None and not all(isinstance(i, int) and not isinstance(i, bool) and -t <= i < t
                                                  for i in latent_indices):
            raise InvalidInputError(f"conditioning_latent_indices must be whole numbers in [-{t}, {t - 1}] (this "
                                    f"call's {t} latent frames), got {list(latent_indices)}")
        # latent frames fully determined by the given frames (a full-length video determines all of them)
        complete = t if frames.shape[2] == num_frames else 1 + (frames.shape[2] - 1) // tc
        indices = list(range(min(complete, t))) if latent_indices is None else [i % t for i in latent_indices]
        for i in indices:
            if not 0 <= i < complete:
                raise InvalidInputError(f"conditioning_latent_indices: latent frame {i} needs frames up to "
                                        f"{1 + i * tc}, but conditioning_frames has {frames.shape[2]}")
        frames = frames.to(tok.device, tok.dtype).expand(batch, -1, -1, -1, -1)
        x = self.transformer.encode_videos(tok, frames)
        axis = 2 if x.dim() == 5 else 1
        x = x.narrow(axis, 0, min(x.shape[axis], t))
        pad = [0] * (2 * (x.dim() - axis - 1)) + [0, t - x.shape[axis]]
        x = torch.nn.functional.pad(x, pad)
        mask = torch.zeros(batch, t, dtype=torch.bool, device=x.device)
        mask[:, indices] = True
        return x, mask

    @staticmethod
    def _generators(generator, batch: int) -> list:
        """``None`` / one generator -> ``[g]`` (one batched call); a list must have one generator per video."""
        if isinstance(generator, (list, tuple)):
            if len(generator) != batch:
                raise InvalidInputError(f"generator: got a list of {len(generator)} generators for {batch} videos "
                                        "(prompts x num_videos_per_prompt); pass one per video or a single one")
            return list(generator)
        return [generator]

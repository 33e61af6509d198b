"""What every pipeline does for long videos and prompt schedules (:mod:`vidgen.pipelines.story` plans and runs the
chunks): :meth:`LongVideoMixin.stream`, the chunked ``__call__`` and the stream decoder. A pipeline adds ``_continue``:
its generator's call for one chunk."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Iterator, Optional

import torch

from vidgen.errors import InvalidInputError
from vidgen.pipelines.output import per_sample, to_output
from vidgen.generators.sampling_config import UNSET
from vidgen.pipelines.story import Story, first_output_frame, is_schedule, parse_schedule, plan_chunks
from vidgen.rng import check_generator
from vidgen.text import check_prompts


class LongVideoMixin:
    """Mixed into :class:`~vidgen.pipelines.base.VideoPipelineBase`: stories and videos longer than one window."""

    def _chunk_context(self, config, prompt, negative_prompt, given: bool) -> int:
        """The latent frames each chunk is given from before it: ``config.context_frames`` (the caller's, else the
        folder's ``sampling_config``). ``given``: whether the caller passed it."""
        return config.context_frames

    #: the axis of latent frames in this pipeline's latents: 1 for ids (B, t, h, w), 2 for (B, C, t, h, w)
    frame_axis = 1
    #: why this pipeline cannot continue a video (take ``conditioning_frames``), or None: it can, at any length
    continuation_refusal: Optional[str] = None

    @property
    def window(self) -> int:
        """Latent frames the generator makes in one call: its trained length (``max_grid[0]`` tokens in time)."""
        patch = getattr(getattr(self.transformer, "patch", None), "patch_size", (1, 1, 1))
        return self.transformer.backbone_config.max_grid[0] * patch[0]

    def is_story(self, prompt, negative_prompt, num_frames, height, width) -> bool:
        """Whether :meth:`stream` makes a call in chunks (:mod:`.story`): a prompt schedule, or more latent frames
        than one :attr:`window` (``__call__`` then does too, except the autoregressive pipeline's, which slides one
        prompt's context itself)."""
        if is_schedule(prompt) or is_schedule(negative_prompt):
            return True
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (num_frames, height, width)) \
                or self.transformer is None or self.video_tokenizer is None:
            return False  # check_inputs names the bad value or the missing component
        return self.video_tokenizer.latent_grid(num_frames, height, width)[0] > self.window

    def stream(self, prompt, *, num_frames: int, height: int = 64, width: int = 64, negative_prompt=None,
               num_videos_per_prompt: int = 1, generator=None, context_frames: Optional[int] = None,
               conditioning_frames: Optional[torch.Tensor] = None, output_type: str = "np", **settings) -> Iterator:
        """A video of any length, or a story (``prompt={frame_index: prompt}``, :mod:`.story` says where each
        prompt takes over), made chunk by chunk; yields each chunk's frames as soon as they are decoded:
        ``(B, n, H, W, 3)`` arrays in [0, 1] (``"np"``), ``(B, n, 3, H, W)`` tensors (``"pt"``), or each chunk's new
        latents along :attr:`frame_axis` (``"latent"``). The chunks concatenate to exactly ``num_frames`` frames and
        equal ``pipe(...)`` with the same arguments; memory does not grow with length. ``context_frames``: latent
        frames each chunk is given from before it; ``settings``: the other sampling settings of ``__call__`` (both
        default to :attr:`sampling_config`). ``conditioning_frames`` (B or 1, 3, Tc, H, W) in [-1, 1]: continue that
        video, as ``__call__`` does (:meth:`_continuation`). Everything is checked here, before the first chunk."""
        if output_type not in ("np", "pt", "latent"):
            raise InvalidInputError(f"output_type must be 'np', 'pt' or 'latent' for stream(), got {output_type!r}")
        check_generator(generator)
        config = self.sampling_config.replace(**settings, context_frames=UNSET if context_frames is None
                                              else context_frames)
        story = self._story(prompt, negative_prompt, num_frames, height, width, num_videos_per_prompt, generator,
                            config, context_frames is not None, output_type, conditioning_frames)
        parts = story.latents() if output_type == "latent" else story.frames()
        return (part if output_type == "latent" else to_output(part, output_type) for part in parts)

    def _story(self, prompt, negative_prompt, num_frames, height, width, num_videos_per_prompt, generator, config,
               context_given: bool, output_type, conditioning_frames=None) -> Story:
        tc = self.video_tokenizer.codec_config.temporal_compression
        segments = parse_schedule(prompt, num_frames, tc, negative_prompt)
        per_video = isinstance(generator, (list, tuple)) and len(generator) > 1
        decoder = None if output_type == "latent" else self._stream_decoder(height, width, per_video)
        window_frames = first_output_frame(self.window - 1, tc) + 1
        batch = self.check_inputs(prompt=segments[0].prompt, negative_prompt=segments[0].negative_prompt,
                                  num_frames=min(num_frames, window_frames), height=height, width=width,
                                  num_videos_per_prompt=num_videos_per_prompt, generator=generator,
                                  output_type=output_type)
        context = self._chunk_context(config, prompt, negative_prompt, context_given)
        t, h, w = self.video_tokenizer.latent_grid(num_frames, height, width)
        prefix = self._continuation(conditioning_frames, segments, batch, num_frames, height, width)
        chunks = plan_chunks(t, self.window, context, segments, given=0 if prefix is None else
                             prefix.shape[self.frame_axis])
        steps = getattr(config, "num_inference_steps", None)
        self._start_sampling(config.guidance_scale, len(chunks) * steps if steps else t)
        generators = self._generators(generator, batch)
        prompts = 1 if segments[0].prompt is None else len(check_prompts(segments[0].prompt))
        encoded: dict = {}

        def encode(text):  # each distinct prompt once; one negative prompt serves every prompt of the batch
            if text is None:
                return None
            texts = check_prompts(text)
            texts = texts * prompts if len(texts) == 1 else texts
            if tuple(texts) not in encoded:
                encoded[tuple(texts)] = self._encode_text(texts, num_videos_per_prompt)
            return encoded[tuple(texts)]

        def sample_chunk(index: int, given, new: int):
            seg = segments[index]
            return per_sample(lambda rows, g, cond, negative, given: self._continue(rows, g, cond, negative, given,
                                                                                    new, (h, w), config),
                              generators, batch, dict(cond=encode(seg.prompt), negative=encode(seg.negative_prompt),
                                                      given=given))

        story = Story(chunks, sample_chunk, self.frame_axis, num_frames, decoder, self.progress, prefix=prefix)
        story.batch = batch
        return story

    def _continuation(self, frames, segments, batch: int, num_frames: int, height: int, width: int):
        """``conditioning_frames`` of a long video or story -> the latents / ids of the latent frames its first Tc
        frames complete (all of them when it has every frame), kept exactly and continued chunk by chunk as in one
        window; None without frames. A prompt of a schedule cannot start inside them: nothing is sampled there."""
        if frames is None:
            return None
        tc = self.video_tokenizer.codec_config.temporal_compression
        t = self.video_tokenizer.latent_grid(num_frames, height, width)[0]
        given = frames.shape[-3] if isinstance(frames, torch.Tensor) and frames.dim() in (4, 5) else 0
        k = t if given >= num_frames else min(t, 1 + (max(given, 1) - 1) // tc)
        x, _ = self._encode_conditioning(frames, None, (k, height, width), batch, num_frames, height, width)
        for seg in segments[1:]:
            if seg.latent_start < k:
                raise InvalidInputError(
                    f"prompt: the prompt at frame {seg.frame} starts at latent frame {seg.latent_start}, inside the "
                    f"{k} latent frames the conditioning_frames give (output frames 0 to "
                    f"{first_output_frame(k, tc) - 1}, kept, not sampled); schedule it at frame "
                    f"{first_output_frame(k, tc)} or later, or pass fewer conditioning frames")
        return x

    def _story_call(self, prompt, negative_prompt, num_frames, height, width, num_videos_per_prompt, generator,
                    config, context_given: bool, output_type, return_dict, conditioning_frames, unsupported: dict):
        """``__call__`` of a long video or story: the chunks of :meth:`stream`, collected (``conditioning_frames``
        continue a video as :meth:`stream` does; ``unsupported``: the call's arguments of :attr:`story_refuses`)."""
        given = [name for name, value in unsupported.items() if value is not None]
        if given:
            raise InvalidInputError(f"{', '.join(given)}: not supported for long videos and prompt schedules (more "
                                    f"latent frames than the generator's window of {self.window}, or a prompt dict)")
        story = self._story(prompt, negative_prompt, num_frames, height, width, num_videos_per_prompt, generator,
                            config, context_given, output_type, conditioning_frames)
        if output_type != "latent":  # the collected frames must fit (stream() holds one chunk at a time)
            self.video_tokenizer.check_memory("num_frames / height / width", story.batch, num_frames, height, width,
                                              chunk_frames=1)
        if output_type == "latent":
            return self._finish(torch.cat(list(story.latents()), self.frame_axis), return_dict)
        return self._finish(to_output(torch.cat(list(story.frames()), 2), output_type), return_dict)

    def _decoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the tokenizer's stream decoder takes for this pipeline's latents (ids as they are)."""
        return x

    def _stream_decoder(self, height: int, width: int, per_video: bool):
        """``push(latents) -> frames``: one stream through the tokenizer, or one per video (with a generator list,
        each video must not depend on the rest of the batch). The first stream is made here, so a tokenizer without
        one fails before any sampling."""
        tok = self.video_tokenizer
        streams = {0: tok.stream_decoder(height, width)}

        def push(x):
            if not per_video:
                return streams.setdefault(0, tok.stream_decoder(height, width)).push(self._decoder_input(x))
            return torch.cat([streams.setdefault(i, tok.stream_decoder(height, width)).push(self._decoder_input(part))
                              for i, part in enumerate(x.split(1))])
        return SimpleNamespace(push=push)

    def _continue(self, rows: int, generator, cond, negative, given, new: int, hw: tuple, config):
        """The window of ``given`` latent frames (the last ones before it, or None), kept exactly, then ``new``
        latent frames continuing them under one prompt: each pipeline's generator call."""
        raise NotImplementedError

"""``CausalVideoPipeline``: text -> video of any length with a block-causal :class:`CausalFlowVideoTransformer` on a
``CausalVAE``, streamed.

The video is made chunk by chunk (``chunk_frames`` latent frames each): every chunk is denoised in a few Euler steps
while it attends the sink and the last ``window_chunks`` chunks through a rolling KV cache, then cached clean, and its
frames are decoded at once by the tokenizer's stream decoder. So :meth:`~CausalVideoPipeline.stream` hands out frames
as they are made, and memory does not grow with length. A ``prompt={frame: prompt}`` schedule switches the prompt at
a chunk boundary by re-encoding the cached chunks under the new prompt (LongLive's KV re-cache). ``__call__`` is the
same stream, collected. ``image=`` starts the stream from a frame: the image is encoded by the VAE as the first
latent chunk and committed clean, so frame 0 is the VAE's reconstruction of the image and every later chunk attends it
through the cache. Settings left out of a call come from ``pipe.sampling_config`` (a
:class:`~vidgen.generators.causal.CausalSamplingConfig`, the folder's ``sampling_config.json``).
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import torch

from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.generators.causal import CausalFlowVideoTransformer, CausalSamplingConfig
from vidgen.generators.causal_stream import stream_chunking, stream_latents
from vidgen.generators.flow_sampler import student_settings
from vidgen.generators.sampling_config import UNSET
from vidgen.pipelines.base import VideoPipelineBase
from vidgen.pipelines.call import VideoCall, sampling_entry
from vidgen.pipelines.conditions import first_chunk_latents, given_conditions
from vidgen.pipelines.output import to_output
from vidgen.pipelines.streaming import ChunkLoop
from vidgen.pipelines.story import first_output_frame, parse_schedule
from vidgen.rng import check_generator
from vidgen.text import check_prompts


class CausalVideoPipeline(VideoPipelineBase):
    video_tokenizer_name = "vae"
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ("latents",)  # the latents of the chunk being denoised
    sampling_config_class = CausalSamplingConfig
    frame_axis = 2  # latents (B, C, t, h, w)
    supports_sequence_parallel = False
    takes_first_frame = True  # image= starts the stream (the CLI's --init-video of one image)
    continuation_refusal = ("its block-causal stream starts from noise or from one image (image=); it has no "
                            "conditioning_frames")

    def __init__(self, vae, transformer: CausalFlowVideoTransformer, scheduler, text_encoder=None, tokenizer=None):
        super().__init__()
        if transformer is not None and vae is not None:  # a text-only pipeline (None components) is allowed
            transformer.check_tokenizer(vae)
        if scheduler is not None and "FlowMatch" not in type(scheduler).__name__:
            raise InvalidInputError(f"scheduler: the block-causal model is a flow-matching model and needs a "
                                    f"FlowMatch* scheduler, got {type(scheduler).__name__}")
        self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler, text_encoder=text_encoder,
                              tokenizer=tokenizer)

    @classmethod
    def from_teacher(cls, teacher_pipe, student: CausalFlowVideoTransformer) -> "CausalVideoPipeline":
        """The pipeline of a Self-Forcing ``student``: the teacher pipeline's VAE and text components, the student's
        scheduler, sampling at its largest step count and guidance 1."""
        spec = student.config.distillation
        if spec is None:
            raise InvalidInputError("student: not a distilled CausalFlowVideoTransformer (its config has no "
                                    "distillation); pipelines/distill.py with distill.student makes one")
        pipe = cls(teacher_pipe.vae, student, student.default_scheduler(), teacher_pipe.text_encoder,
                   teacher_pipe.tokenizer)
        pipe.sampling_config = CausalSamplingConfig(**student_settings(spec))
        return pipe

    def _sequence_parallel_refusal(self) -> str:
        return "it makes one chunk at a time against a KV cache"

    @sampling_entry
    def __call__(self, prompt=None, negative_prompt=None, num_frames: int = 17, height: int = 64, width: int = 64,
                 num_inference_steps: int = UNSET, guidance_scale: float = UNSET, window_chunks: Optional[int] = UNSET,
                 prompt_switch: str = UNSET, num_videos_per_prompt: int = 1, generator=None, output_type: str = "np", return_dict: bool = True,
                 callback_on_step_end: Optional[Callable] = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",), image=None, last_image=None,
                 video=None, strength=None, sp_size: int = 1):
        """``prompt``: a string, a list (one video each), or a schedule ``{frame_index: prompt}``. ``window_chunks``:
        attend fewer past chunks than the model keeps (faster; more is refused). ``prompt_switch``: at a
        scheduled prompt, ``"recache"`` the kept chunks under it (default) or ``"reset"`` the cache.
        ``callback_on_step_end(pipe, step, t, {"latents": chunk latents})`` after every denoising step of every chunk
        (``step`` counts over the whole video); ``pipe._interrupt = True`` ends the video after the current chunk
        (shorter than ``num_frames``). ``image``: the first frame (a PIL RGB image or a (3, H, W) tensor in [0, 1]
        of ``height`` x ``width``), encoded as the first latent chunk and kept clean; ``last_image``, ``video`` and
        ``strength`` are refused by name. The frames equal :meth:`stream`'s, collected."""
        return self._generate(VideoCall(
            prompt=prompt, negative_prompt=negative_prompt, num_frames=num_frames, height=height, width=width,
            num_videos_per_prompt=num_videos_per_prompt, generator=generator, output_type=output_type,
            return_dict=return_dict, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, image=image, last_image=last_image,
            video=video, strength=strength, sp_size=sp_size,
            settings=dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          window_chunks=window_chunks, prompt_switch=prompt_switch)))

    def _is_story_call(self, call: VideoCall) -> bool:
        return True  # every call is made as a stream

    def _check_conditions(self, call: VideoCall) -> None:
        """``image=`` starts the stream (checked in :meth:`_stream`); the other condition inputs are refused."""
        other = [n for n in given_conditions(call) if n != "image"]
        if other:
            raise UnsupportedError(f"{', '.join(other)}: {type(self).__name__} takes a first frame (image=) only; its "
                                   "block-causal stream makes each chunk after the earlier ones, so no chunk can "
                                   "attend a last frame or follow a video (first-last-frame and video-to-video run on "
                                   "a diffusers folder of such a pipeline class)")

    def _streamed_call(self, call: VideoCall, config):
        """The recipe's chunked step: the stream (:meth:`stream`), collected."""
        parts = self._stream(call.prompt, call.negative_prompt, call.num_frames, call.height, call.width,
                             call.num_videos_per_prompt, call.generator, config, call.output_type,
                             call.callback_on_step_end, call.callback_on_step_end_tensor_inputs, whole=True,
                             image=call.image)
        if call.output_type == "latent":
            return self._finish(torch.cat(list(parts), 2), call.return_dict)
        return self._finish(to_output(torch.cat(list(parts), 2), call.output_type), call.return_dict)

    def stream(self, prompt, *, num_frames: int, height: int = 64, width: int = 64, negative_prompt=None,
               num_videos_per_prompt: int = 1, generator=None, output_type: str = "np", image=None,
               **settings) -> Iterator:
        """A video of any length, or a story (``prompt={frame_index: prompt}``), yielded chunk by chunk as soon as
        each chunk's frames are decoded: ``(B, n, H, W, 3)`` arrays in [0, 1] (``"np"``), ``(B, n, 3, H, W)``
        tensors (``"pt"``), or each chunk's latents (``"latent"``). The chunks concatenate to exactly
        ``num_frames`` frames and equal ``pipe(...)`` with the same arguments; memory does not grow with length.
        ``settings``: ``num_inference_steps`` / ``guidance_scale`` / ``window_chunks`` / ``prompt_switch`` (default
        :attr:`sampling_config`). ``image``: start from this frame (as in ``pipe(...)``). Everything is checked here,
        before the first chunk."""
        if output_type not in ("np", "pt", "latent"):
            raise InvalidInputError(f"output_type must be 'np', 'pt' or 'latent' for stream(), got {output_type!r}")
        check_generator(generator)
        if "conditioning_frames" in settings:
            raise UnsupportedError(f"conditioning_frames: {type(self).__name__} cannot continue a video "
                                   f"({self.continuation_refusal}); use a masked, flow or autoregressive pipeline")
        if "context_frames" in settings:
            raise InvalidInputError("context_frames: the causal pipeline gives each chunk the earlier ones through its "
                                    "KV cache (the model's window_chunks and sink_chunks), not as context frames")
        parts = self._stream(prompt, negative_prompt, num_frames, height, width, num_videos_per_prompt, generator,
                             self.sampling_config.replace(**settings), output_type, image=image)
        return parts if output_type == "latent" else (to_output(p, output_type) for p in parts)

    def _stream(self, prompt, negative_prompt, num_frames, height, width, num_videos_per_prompt, generator, config,
                output_type, callback=None, callback_inputs=("latents",), whole: bool = False, image=None) -> Iterator:
        """Check everything, then return the generator of latent chunks (``output_type="latent"``) or of decoded
        frames (B, 3, n, H, W) in [-1, 1]; ``whole``: the frames are collected (the whole video must fit);
        ``image``: the first frame, its latent chunk committed clean."""
        tok, model = self.video_tokenizer, self.transformer
        tc = tok.codec_config.temporal_compression if tok is not None else 1
        segments = parse_schedule(prompt, num_frames, tc, negative_prompt)
        first = min(num_frames, first_output_frame(model.config.chunk_frames, tc) if model is not None else 1)
        batch = self.check_inputs(prompt=segments[0].prompt, negative_prompt=segments[0].negative_prompt,
                                  num_frames=num_frames if whole else first, height=height, width=width,
                                  num_videos_per_prompt=num_videos_per_prompt, generator=generator,
                                  output_type=output_type, callback_on_step_end_tensor_inputs=callback_inputs)
        t, h, w = tok.latent_grid(num_frames, height, width)
        model.backbone.check_grid(model.patch.grid((model.config.chunk_frames, h, w)))
        stream_chunking(model, config.window_chunks)
        given = None if image is None else self._first_chunk(image, num_frames, height, width, t, batch)
        switches = self._switches(segments, batch, num_videos_per_prompt)
        generators = self._generators(generator, batch)
        chunks = -(-t // model.config.chunk_frames)
        self._start_sampling(config.guidance_scale, (chunks - (given is not None)) * config.num_inference_steps)
        step_callback = self._step_callback(callback, callback_inputs, "latents")
        parts = [slice(0, batch)] if len(generators) == 1 else [slice(k, k + 1) for k in range(batch)]
        streams = [stream_latents(model, None, frames=t, hw=(h, w), batch=p.stop - p.start,
                                  num_inference_steps=config.num_inference_steps, generator=g,
                                  scheduler=type(self.scheduler).from_config(self.scheduler.config),
                                  prompts={j: tuple(None if c is None else c.index(p) for c in pair)
                                           for j, pair in switches.items()}, callback=step_callback,
                                  guidance=self._guidance, window_chunks=config.window_chunks,
                                  prompt_switch=config.prompt_switch,
                                  first_frames=None if given is None else given[p])
                   for p, g in zip(parts, generators)]
        latents = (torch.cat(chunk, 0) for chunk in zip(*streams))
        if output_type == "latent":
            return self._progressed(latents, chunks)
        return self._decoded(self._progressed(latents, chunks), num_frames, height, width, len(parts) > 1)

    def _first_chunk(self, image, num_frames: int, height: int, width: int, t: int, batch: int) -> torch.Tensor:
        """``image`` encoded as the stream's first latent chunk (B, C, chunk_frames, h, w), checked first."""
        c, tc = self.transformer.config.chunk_frames, self.video_tokenizer.codec_config.temporal_compression
        if t < c:
            raise InvalidInputError(f"num_frames={num_frames}: image= fills the first chunk of {c} latent frames "
                                    f"({1 + tc * (c - 1)} frames), more than the call makes; pass num_frames >= "
                                    f"{1 + tc * (c - 1)}")
        latents = first_chunk_latents(self.video_tokenizer, image, height=height, width=width, chunk_frames=c)
        return latents.to(self.transformer.device, torch.float32).expand(batch, -1, -1, -1, -1)  # as the noise

    def _switches(self, segments, batch: int, num_videos_per_prompt: int) -> dict:
        """``{chunk: (cond, negative)}`` for each segment of the schedule; a prompt must start at a chunk boundary."""
        c = self.transformer.config.chunk_frames
        prompts = len(check_prompts(segments[0].prompt)) if segments[0].prompt is not None else 1
        switches = {}
        for seg in segments:
            if seg.latent_start % c:
                tc = self.video_tokenizer.codec_config.temporal_compression
                before, after = (first_output_frame(seg.latent_start - seg.latent_start % c + k, tc) for k in (0, c))
                raise InvalidInputError(f"prompt: the prompt at frame {seg.frame} starts at latent frame "
                                        f"{seg.latent_start}, inside a chunk of {c} latent frames; a prompt switches "
                                        f"at a chunk boundary: schedule it at frame {before} or {after}")
            texts = [x if x is None else (check_prompts(x) * prompts if len(check_prompts(x)) == 1 else x)
                     for x in (seg.prompt, seg.negative_prompt)]
            cond = None if texts[0] is None else self._encode_text(texts[0], num_videos_per_prompt)
            negative = None if texts[1] is None else self._encode_text(texts[1], num_videos_per_prompt)
            switches[seg.latent_start // c] = (cond, negative)
        return switches

    def _progressed(self, latents: Iterator, chunks: int) -> Iterator:
        """The stream's chunks through the one chunk loop (progress and interrupt, :mod:`.streaming`)."""
        loop = ChunkLoop(self, chunks, "chunks")
        for x in latents:
            stop = loop.advance(1)
            yield x
            if stop:
                return
        loop.close()

    def _decoded(self, latents: Iterator, num_frames: int, height: int, width: int, per_video: bool) -> Iterator:
        """Each chunk's frames (B, 3, n, H, W) as soon as the stream decoder has them; exactly ``num_frames`` in all
        unless the call was interrupted."""
        decoder, left = self._stream_decoder(height, width, per_video), num_frames
        for x in latents:
            pixels = decoder.push(x)[:, :, :left]
            left -= pixels.shape[2]
            if pixels.shape[2]:
                yield pixels

    def _decoder_input(self, x):
        tok = self.video_tokenizer
        return tok.denormalize_latents(x.to(tok.dtype))

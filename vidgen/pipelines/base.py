"""What the three video pipelines share: loading and saving as diffusers does, the sampling config saved with the
folder (:mod:`vidgen.generators.sampling_config`), input checks, prompt encoding (:mod:`.text_encoding`), per-sample
generators, decoding and output conversion. Each pipeline subclass only says how its generator samples and checks
its own inputs.

Conventions follow diffusers: ``output_type`` ``"np"`` -> ``(B, T, H, W, 3)`` floats in [0, 1]; ``"pil"`` -> a
list (per video) of lists of PIL images; ``"pt"`` -> ``(B, T, 3, H, W)`` in [0, 1] (as diffusers' video
pipelines return it); ``"latent"`` -> the generator's latents / ids. A list of ``torch.Generator`` (one per
video) samples each video on its own, so a prompt and seed give the same video whatever else is in the batch.
"""
from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.generators import Conditioning
from vidgen.generators.base import check_positive_int
from vidgen.generators.sampling_config import SamplingConfig
from vidgen.pipelines.long_video import LongVideoMixin
from vidgen.pipelines.output import VideoPipelineOutput, to_output
from vidgen.pipelines.text_encoding import TextEncodingMixin
from vidgen.precision import resolve_dtype
from vidgen.text import check_prompts
from vidgen.tokenizers.causal_codec import check_video


OUTPUT_TYPES = ("np", "pil", "pt", "latent")


class VideoPipelineBase(TextEncodingMixin, LongVideoMixin, DiffusionPipeline):
    """Base of :class:`MaskedVideoPipeline`, :class:`FlowVideoPipeline`, :class:`AutoregressiveVideoPipeline`.

    Subclasses register ``transformer``, the video tokenizer as ``video_tokenizer_name`` (``"vae"`` / ``"vqvae"``),
    optional ``text_encoder`` + ``tokenizer`` (diffusers' names), and name their generator's sampling config
    (:attr:`sampling_config_class`).
    """

    video_tokenizer_name = "vae"
    #: whether ``dtype="auto"`` picks bf16 on a CPU with fast bf16 units, by measurement (eval/bench_pipelines.py)
    bf16_pays_on_cpu = True
    # without text components the offline default text encoder is loaded on first use; any other component may be
    # None too (a pipeline of only its text components runs encode_prompt), and sampling checks that they are there
    _optional_components = ["text_encoder", "tokenizer"]
    _callback_tensor_inputs: Sequence[str] = ("latents",)
    #: the generator's sampling settings: their defaults, checks and file (:mod:`vidgen.generators.sampling_config`)
    sampling_config_class: type = SamplingConfig
    #: components sampling needs besides the transformer and the video tokenizer
    sampling_components: tuple = ("scheduler",)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, dtype=None, torch_dtype=None, **kwargs):
        """diffusers' ``from_pretrained``: without a dtype every component loads as diffusers loads it (fp32), so a
        pipeline saved and loaded gives the same output. ``dtype`` takes a ``torch.dtype``, a precision name
        (``"fp32"``, ``"bf16"``, or ``"auto"``: bf16 where the device multiplies bf16 fast and, on a CPU, where this
        pipeline's bf16 sampling measured faster, :attr:`bf16_pays_on_cpu`; fp32 elsewhere) or, as diffusers' does, a
        dict per component with a ``"default"`` key. :func:`~vidgen.pipelines.load_pipeline`, ``vidgen generate``,
        the demo and the app default to ``"auto"`` (docs/precision.md). ``torch_dtype`` is diffusers' deprecated name
        for ``dtype``. In bf16 the components keep fp32 where numerics need it (quantizer rounding, sampling
        probabilities, the flow ODE state). The folder's ``sampling_config.json`` becomes :attr:`sampling_config`."""
        if torch_dtype is not None:
            if dtype is not None:
                raise InvalidInputError("pass either dtype or torch_dtype (its deprecated alias), not both")
            warnings.warn("torch_dtype is deprecated, use dtype (as diffusers does)", FutureWarning, stacklevel=2)
            dtype = torch_dtype
        device = kwargs.get("device_map") if kwargs.get("device_map") in ("cuda", "cpu") else None
        dtype = cls._resolve_dtype(dtype, device or ("cuda" if torch.cuda.is_available() else "cpu"))
        folder = Path(str(pretrained_model_name_or_path))
        # a bad sampling_config.json fails before the weights load
        sampling = cls.sampling_config_class.from_pretrained(folder, cls) if folder.is_dir() else None
        legacy = _legacy_text_tokenizer(folder, kwargs)
        if legacy is None:
            pipe = super().from_pretrained(pretrained_model_name_or_path, *args, dtype=dtype, **kwargs)
        else:  # diffusers would warn about the unexpected "text_tokenizer" entry
            verbosity = diffusers_logging.get_verbosity()
            diffusers_logging.set_verbosity_error()
            try:
                pipe = super().from_pretrained(pretrained_model_name_or_path, *args, dtype=dtype, **legacy, **kwargs)
            finally:
                diffusers_logging.set_verbosity(verbosity)
        pipe._sampling_config = sampling
        return pipe

    @classmethod
    def _resolve_dtype(cls, dtype, device: str):
        """None and ``torch.dtype`` values as diffusers takes them; precision names resolved for ``device``."""
        if isinstance(dtype, dict):
            if not all(isinstance(k, str) for k in dtype):
                raise InvalidInputError(f"dtype: a dict maps component names (and 'default') to dtypes, got {dtype!r}")
            return {k: cls._resolve_dtype(v, device) for k, v in dtype.items()}
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise ConfigError(f"dtype={dtype} is not supported; choose one of 'auto', 'fp32', 'bf16', a floating "
                              "torch.dtype, or a dict of them per component with a 'default' key")
        if dtype is None or isinstance(dtype, torch.dtype):
            return dtype
        if isinstance(dtype, str) and dtype == "auto" and device == "cpu" and not cls.bf16_pays_on_cpu:
            dtype = "fp32"
        return resolve_dtype(dtype, device, "dtype")

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' ``save_pretrained``, plus ``sampling_config.json`` (:attr:`sampling_config`)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        self.sampling_config.save_pretrained(save_directory)

    @property
    def sampling_config(self) -> SamplingConfig:
        """The sampling settings used for every ``__call__`` argument the caller leaves out: the folder's
        ``sampling_config.json``, or the defaults of :attr:`sampling_config_class`. Assign a config of that class, or
        a dict of settings (checked as the file is)."""
        if getattr(self, "_sampling_config", None) is None:
            self._sampling_config = self.sampling_config_class()
        return self._sampling_config

    @sampling_config.setter
    def sampling_config(self, config) -> None:
        if not isinstance(config, self.sampling_config_class):
            config = self.sampling_config_class.from_dict(config, "sampling_config", type(self))
        self._sampling_config = config

    @classmethod
    def call_inputs(cls) -> tuple:
        """The ``__call__`` arguments that are inputs, not sampling settings (named in the config file's errors)."""
        settings = set(cls.sampling_config_class.settings())
        return tuple(p for p in inspect.signature(cls.__call__).parameters if p != "self" and p not in settings)

    # ------------------------------------------------------------------ sampling state (diffusers' conventions)
    @property
    def guidance_scale(self) -> float:
        """The CFG scale in use: set by ``__call__``; a ``callback_on_step_end`` may change ``pipe._guidance_scale``
        and the following steps use the new value (e.g. CFG cut off after a fraction of the steps). CFG runs when
        the call starts with a scale other than 1 (:attr:`do_classifier_free_guidance`)."""
        return getattr(self, "_guidance_scale", None)

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale is not None and self.guidance_scale != 1.0

    @property
    def num_timesteps(self) -> int:
        """Steps of the current (or last) call, so a callback can tell which step is its last: the sampling steps
        (masked, flow) or the latent frames (autoregressive, whose callbacks come once per latent frame)."""
        return getattr(self, "_num_timesteps", None)

    @property
    def interrupt(self) -> bool:
        """Set ``pipe._interrupt = True`` in a callback to stop sampling after that step: flow decodes the latents
        as they are, masked fills the tokens still masked with that step's most likely ids, autoregressive ends
        the video after the latent frames made so far (with a warning naming the count)."""
        return getattr(self, "_interrupt", False)

    def _start_sampling(self, guidance_scale: float, num_timesteps: int) -> None:
        self._guidance_scale, self._num_timesteps, self._interrupt = guidance_scale, num_timesteps, False

    def _check_components(self, *names: str) -> None:
        """A pipeline built with only its text components (to run :meth:`encode_prompt`) cannot sample."""
        missing = [n for n in names if getattr(self, n, None) is None]
        if missing:
            raise InvalidInputError(f"{', '.join(missing)}: this {type(self).__name__} was built without "
                                    f"{'them' if len(missing) > 1 else 'it'} (a text-only pipeline runs encode_prompt "
                                    "only); load or pass every component to sample")

    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"bf16"``: the dtype the transformer computes in (its weights' dtype)."""
        return "bf16" if self.transformer.dtype == torch.bfloat16 else "fp32"

    # ------------------------------------------------------------------ components
    @property
    def video_tokenizer(self):
        """The registered video tokenizer, as vidgen's tokenizer interface: a diffusers video VAE registered as
        ``vae`` (saved as the diffusers class it is) is used through :class:`~vidgen.tokenizers.DiffusersVideoVAE`,
        wrapped once and again whenever the component is replaced."""
        return self._as_tokenizer(getattr(self, self.video_tokenizer_name, None))

    def _as_tokenizer(self, component):
        from vidgen.tokenizers import DiffusersVideoVAE, is_diffusers_video_vae
        if not is_diffusers_video_vae(component):
            return component
        cached = getattr(self, "_wrapped_tokenizer", None)
        if cached is None or cached.vae is not component:
            cached = self._wrapped_tokenizer = DiffusersVideoVAE(component)
        return cached

    def enable_vae_tiling(self, *args, **kwargs) -> None:
        """Decode large frames in overlapping, blended spatial tiles (the tokenizer's ``enable_tiling``)."""
        self.video_tokenizer.enable_tiling(*args, **kwargs)

    def disable_vae_tiling(self) -> None:
        self.video_tokenizer.disable_tiling()

    # ------------------------------------------------------------------ inputs
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
        return batch

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
            raise InvalidInputError(f"conditioning_frames must have batch 1 or {batch} and frames of {height}x{width}, "
                                    f"got shape {tuple(frames.shape)}")
        tok = self.video_tokenizer
        tc = tok.codec_config.temporal_compression
        t = grid[0]
        frames = frames[:, :, :num_frames]
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

    # ------------------------------------------------------------------ outputs
    def _step_callback(self, callback_on_step_end, tensor_inputs, key: str):
        """Adapt diffusers' ``callback_on_step_end(pipe, step, timestep, kwargs) -> dict`` to the samplers' per-step
        callback: the latents it returns, ``pipe._guidance_scale`` for the following steps, ``pipe._interrupt``."""
        if callback_on_step_end is None:
            return None

        def callback(i, t, tensors):
            given = {k: tensors[key] for k in tensor_inputs if k == "latents"}
            out = callback_on_step_end(self, i, t, given) or {}
            return {**({key: out["latents"]} if "latents" in out else {}), "guidance_scale": self._guidance_scale,
                    "interrupt": self.interrupt}
        return callback

    def _decode(self, x: torch.Tensor, num_frames: int, height: int, width: int, output_type: str,
                decode_chunk_frames: Optional[int], per_video: bool = False):
        """``per_video``: decode one video at a time (with a generator list: batched convolutions round
        differently, and each video must not depend on the rest of the batch)."""
        if output_type == "latent":
            return x
        parts = x.split(1) if per_video else [x]
        video = torch.cat([self.transformer.decode_videos(self.video_tokenizer, part, num_frames, height, width,
                                                          chunk_frames=decode_chunk_frames) for part in parts])
        return to_output(video, output_type)

    def _finish(self, frames, return_dict: bool):
        self.maybe_free_model_hooks()
        return VideoPipelineOutput(frames=frames) if return_dict else (frames,)

    def progress(self, total: Optional[int] = None) -> Callable:
        return lambda it: self.progress_bar(it, total=total) if it is not None else self.progress_bar(total=total)


def _legacy_text_tokenizer(folder: Path, kwargs: dict) -> Optional[dict]:
    """Folders that list the text tokenizer as ``text_tokenizer`` (vidgen's name for it up to 0.1) load with a
    FutureWarning: None for a folder that names it ``tokenizer``, else the keyword arguments that load it under that
    name."""
    index = folder / "model_index.json"
    if not index.is_file():
        return None
    try:
        entries = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # diffusers reports it
    spec = entries.get("text_tokenizer")
    if "tokenizer" in entries or not isinstance(spec, list):
        return None
    warnings.warn(f"{index}: the text tokenizer is listed as 'text_tokenizer'; it is 'tokenizer' now, as in diffusers "
                  "(the old key is read until vidgen 0.3). Save the pipeline again (save_pretrained) to update the "
                  "folder", FutureWarning, stacklevel=3)
    if spec[0] is None or "tokenizer" in kwargs:
        return {}
    from transformers import AutoTokenizer
    return {"tokenizer": AutoTokenizer.from_pretrained(str(folder / "text_tokenizer"))}

"""``AutoregressiveVideoTransformer``: next-token prediction over tokenizer ids (VideoGPT / LlamaGen / ViD-GPT).

Order: raster order within a latent frame, frames in time order, after the text / class prefix. The model input at
grid position ``i`` is the id of position ``i - 1`` (BOS = ``vocab_size`` at position 0) and its output predicts id
``i``, so 3D RoPE gives each query the (t, h, w) of the token it predicts. Attention is token-causal
(``causal="token"`` in :mod:`vidgen.attention`) on top of the backbone's layout.

Generation (gpt-fast): a caller-owned, preallocated KV cache; one prefill of prefix + BOS (+ given tokens), then
one-token decode steps that write their keys / values in place at ``start``. ``use_cache=False`` recomputes the
whole sequence each step (the reference path; the tests check both give the same tokens). CFG doubles the batch
once and feeds the one sampled token to both halves (LlamaGen). Videos longer than the model's ``max_grid[0]``
latent frames slide the context: each new latent frame is generated after a fresh prefill of the last
``max_grid[0] - 1`` frames (the tokenizer is causal, so decoded frames stay consistent); :func:`iter_frames` yields
latent frames one at a time for streaming through the tokenizer's ``stream_decoder``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, ClassVar, Iterator, Optional

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from vidgen.attention.kv_cache import ModelKVCache
from vidgen.errors import InvalidInputError, UnsupportedError
from vidgen.generators.base import (DiscreteTokensMixin, GeneratorMixin, check_loss_weight,
                                    check_positive_int, check_story, per_sample_mean, story_rows)
from vidgen.generators.compiled import compiled_decode_step
from vidgen.generators.cuda_graph import GraphedDecodeStep
from vidgen.generators.kv_decode import KVDecodeStep
from vidgen.generators.embeddings import Conditioning, IdPatches
from vidgen.generators.sampling import (Guidance, apply_cfg, cfg_batch, check_guidance, check_temperature, check_top_k,
                                       check_top_p, sample_logits)
from vidgen.generators.sampling_config import SamplingConfig, check_context_frames
from vidgen.rng import GeneratorLike, rows


class AutoregressiveVideoTransformer(DiscreteTokensMixin, GeneratorMixin, ModelMixin, ConfigMixin):
    """Token-causal transformer over ids ``(B, t, h, w)``; id ``vocab_size`` is BOS."""

    config_name = "config.json"
    training_only_config = GeneratorMixin.training_only_config + ("story_prob", "story_context")

    @register_to_config
    def __init__(self, vocab_size: int = 1000, cond_dropout: float = 0.1, patch_size=(1, 1, 1),
                 architecture: Optional[dict] = None, story_prob: float = 0.0, story_context: int = 1):
        super().__init__()
        if vocab_size < 2:
            raise InvalidInputError(f"vocab_size must be >= 2, got {vocab_size}")
        check_story(story_prob, story_context)
        if len(patch_size) != 3 or not all(isinstance(p, int) and p >= 1 for p in patch_size) or patch_size[0] != 1:
            raise InvalidInputError(f"patch_size must be (1, ph, pw) with ints >= 1 (ids per token within one latent "
                                    f"frame: the context slides by latent frames), got {patch_size!r}")
        self._build_shared(architecture, causal="token")
        d = self.backbone_config.dim
        # each token carries a patch of ids (one table per position in the patch, summed); its head predicts them all,
        # independently given the sequence so far
        self.patch = IdPatches(patch_size, vocab_size + 1, pad_id=vocab_size)
        self.token_embed = nn.Embedding((vocab_size + 1) * self.patch.size, d)  # + BOS, per position in a patch
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.head = nn.Linear(d, vocab_size * self.patch.size)

    @property
    def bos_token_id(self) -> int:
        return self.config.vocab_size

    def _shifted(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, P) ids per token -> the inputs: a BOS token first, then every token but the last."""
        bos = torch.full_like(patches[:, :1], self.bos_token_id)
        return torch.cat([bos, patches[:, :-1]], dim=1)

    def token_grid(self, grid) -> tuple[int, int, int]:
        """The token grid of an id ``grid`` (t, h, w): h and w divided by the patch (they must be multiples)."""
        if any(g % p for g, p in zip(grid, self.patch.patch_size)):
            raise InvalidInputError(f"id grid {tuple(grid)} is not a multiple of this model's patch_size "
                                    f"{self.patch.patch_size}")
        return self.patch.grid(grid)

    def embed_tokens(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, L) ids (one per token) or (B, L, P) ids of each token's patch -> (B, L, d)."""
        return self.token_embed(self.patch.offset(inputs if inputs.dim() == 3 else inputs[..., None])).sum(2)

    def forward_tokens(self, inputs: torch.Tensor, grid, vec: torch.Tensor, prefix=None, context=None,
                       kv_cache: Optional[ModelKVCache] = None, start: int = 0, sp=None) -> torch.Tensor:
        """inputs (B, L) or (B, L, P) shifted ids at token-grid positions ``[start - P, ...)`` -> logits
        (B, L, vocab_size), or (B, L, P, vocab_size) for 3-D inputs. ``grid``: the token grid; ``sp``: the
        sequence-parallel group the backbone splits over (:mod:`vidgen.parallel`; not with ``kv_cache``)."""
        out = self.backbone(self.embed_tokens(inputs), grid, vec, prefix=prefix, context=context,
                            num_prefix_tokens=self.num_prefix_tokens, kv_cache=kv_cache, start=start, sp=sp)
        logits = self.head(out)
        return logits.unflatten(-1, (self.patch.size, -1)) if inputs.dim() == 3 else logits

    def forward(self, ids: torch.Tensor, cond: Optional[Conditioning] = None, drop: Optional[torch.Tensor] = None,
                return_dict: bool = True, *, sp=None):
        """Teacher forcing: ids (B, t, h, w) -> logits (B, t, h, w, vocab_size), token i predicting its ids; ``sp``:
        the sequence-parallel group the backbone splits over (:mod:`vidgen.parallel`), None: unsplit."""
        self.check_ids(ids)
        b, grid = ids.shape[0], tuple(ids.shape[1:])
        prefix, context, vec = self.embed_condition(cond, b, drop)
        logits = self.forward_tokens(self._shifted(self.patch.group(ids)), self.token_grid(grid), vec, prefix, context,
                                     sp=sp)
        logits = self.patch.unpatchify(logits.flatten(2), grid)  # (B, t, h, w, V)
        return {"logits": logits} if return_dict else (logits,)

    def sample(self, grid, batch: int, cond: Optional[Conditioning] = None, config=None,
               num_inference_steps: Optional[int] = None, **options) -> torch.Tensor:
        """The uniform sampling call of every generator: ids (B, t, h, w). One step per token, so
        ``num_inference_steps`` must be None. ``config`` and keyword ``options`` as :func:`iter_frames`."""
        if num_inference_steps is not None:
            raise InvalidInputError("num_inference_steps: autoregressive sampling takes one step per token; pass None")
        return generate_tokens(self, cond, config, grid=grid, batch=batch, **options)

    def loss(self, ids: torch.Tensor, cond: Optional[Conditioning] = None, generator: GeneratorLike = None,
             weight: Optional[torch.Tensor] = None, *, sp=None) -> tuple[torch.Tensor, dict]:
        """Next-token cross-entropy on ids (B, t, h, w); ``weight``: optional (B, t, h, w) per-token weights (a
        weighted mean per sample, then the mean over samples); ``sp``: as :meth:`forward`."""
        check_loss_weight(weight, ids.shape)
        b = ids.shape[0]
        ids, weight = self.sample_story(ids, weight, generator)
        logits = self(ids, cond, drop=self.sample_drop(b, generator, ids.device), sp=sp)["logits"]
        if weight is None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids.reshape(-1))
        else:
            ce = F.cross_entropy(logits.float().flatten(1, -2).transpose(1, 2), ids.reshape(b, -1), reduction="none")
            loss = per_sample_mean(ce, weight.reshape(b, -1))
        with torch.no_grad():
            acc = (logits.argmax(-1) == ids).float().mean().item()
        return loss, {"ce": loss.item(), "acc": acc}

    def sample_story(self, ids: torch.Tensor, weight: Optional[torch.Tensor], generator: GeneratorLike):
        """Story training: with probability ``story_prob`` a clip's first ``story_context`` latent frames become the
        last ones of the next clip in the batch (another caption) and are not scored, so the model learns to draw its
        own caption after another clip's frames, which is what a story's chunk is given
        (:mod:`vidgen.pipelines.story`). Returns ``(ids, weight)``, unchanged when ``story_prob`` is 0."""
        b, t, k = ids.shape[0], ids.shape[1], self.config.story_context
        story = story_rows(generator, b, t, self.config.story_prob, k, ids.device)  # (B,)
        if story is None:
            return ids, weight
        ids = ids.clone()
        ids[story, :k] = ids.roll(-1, 0)[story, t - k:]  # the next clip's last k latent frames
        weight = torch.ones(ids.shape, device=ids.device) if weight is None else weight.clone()
        weight[story, :k] = 0  # given, as a story's context is
        return ids, weight


class _Sampler:
    """One window of generation: prefix + BOS + given tokens, then ``num_new`` sampled tokens.

    The settings were checked by :func:`iter_frames`; the prefill runs the generic (checked) model path once per
    window, the decode steps :class:`~vidgen.generators.kv_decode.KVDecodeStep` (``use_cache=True``) or the
    whole-sequence reference path. ``scale``: the guidance, read at every token (the caller may change it)."""

    def __init__(self, model: AutoregressiveVideoTransformer, cond, config: "AutoregressiveSamplingConfig",
                 scale: Callable[[], float], *, grid, batch: int, negative, generator, use_cache: bool,
                 compile=False):
        self.model, self.grid, self.batch = model, model.token_grid(grid), batch  # the token grid of the window
        self.sample_kw = dict(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                              generator=generator)
        self.scale = scale
        self.use_cache, self.compile = use_cache, compile
        both, drop, self.doubled = cfg_batch(cond, negative, batch, model.device, self.scale())
        rows = 2 * batch if self.doubled else batch
        with torch.no_grad():
            self.prefix, self.context, self.vec = model.embed_condition(both, rows, drop)
        self.rows = rows

    def _next(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # CFG, temperature, top-k / top-p and the draw in fp32 whatever the compute dtype
        if self.doubled:
            logits = apply_cfg(logits, self.scale())
        return sample_logits(logits, **self.sample_kw)  # (B,)

    def tokens(self, given: torch.Tensor, num_new: int, on_token: Optional[Callable] = None):
        """given (B, k, P) ids of the tokens at the start of the window -> yields the ids of each of the ``num_new``
        new tokens (B, P). A generator (the caller may stop early); no_grad wraps the model calls, never a yield."""
        model, p = self.model, self.model.num_prefix_tokens
        dup = (lambda x: torch.cat([x, x])) if self.doubled else (lambda x: x)  # noqa: E731
        bos = torch.full((self.batch, 1, model.patch.size), model.bos_token_id, dtype=torch.long, device=model.device)
        seq = torch.cat([bos, given], dim=1)  # (B, 1 + k, P): inputs for positions 0..k
        t, h, w = self.grid
        cfg = model.backbone_config
        decoder = None
        if self.use_cache:
            cache = ModelKVCache.allocate(cfg.depth, self.rows, cfg.num_heads, p + t * h * w, cfg.head_dim,
                                          model.compute_dtype, model.device)
            with torch.no_grad():  # prefill through the generic (validated) path, then the fast decoder
                logits = model.forward_tokens(dup(seq), self.grid, self.vec, self.prefix, self.context, cache, 0)
                logits = logits[:, -1]
                if num_new > 1:
                    decoder = KVDecodeStep(model, self.grid, self.vec, self.context, cache, model.compute_dtype,
                                           static=bool(self.compile))
                    if self.compile == "cuda_graph":
                        step = GraphedDecodeStep(decoder)
                    else:
                        step = compiled_decode_step(decoder) if self.compile else decoder.step
        new = []
        for i in range(num_new):
            with torch.no_grad():
                if decoder is not None and i > 0:  # one-token decode at the next position
                    pos = p + seq.shape[1] + i - 1
                    logits = step(dup(new[-1]), torch.tensor(pos) if self.compile is True else pos)
                    decoder.advance(pos)
                elif decoder is None and not self.use_cache:  # reference: the whole grid (later positions
                    inputs = torch.cat([seq] + [tok[:, None] for tok in new], dim=1)  # cannot leak back)
                    full = torch.cat([inputs, inputs.new_zeros(self.batch, t * h * w - inputs.shape[1],
                                                               inputs.shape[2])], dim=1)
                    logits = model.forward_tokens(dup(full), self.grid, self.vec, self.prefix,
                                                  self.context)[:, inputs.shape[1] - 1]
                token = self._next(logits)
            new.append(token)
            if on_token is not None:
                on_token(i, token)
            yield token


@dataclasses.dataclass(frozen=True)
class AutoregressiveSamplingConfig(SamplingConfig):
    """The autoregressive generator's sampling settings (:mod:`vidgen.generators.sampling_config`): CFG scale, the
    softmax ``temperature`` (0: greedy), ``top_k`` / ``top_p`` filters, and ``context_frames`` (latent frames each
    chunk of a story is given, :mod:`vidgen.pipelines.story`). One step per token: there are no steps to set."""

    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    context_frames: int = 1
    checks: ClassVar[dict] = {"guidance_scale": check_guidance, "temperature": check_temperature,
                              "top_k": check_top_k, "top_p": check_top_p, "context_frames": check_context_frames}


def check_grid(model: AutoregressiveVideoTransformer, grid) -> None:
    """An id grid (t, h, w) the model samples: any number of latent frames (the context slides), frames it takes."""
    t, h, w = grid
    model.backbone.check_grid(model.token_grid((min(t, model.backbone_config.max_grid[0]), h, w)))


def check_decode_mode(model: AutoregressiveVideoTransformer, compile, use_cache: bool) -> None:
    """``compile``: False (eager), True (torch.compile) or "cuda_graph" (CUDA graphs: a CUDA model, the cache on)."""
    if not (isinstance(compile, bool) or compile == "cuda_graph"):
        raise InvalidInputError(f"compile must be False, True or 'cuda_graph', got {compile!r}")
    if compile == "cuda_graph" and not use_cache:
        raise InvalidInputError("compile='cuda_graph' replays the cached decode step: it needs use_cache=True")
    if compile == "cuda_graph" and model.device.type != "cuda":
        raise UnsupportedError(f"compile='cuda_graph' replays the decode step on a CUDA device; the model is on "
                               f"{model.device}: use compile=True or False there")


def iter_frames(model: AutoregressiveVideoTransformer, cond: Optional[Conditioning] = None,
                config: Optional[AutoregressiveSamplingConfig] = None, *, grid, batch: int,
                negative: Optional[Conditioning] = None, generator: Optional[torch.Generator] = None,
                given_ids: Optional[torch.Tensor] = None, use_cache: bool = True,
                on_token: Optional[Callable] = None, compile=False, guidance: Optional[Guidance] = None,
                **settings) -> Iterator[torch.Tensor]:
    """Yield the ids of each latent frame ``(B, 1, h, w)`` in order (given frames first), for any ``grid[0]``:
    beyond ``max_grid[0]`` frames the context slides over the last ``max_grid[0] - 1`` frames. ``config`` (default
    :class:`AutoregressiveSamplingConfig`) with ``settings`` applied (:meth:`~SamplingConfig.replace`) gives the
    guidance, temperature and filters; everything is checked here, at the call. ``send(ids)`` with the ids so far
    ``(B, n, h, w)`` replaces them and generation continues from the replacement (a new prefill); ``send({"latents":
    ids or None, "guidance_scale": s})`` also sets the guidance of the tokens that follow. ``guidance``: the run's
    :class:`~vidgen.generators.sampling.Guidance` (read at every token), else one at ``config.guidance_scale``.

    ``use_cache=False`` is the reference path (the whole sequence every token). ``compile=True`` (with the cache)
    runs the decode step through ``torch.compile`` with static shapes (:mod:`vidgen.generators.compiled`): the first
    call of a shape compiles (tens of seconds), later calls reuse it. ``compile="cuda_graph"`` (CUDA only) replays
    the static decode step from a CUDA graph recorded once per window (:mod:`vidgen.generators.cuda_graph`)."""
    config = AutoregressiveSamplingConfig.resolve(config, settings)
    check_decode_mode(model, compile, use_cache)
    check_positive_int("batch", batch)
    check_grid(model, grid)
    if given_ids is not None:
        model.check_ids(given_ids, "given_ids")
        if given_ids.shape[0] != batch or given_ids.shape[2:] != tuple(grid[1:]) or given_ids.shape[1] > grid[0]:
            raise InvalidInputError(f"given_ids must have shape ({batch}, k <= {grid[0]}, {grid[1]}, {grid[2]}), "
                                    f"got {tuple(given_ids.shape)}")
    return _frames(model, cond, config, grid, batch, negative, generator, given_ids, use_cache, on_token, compile,
                   Guidance.of(guidance, config))


def _frames(model, cond, config, grid, batch, negative, generator, given_ids, use_cache, on_token, compile, guidance):
    """The generator behind :func:`iter_frames` (which checks its arguments before the first frame is asked for)."""
    t, h, w = grid
    ctx = model.backbone_config.max_grid[0]
    per_frame = math.prod(model.token_grid((1, h, w)))  # tokens per latent frame

    def receive(sent):  # -> the replacement ids or None; a dict may also set the guidance
        if isinstance(sent, dict):
            guidance.scale = sent.get("guidance_scale", guidance.scale)
            return sent.get("latents")
        return sent

    # 1. given frames first (the caller may replace them too)
    frames = [] if given_ids is None else list(given_ids.to(model.device).split(1, dim=1))
    k = 0
    while k < len(frames):
        replaced = receive((yield frames[k]))
        k += 1
        if replaced is not None:
            frames = _replace(model, replaced, batch, k, h, w) + frames[k:]
    # 2. the conditioning (CFG doubles the batch once) and the token sampler of one context window
    sampler = _Sampler(model, cond, config, lambda: guidance.scale, grid=(min(t, ctx), h, w), batch=batch,
                       negative=negative, generator=generator, use_cache=use_cache, compile=compile if use_cache else False)
    # 3. windows: prefill the given / previous frames, then one token per step; yield each finished latent frame
    none = torch.zeros(batch, 0, model.patch.size, dtype=torch.long, device=model.device)
    while len(frames) < t:
        if len(frames) < ctx:  # first window: all its remaining frames from one prefill
            given = model.patch.group(torch.cat(frames, 1)) if frames else none
            n_frames = min(t, ctx) - len(frames)
        else:  # slide: the last ctx-1 frames are the context of the next one
            given = model.patch.group(torch.cat(frames[-(ctx - 1):], 1)) if ctx > 1 else none
            n_frames = 1
        stream, row = sampler.tokens(given, n_frames * per_frame, on_token), []
        for token in stream:
            row.append(token)  # (B, P): the ids of one token's patch
            if len(row) < per_frame:
                continue
            frames.append(model.patch.ungroup(torch.stack(row, 1), (1, h, w)))
            row = []
            replaced = receive((yield frames[-1]))
            # 4. the caller changed the ids so far (send()): continue from its version
            if replaced is not None:
                frames = _replace(model, replaced, batch, len(frames), h, w)
                stream.close()
                break


def _replace(model, replaced: torch.Tensor, batch: int, n: int, h: int, w: int) -> list:
    if not isinstance(replaced, torch.Tensor) or tuple(replaced.shape) != (batch, n, h, w):
        raise InvalidInputError(f"replacement ids must have shape {(batch, n, h, w)}, "
                                f"got {tuple(getattr(replaced, 'shape', ()))}")
    model.check_ids(replaced, "replacement ids")
    return list(replaced.to(model.device).split(1, dim=1))


def generate_tokens(model: AutoregressiveVideoTransformer, cond: Optional[Conditioning] = None,
                    config: Optional[AutoregressiveSamplingConfig] = None, *, grid, batch: int,
                    **options) -> torch.Tensor:
    """All frames at once: ids (B, t, h, w). ``config`` and keyword ``options`` as :func:`iter_frames`."""
    return torch.cat(list(iter_frames(model, cond, config, grid=grid, batch=batch, **options)), dim=1)

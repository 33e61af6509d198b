"""What the video pipelines do with text: diffusers' ``encode_prompt`` and the text components behind it."""
from __future__ import annotations

import warnings
from typing import Optional

from vidgen.errors import InvalidInputError
from vidgen.generators import Conditioning
from vidgen.generators.base import check_positive_int
from vidgen.text import DEFAULT_TEXT_ENCODER, check_prompts, encode_prompts, load_text_encoder

#: prompt length of a text-only pipeline's encode_prompt (the shipped transformers' max_text_tokens)
DEFAULT_MAX_TEXT_TOKENS = 16


class TextEncodingMixin:
    """Mixed into :class:`~vidgen.pipelines.base.VideoPipelineBase`: prompts -> :class:`Conditioning`."""

    def encode_prompt(self, prompt, negative_prompt=None, num_videos_per_prompt: int = 1, prompt_embeds=None,
                      negative_prompt_embeds=None, max_text_tokens: Optional[int] = None):
        """diffusers' ``encode_prompt``: prompts -> ``(prompt_embeds, negative_prompt_embeds)``, each a
        :class:`~vidgen.generators.Conditioning` (per-token states, mask and pooled embedding) repeated
        ``num_videos_per_prompt`` times, to pass to ``__call__`` as ``prompt_embeds`` / ``negative_prompt_embeds``.
        Embeddings passed in are returned as they are; ``negative_prompt_embeds`` is None without a negative prompt
        (CFG then contrasts with the transformer's learned null condition). ``max_text_tokens``: the prompt length,
        by default the transformer's; a text-only pipeline (built with only its text components, e.g. to precompute
        embeddings on a small machine) takes it from here, else :data:`DEFAULT_MAX_TEXT_TOKENS`."""
        if prompt_embeds is None and prompt is not None:
            prompt_embeds = self._encode_text(prompt, num_videos_per_prompt, max_text_tokens)
        if negative_prompt_embeds is None and negative_prompt is not None:
            negatives = check_prompts(negative_prompt, "negative_prompt")
            if prompt is not None and len(negatives) == 1:
                negatives = negatives * len(check_prompts(prompt))
            negative_prompt_embeds = self._encode_text(negatives, num_videos_per_prompt, max_text_tokens)
        return prompt_embeds, negative_prompt_embeds

    def _encode_text(self, prompt, num_videos_per_prompt: int = 1,
                     max_text_tokens: Optional[int] = None) -> Conditioning:
        """Prompts -> one Conditioning, repeated ``num_videos_per_prompt`` times (:meth:`encode_prompt`)."""
        cfg = None if self.transformer is None else self.transformer.backbone_config
        if cfg is not None and not cfg.text_dim:
            raise InvalidInputError(f"prompt: this {type(self.transformer).__name__} is not text-conditioned "
                                    "(text_dim=0); pass class_labels or nothing")
        length = max_text_tokens or (cfg.max_text_tokens if cfg is not None else DEFAULT_MAX_TEXT_TOKENS)
        check_positive_int("max_text_tokens", length)
        tokenizer, encoder = self._text_components()
        # one prompt at a time: batched BERT kernels round differently, and a prompt + seed must give the same
        # video whatever else is in the batch (encoding costs milliseconds per prompt)
        emb = encode_prompts(tokenizer, encoder, check_prompts(prompt), length, batch_size=1)
        if emb.truncated:
            warnings.warn(f"prompt: {emb.truncated} prompt(s) longer than max_text_tokens={length} tokens were "
                          "truncated; the rest of the text is ignored", stacklevel=3)
        if cfg is None:  # text-only: on the text encoder's device, in its dtype
            return Conditioning(emb.hidden, emb.mask, emb.pooled).repeat(num_videos_per_prompt)
        if emb.hidden.shape[-1] != cfg.text_dim:
            raise InvalidInputError(f"text_encoder: gives {emb.hidden.shape[-1]}-d states, the transformer expects "
                                    f"text_dim={cfg.text_dim}")
        dev, dtype = self.transformer.device, self.transformer.dtype
        cond = Conditioning(emb.hidden.to(dev, dtype), emb.mask.to(dev), emb.pooled.to(dev, dtype))
        return cond.repeat(num_videos_per_prompt)

    def _text_components(self):
        """The registered text encoder, or the offline default loaded on first use (never saved with the pipeline,
        so shipped folders stay small)."""
        if getattr(self, "text_encoder", None) is not None and getattr(self, "tokenizer", None) is not None:
            return self.tokenizer, self.text_encoder
        if getattr(self, "_default_text", None) is None:
            self._default_text = load_text_encoder(self.config.get("text_encoder_name") or DEFAULT_TEXT_ENCODER)
        return self._default_text

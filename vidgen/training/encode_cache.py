"""Pre-encode a (captioned) video dataset once for generator training: tokenizer latents / ids + text embeddings.

Generators train on tokens, not pixels: encoding every clip through the tokenizer at every step would cost more
than the generator step itself on a CPU. The cache is one safetensors file (plus a JSON sidecar with the captions)
keyed by a hash of the tokenizer's weights and config, the generator's input kind, the data settings and the text
encoder, so a changed tokenizer or dataset never reuses a stale cache. Captions are encoded once per distinct text.
Under ``accelerate launch`` each process encodes its ``rank::world`` share; the main process joins them (equal to
a single-process encode, which a test checks).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vidgen.data.folder import folder_fingerprint
from vidgen.data.shards.fingerprint import tokenizer_fingerprint
from vidgen.errors import ConfigError
from vidgen.generators.flow import FlowVideoTransformer
from vidgen.training.data import check_folder_root

#: class label of a shapes clip = index of its (shape, colour, motion) in this order
def shapes_class_names() -> list[str]:
    from vidgen.data.shapes import COLORS, MOTIONS, SHAPES
    return [f"{c} {s} {m}" for s in SHAPES for c in COLORS for m in MOTIONS]


@dataclass
class EncodedDataset:
    x: torch.Tensor  # (N, C, t, h, w) latents or (N, t, h, w) ids
    caption_index: torch.Tensor  # (N,) long, row of the text tensors
    labels: torch.Tensor  # (N,) long class labels (-1 if none)
    captions: list  # distinct captions
    text_hidden: Optional[torch.Tensor] = None  # (U, M, D)
    text_mask: Optional[torch.Tensor] = None  # (U, M) bool
    text_pooled: Optional[torch.Tensor] = None  # (U, D)

    def __len__(self) -> int:
        return self.x.shape[0]

    def conditioning(self, index: torch.Tensor, kind: str):
        from vidgen.generators import Conditioning
        if kind == "text":
            rows = self.caption_index[index]
            return Conditioning(self.text_hidden[rows], self.text_mask[rows], self.text_pooled[rows])
        if kind == "class":
            return Conditioning(class_labels=self.labels[index])
        return None


def build_video_dataset(data_cfg):
    from vidgen.data import ShapesDataset, VideoFolder
    if data_cfg.dataset == "shapes":
        return ShapesDataset(data_cfg.split, num_frames=data_cfg.num_frames, size=data_cfg.size,
                             num_samples=data_cfg.num_clips, wrap=data_cfg.wrap,
                             motion_frames=data_cfg.motion_frames)
    if data_cfg.dataset == "folder":
        check_folder_root(data_cfg)
        folder = VideoFolder(data_cfg.root, num_frames=data_cfg.num_frames, size=data_cfg.size)
        if data_cfg.conditioning == "text" and not folder.metadata:
            raise ConfigError(f"data.root={data_cfg.root!r}: no captions for data.conditioning='text' (a "
                              "metadata.jsonl with one {\"file_name\": ..., \"text\": ...} line per video, the Hugging "
                              "Face videofolder layout); or set data.conditioning=none for an unconditional model")
        return folder
    raise ConfigError(f"data.dataset must be 'shapes', 'folder' or 'shards', got {data_cfg.dataset!r}")


def _label(item: dict, names: dict) -> int:
    key = f"{item.get('color')} {item.get('shape')} {item.get('motion')}"
    return names.get(key, -1)


@torch.no_grad()
def encode_items(generator_model, tokenizer, dataset, indices: list[int], batch: int, show: bool):
    """Encode ``dataset[i]`` for ``i`` in ``indices``: (x, captions, labels)."""
    names = {n: i for i, n in enumerate(shapes_class_names())}
    xs, captions, labels = [], [], []
    for s in tqdm(range(0, len(indices), batch), desc="pre-encoding clips", disable=not show, dynamic_ncols=True):
        items = [dataset[i] for i in indices[s:s + batch]]
        video = torch.stack([it["video"] for it in items]).to(tokenizer.device, tokenizer.dtype)
        xs.append(generator_model.encode_videos(tokenizer, video).cpu())
        captions += [it.get("caption", "") for it in items]
        labels += [_label(it, names) for it in items]
    return torch.cat(xs), captions, torch.tensor(labels, dtype=torch.long)


def cache_key(generator_model, tokenizer, data_cfg) -> str:
    settings = {k: getattr(data_cfg, k) for k in ("dataset", "root", "split", "num_frames", "size", "num_clips",
                                                  "conditioning", "text_encoder", "max_text_tokens")}
    if data_cfg.wrap:  # only when set, so caches written before the option keep their keys
        settings["wrap"] = data_cfg.wrap
    if data_cfg.motion_frames is not None:
        settings["motion_frames"] = data_cfg.motion_frames
    if data_cfg.dataset == "folder":  # what the folder holds, so changed videos or captions are encoded again
        check_folder_root(data_cfg)
        settings["folder"] = folder_fingerprint(data_cfg.root)
    # "kind": ids (True) or latents (False), as existing cache keys hold it
    settings.update(tokenizer=tokenizer_fingerprint(tokenizer), kind=not isinstance(generator_model, FlowVideoTransformer))
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def load_or_encode(generator_model, tokenizer, data_cfg, accelerator=None, log=print) -> EncodedDataset:
    """The cached :class:`EncodedDataset` for these settings, encoding (sharded over processes) if needed."""
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    key = [cache_key(generator_model, tokenizer, data_cfg)]  # on every rank, so a bad folder fails on each
    if world > 1:  # then rank 0's for all: a folder's fingerprint holds file times, which other nodes' copies may not
        torch.distributed.broadcast_object_list(key, src=0)
    path = Path(data_cfg.cache_dir) / f"{key[0]}.safetensors"
    sidecar = path.with_suffix(".json")
    if not (path.exists() and sidecar.exists()):
        dataset = build_video_dataset(data_cfg)
        mine = list(range(rank, len(dataset), world))
        x, caps, labels = encode_items(generator_model, tokenizer, dataset, mine, data_cfg.encode_batch, rank == 0)
        parts = [(mine, x, caps, labels)]
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, (mine, x, caps, labels))
            parts = gathered
        if rank == 0:
            order = sorted((i, p, j) for p, part in enumerate(parts) for j, i in enumerate(part[0]))
            x = torch.stack([parts[p][1][j] for _, p, j in order])
            caps = [parts[p][2][j] for _, p, j in order]
            labels = torch.stack([parts[p][3][j] for _, p, j in order])
            _write(path, sidecar, x, caps, labels, data_cfg)
            log(f"pre-encoded {len(caps)} clips -> {path}")
        if accelerator is not None:
            accelerator.wait_for_everyone()
    return _read(path, sidecar)


def _write(path: Path, sidecar: Path, x, captions, labels, data_cfg) -> None:
    distinct = sorted(set(captions))
    row = {c: i for i, c in enumerate(distinct)}
    tensors = {"x": x.contiguous(), "labels": labels,
               "caption_index": torch.tensor([row[c] for c in captions], dtype=torch.long)}
    if data_cfg.conditioning == "text":
        from vidgen.text import encode_prompts, load_text_encoder
        tok, enc = load_text_encoder(data_cfg.text_encoder or None)
        emb = encode_prompts(tok, enc, distinct, data_cfg.max_text_tokens)
        tensors.update(text_hidden=emb.hidden.contiguous(), text_mask=emb.mask, text_pooled=emb.pooled.contiguous())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    save_file(tensors, str(tmp))
    sidecar.with_name(f".{sidecar.name}.{os.getpid()}").write_text(json.dumps({"captions": distinct}))
    os.replace(sidecar.with_name(f".{sidecar.name}.{os.getpid()}"), sidecar)
    os.replace(tmp, path)  # the tensors land last: a cache is only read when both files exist


def _read(path: Path, sidecar: Path) -> EncodedDataset:
    t = load_file(str(path))
    captions = json.loads(sidecar.read_text())["captions"]
    return EncodedDataset(t["x"], t["caption_index"], t["labels"], captions, t.get("text_hidden"),
                          t.get("text_mask"), t.get("text_pooled"))

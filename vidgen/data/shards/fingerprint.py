"""Which tokenizer a dataset's tokens came from: a hash of its configuration and weights, recorded by the encode and
checked by every reader, so tokens are never trained on with another tokenizer than the one that made them."""
from __future__ import annotations

import hashlib
import json
from typing import Optional

from vidgen.errors import ShardError


def tokenizer_fingerprint(tokenizer) -> str:
    """16 hex digits of the SHA-256 of ``tokenizer.config`` and its ``state_dict()`` (any module with a diffusers-style
    ``config``). Where it was loaded from (diffusers' ``_name_or_path``) is left out: the same weights in two folders
    (each shipped pipeline carries a copy) share one fingerprint."""
    config = {k: v for k, v in dict(tokenizer.config).items() if k != "_name_or_path"}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(tokenizer.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def check_fingerprint(root, info: dict, expected: Optional[str]) -> None:
    """A :class:`ShardError` unless the dataset at ``root`` (its ``info``) was encoded with the tokenizer whose
    fingerprint is ``expected`` (None: any)."""
    got = info["tokenizer"]["fingerprint"]
    if expected is not None and got != expected:
        raise ShardError(f"{root}: encoded with another tokenizer (fingerprint {got}, from "
                         f"{info['tokenizer'].get('path')!r}); the configured tokenizer's is {expected}: "
                         f"encode the clips again with it")

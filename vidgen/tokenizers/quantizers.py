"""Quantizer bottlenecks (VQ, FSQ, LFQ, BSQ and residual VQ/FSQ) from ``vector-quantize-pytorch``.

They sit between the causal encoder and decoder like the KL bottleneck does, and add what a token interface
needs: ids of shape ``(B, t, h, w)`` (``(B, t, h, w, depth)`` for residual quantizers), ids back to codes, and
codebook-usage statistics. Ids are ``[0, vocab_size)``; no id is reserved (generators add their own above it).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn as nn
from einops import rearrange

from vidgen.errors import ConfigError, InvalidInputError
from vidgen.tokenizers.outputs import BottleneckOutput

QUANTIZERS = ("vq", "fsq", "lfq", "bsq")


@dataclass
class QuantizerConfig:
    """Which quantizer and its size. ``num_quantizers > 1`` gives residual VQ / FSQ (more bits per position)."""

    kind: str = "fsq"
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)  # 1000 codes, 4 dims
    lfq_bits: int = 10  # LFQ / BSQ: 2**bits codes, one dim per bit
    codebook_size: int = 1024  # VQ
    codebook_dim: int = 8  # VQ code dimension
    num_quantizers: int = 1
    commitment_weight: float = 0.25  # VQ, LFQ
    entropy_weight: float = 0.1  # LFQ / BSQ entropy (per-sample confidence + batch diversity) loss
    vq_decay: float = 0.99
    vq_cosine: bool = False
    vq_kmeans_init: bool = False
    vq_rotation_trick: bool = True
    fsq_entropy_weight: float = 0.0  # FSQ code-usage term (see fsq_entropy_loss); 0 = plain FSQ
    fsq_entropy_temperature: float = 0.5  # in squared level units: soft assignment of a value to nearby levels

    def __post_init__(self):
        try:
            self.fsq_levels = tuple(operator.index(v) for v in self.fsq_levels)
        except TypeError:
            raise ConfigError(f"fsq_levels must be a list of integers >= 2 (e.g. [8, 5, 5, 5]), got "
                              f"{self.fsq_levels!r}") from None
        if self.kind not in QUANTIZERS:
            raise ConfigError(f"quantizer must be one of {QUANTIZERS}, got {self.kind!r}")
        if self.num_quantizers < 1:
            raise ConfigError(f"num_quantizers must be >= 1, got {self.num_quantizers}")
        if self.num_quantizers > 1 and self.kind not in ("vq", "fsq"):
            raise ConfigError(f"residual quantization (num_quantizers > 1) is available for 'vq' and 'fsq', not {self.kind!r}")
        if self.kind == "fsq" and (len(self.fsq_levels) < 1 or min(self.fsq_levels) < 2):
            raise ConfigError(f"fsq_levels must be integers >= 2, got {self.fsq_levels}")
        if self.fsq_entropy_weight and (self.kind != "fsq" or self.num_quantizers > 1):
            raise ConfigError("fsq_entropy_weight applies to single-level FSQ only (quantizer='fsq', num_quantizers=1)")
        if self.fsq_entropy_weight < 0 or self.fsq_entropy_temperature <= 0:
            raise ConfigError(f"fsq_entropy_weight must be >= 0 and fsq_entropy_temperature > 0, got "
                              f"{self.fsq_entropy_weight} / {self.fsq_entropy_temperature}")
        if self.kind in ("lfq", "bsq") and not 1 <= self.lfq_bits <= 20:
            raise ConfigError(f"lfq_bits must be in [1, 20] (2**bits codes), got {self.lfq_bits}")

    @property
    def code_dim(self) -> int:
        """Channels the encoder emits and the decoder takes."""
        return {"fsq": len(self.fsq_levels), "lfq": self.lfq_bits, "bsq": self.lfq_bits, "vq": self.codebook_dim}[self.kind]

    @property
    def vocab_size(self) -> int:
        """Codes per position (per depth for residual quantizers)."""
        if self.kind == "fsq":
            return math.prod(self.fsq_levels)
        if self.kind in ("lfq", "bsq"):
            return 2 ** self.lfq_bits
        return self.codebook_size


def build_quantizer(cfg: QuantizerConfig) -> nn.Module:
    from vector_quantize_pytorch import FSQ, LFQ, ResidualFSQ, ResidualVQ, VectorQuantize

    if cfg.kind == "fsq":
        if cfg.num_quantizers > 1:
            return ResidualFSQ(levels=list(cfg.fsq_levels), num_quantizers=cfg.num_quantizers, dim=cfg.code_dim)
        return FSQ(levels=list(cfg.fsq_levels))
    if cfg.kind in ("lfq", "bsq"):
        return LFQ(dim=cfg.lfq_bits, codebook_size=2 ** cfg.lfq_bits, entropy_loss_weight=cfg.entropy_weight,
                   commitment_loss_weight=cfg.commitment_weight, spherical=cfg.kind == "bsq")
    vq_kwargs = dict(codebook_size=cfg.codebook_size, decay=cfg.vq_decay, commitment_weight=cfg.commitment_weight,
                     use_cosine_sim=cfg.vq_cosine, kmeans_init=cfg.vq_kmeans_init, rotation_trick=cfg.vq_rotation_trick,
                     threshold_ema_dead_code=2)
    if cfg.num_quantizers > 1:
        return ResidualVQ(dim=cfg.code_dim, num_quantizers=cfg.num_quantizers, **vq_kwargs)
    return VectorQuantize(dim=cfg.code_dim, **vq_kwargs)


def fsq_entropy_loss(z: torch.Tensor, levels: tuple[int, ...], temperature: float = 0.5) -> torch.Tensor:
    """Code-usage term for FSQ (LFQ's entropy loss, carried over): mean per-token entropy minus the entropy of the
    batch's average code distribution, over the joint codebook.

    Each axis value is softly assigned to its levels (``softmax(-(v - level)^2 / temperature)`` on FSQ's own bounded
    pre-rounding values); a token's code distribution is the product over axes. Maximising the entropy of the
    batch average spreads tokens over level *combinations*: FSQ's axes can each be used evenly while being
    correlated, which leaves much of the joint codebook unused.
    ``z``: ``(..., len(levels))`` encoder outputs before FSQ. Computed per process, like LFQ's.
    """
    lv = torch.tensor(levels, dtype=z.dtype, device=z.device)
    half_l = (lv - 1) * (1 + 1e-3) / 2  # vector-quantize-pytorch's FSQ.bound, before rounding
    offset = (lv % 2 == 0).to(z.dtype) * 0.5
    bounded = torch.tanh(z.reshape(-1, len(levels)) + torch.atanh(offset / half_l)) * half_l - offset  # (N, d)
    joint = None
    for axis, n in enumerate(levels):
        positions = torch.arange(n, dtype=z.dtype, device=z.device) - n // 2  # the integers it rounds to
        p = torch.softmax(-(bounded[:, axis:axis + 1] - positions).pow(2) / temperature, dim=-1)  # (N, n)
        joint = p if joint is None else (joint[:, :, None] * p[:, None, :]).flatten(1)  # (N, prod so far)
    per_token = -(joint * joint.clamp_min(1e-12).log()).sum(-1).mean()
    average = joint.mean(0)
    batch = -(average * average.clamp_min(1e-12).log()).sum()
    return per_token - batch


class QuantizerBottleneck(nn.Module):
    """Encoder features ``(B, D, t, h, w)`` -> quantized codes of the same shape, ids and the quantizer's loss."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        self.quantizer = build_quantizer(cfg)
        self.encoder_channels = self.decoder_channels = cfg.code_dim
        self.vocab_size = cfg.vocab_size
        self.depth = cfg.num_quantizers

    def quantize(self, features: torch.Tensor, update_codebook: bool = True):
        """Returns ``(codes (B, D, t, h, w), ids (B, t, h, w[, depth]), loss scalar)``.

        Rounding decisions, codebook distances and the loss are computed in fp32 with autocast off (bf16 has 8
        significant bits: FSQ values near a rounding boundary, and VQ distances between close codes, would flip);
        the codes come back in ``features``' dtype (straight-through gradients flow through that cast).
        """
        b, _, t, h, w = features.shape
        with torch.autocast(features.device.type, enabled=False):
            wide = features.to(torch.promote_types(features.dtype, torch.float32))
            tokens = rearrange(wide, "b d t h w -> b (t h w) d")
            codes, ids, loss = self._quantize_tokens(tokens, update_codebook)
        codes = rearrange(codes.to(features.dtype), "b (t h w) d -> b d t h w", t=t, h=h, w=w)
        ids = rearrange(ids.long(), "b (t h w) ... -> b t h w ...", t=t, h=h, w=w)
        return codes, ids, loss

    def _quantize_tokens(self, tokens: torch.Tensor, update_codebook: bool):
        if self.cfg.kind == "fsq":
            codes, ids = self.quantizer(tokens)
            loss = tokens.new_zeros(())
            if self.cfg.fsq_entropy_weight and torch.is_grad_enabled():
                loss = self.cfg.fsq_entropy_weight * fsq_entropy_loss(tokens, self.cfg.fsq_levels,
                                                                      self.cfg.fsq_entropy_temperature)
        elif self.cfg.kind in ("lfq", "bsq"):
            codes, ids, loss = self.quantizer(tokens)
        else:  # VQ: codebook EMA updates only when asked (tokenize never changes the model)
            codes, ids, loss = self.quantizer(tokens, freeze_codebook=not update_codebook)
            loss = loss.sum()
        return codes, ids, loss

    def _apply(self, fn, recurse: bool = True):
        """``.to(torch.bfloat16)`` & co. leave the quantizer's float state (VQ codebooks and their EMA statistics,
        LFQ/BSQ's code table) in fp32: the codebook is where bf16 rounding would change which code wins. Device
        moves and fp64 apply as usual."""
        super()._apply(fn, recurse)
        for module in self.modules():
            for store in (module._parameters, module._buffers):
                for key, value in store.items():
                    if value is not None and value.is_floating_point() and value.dtype.itemsize < 4:
                        if isinstance(value, nn.Parameter):
                            value.data = value.data.float()
                        else:
                            store[key] = value.float()
        return self

    def codes_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, t, h, w[, depth])`` -> decoder input ``(B, D, t, h, w)``."""
        self.check_ids(ids)
        b, t, h, w = ids.shape[:4]
        flat = rearrange(ids, "b t h w ... -> b (t h w) ...")
        if self.cfg.kind in ("fsq", "lfq", "bsq") and self.depth == 1:
            codes = self.quantizer.indices_to_codes(flat)
        else:
            codes = self.quantizer.get_output_from_indices(flat)
        return rearrange(codes, "b (t h w) d -> b d t h w", t=t, h=h, w=w)

    def check_ids(self, ids) -> None:
        expected = 5 if self.depth > 1 else 4
        layout = "(B, t, h, w, depth)" if self.depth > 1 else "(B, t, h, w)"
        if not isinstance(ids, torch.Tensor) or ids.ndim != expected:
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise InvalidInputError(f"ids must be a LongTensor of shape {layout}, got {shape}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise InvalidInputError(f"ids must be an int64 (or int32) tensor, got dtype {ids.dtype}")
        if self.depth > 1 and ids.shape[-1] != self.depth:
            raise InvalidInputError(f"ids depth axis must have size {self.depth}, got {ids.shape[-1]}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise InvalidInputError(f"ids must be in [0, {self.vocab_size}), got range [{ids.min().item()}, "
                                    f"{ids.max().item()}] (special ids such as mask/BOS belong to the generator)")

    def forward(self, features: torch.Tensor, sample: bool = True, generator=None) -> BottleneckOutput:
        codes, ids, loss = self.quantize(features, update_codebook=self.training)
        usage = CodebookUsage(self.vocab_size)
        usage.update(ids)
        logs = {"quant_loss": float(loss.detach()), "batch_utilization": usage.utilization,
                "batch_perplexity": usage.perplexity}
        return BottleneckOutput(codes, loss, logs)


class CodebookUsage:
    """Counts of every code over many batches: utilization (fraction of codes used) and perplexity."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.counts = torch.zeros(vocab_size, dtype=torch.float64)

    def update(self, ids: torch.Tensor) -> None:
        self.counts += torch.bincount(ids.detach().reshape(-1).cpu(), minlength=self.vocab_size).double()

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def utilization(self) -> float:
        return float((self.counts > 0).double().mean())

    @property
    def perplexity(self) -> float:
        """``exp(entropy)`` of the code distribution: the effective number of codes in use."""
        if self.total == 0:
            return 0.0
        p = self.counts / self.counts.sum()
        p = p[p > 0]
        return float(torch.exp(-(p * p.log()).sum()))

    def level_usage(self, levels: tuple[int, ...]) -> list[list[float]]:
        """Share of tokens at each level of each FSQ axis, ``[axis][level]``.

        Shows *why* utilization is low: rarely used extreme levels make every code that combines them rare.
        Ids follow FSQ's mixed radix: ``id = sum(level_i * prod(levels[:i]))`` (axis 0 varies fastest).
        """
        if math.prod(levels) != self.vocab_size:
            raise ConfigError(f"levels {tuple(levels)} give {math.prod(levels)} codes, not vocab_size {self.vocab_size}")
        grid = self.counts.reshape(tuple(reversed(levels)))  # (L_{n-1}, ..., L_0)
        n, total = len(levels), max(self.total, 1)
        shares = []
        for axis in range(n):
            other = tuple(d for d in range(n) if d != n - 1 - axis)
            per_level = grid.sum(dim=other) if other else grid
            shares.append((per_level / total).tolist())
        return shares

    def independent_axes_utilization(self, levels: tuple[int, ...]) -> float:
        """Expected utilization over ``total`` tokens if the FSQ axes were independent with the measured per-axis
        level shares. Far above the measured utilization means the axes are correlated (tokens concentrate on a
        subset of level combinations); close to it means rare levels are what leaves codes unused."""
        p = torch.ones(1, dtype=torch.float64)
        for axis in reversed(self.level_usage(levels)):  # outer products in id order: axis 0 varies fastest
            p = torch.outer(p, torch.tensor(axis, dtype=torch.float64)).flatten()
        return float((1 - (1 - p) ** self.total).mean())

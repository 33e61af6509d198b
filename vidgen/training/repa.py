"""Representation alignment (REPA, Yu et al. 2024, arXiv 2410.06940) for latent generator training; off by default.

With ``repa.weight > 0`` a generator training step adds an auxiliary term to the generator's own loss:

    loss = generator loss + repa.weight * (-mean over tokens of cos(projector(h), f))

* ``h``: the hidden video tokens after the first ``repa.depth`` transformer blocks (REPA's "encoder depth"), read by a
  forward hook on ``model.backbone.blocks[depth - 1]`` for the one forward pass of the step's loss; the hook is
  removed again before the loss returns (nothing of it stays on the model).
* ``projector``: a small trainable MLP (REPA's: Linear, SiLU, Linear, SiLU, Linear; ``repa.projector_dim`` wide)
  from the transformer width to the encoder's channels. It is optimized with the model, written into every checkpoint
  (``state.pt`` key ``repa_projector``) and restored on resume; it is not part of the saved generator folder, so the
  shipped model loads and samples without it. A portable checkpoint does not carry it (it restarts from its seeded
  initialisation on a continuation, as the optimizer's moments do).
* ``f``: features of the step's *clean* clips from a frozen pretrained image encoder. Training reads pre-encoded
  latents, so the clean pixels are the frozen video tokenizer's decoding of the step's clean latents (no gradient,
  ``repa.decode_batch`` clips at a time). Each latent frame is represented by one pixel frame, as the causal tokenizer
  maps them: latent frame 0 is pixel frame 0, latent frame ``k >= 1`` covers pixel frames ``(k-1)*tc + 1 .. k*tc``
  (``tc``: the tokenizer's temporal compression) and is represented by the centre one, ``(k-1)*tc + 1 + (tc-1)//2``
  (frame 4k-2 for tc = 4). The encoder's map at ``repa.layer`` is average-pooled to the token grid (also over latent
  frames when a token spans several), so every token has one target vector.

The encoder (``repa.encoder``) is a shift-tolerant LPIPS trunk shipped in the ``stlpips-pytorch`` package: the
anti-aliased, ImageNet-trained VGG16 (``stlpips-vgg``, default) or AlexNet (``stlpips-alex``) convolutions, loaded
offline through :func:`vidgen.metrics.perceptual.load_perceptual` (its conv trunk only). Its taps ``layer`` 1-5 are
LPIPS's; at 64x64 pixels VGG's layer 3 (conv3_3, 256 channels) is a 17x17 map, which pools to the 16x16 token grid of
a 64x64 clip under a 4x-spatial VAE with 1x1x1 patches. The map must be at least as large as the token grid.

Why it is not an evaluation network of the generators: generated videos are scored by FVD (the I3D Kinetics-400
network, :mod:`vidgen.metrics.fvd`), FID (NVIDIA's Inception 2015-12-05, :mod:`vidgen.metrics.fid`) and the shapes
prompt-adherence scorer (colour, motion and shape read off the pixels analytically, no learned network:
:mod:`vidgen.metrics.adherence`, thresholds from ``eval/calibrate_scorer.py``; ``eval/distill_tuning.py`` uses the
same scorer). The ST-LPIPS trunks are used only to compare a tokenizer's reconstruction with its input (the
tokenizer training loss and the reconstruction benchmarks), never to score a generated video; so aligning to them
does not train the generator toward the networks that grade it. I3D and Inception are refused by name.

Only generators over continuous latent tokens take it (``flow``, ``causal``); ``masked`` and ``autoregressive`` are
refused by name, as are sequence parallelism (the hook would see one rank's chunk of the tokens) and tasks that
replace the generator's loss (distillation). The term draws no random numbers: the step's seeded draws and a
bit-identical resume are unchanged, and at weight 0 nothing is built (no encoder, no hook, no cost).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidgen.errors import ConfigError, InvalidInputError, UnsupportedError

#: ``repa.encoder`` -> the ST-LPIPS trunk (``net`` of :func:`vidgen.metrics.perceptual.load_perceptual`)
ENCODERS = {"stlpips-vgg": "vgg", "stlpips-alex": "alex"}
#: the evaluation's feature networks, refused with the reason
EVALUATION_NETWORKS = {"i3d": "FVD's feature network", "inception": "FID's feature network"}
#: generators over continuous latent tokens (``model.generator``), the ones the term applies to
LATENT_GENERATORS = ("flow", "causal")
#: the checkpoint (``state.pt``) key of the projector
STATE_KEY = "repa_projector"


@dataclass
class RepaConfig:
    """``repa:`` of a generator training config (:class:`~vidgen.training.GeneratorTrainConfig`); see the module
    docstring. ``weight`` 0 (default) turns it off."""

    weight: float = 0.0  # the alignment term's weight; 0 = off (no encoder loaded, no hook, no cost)
    depth: int = 2  # align the output of the first `depth` transformer blocks (hook on backbone.blocks[depth - 1])
    encoder: str = "stlpips-vgg"  # a key of vidgen.training.repa.ENCODERS (never an evaluation network)
    layer: int = 3  # the encoder's tap, 1-5 (LPIPS's); its map is pooled to the token grid
    projector_dim: int = 512  # hidden width of the projector MLP
    decode_batch: int = 4  # clips decoded at a time for the target features
    _ranges = {"depth": (1, None), "layer": (1, 5), "projector_dim": (1, None), "decode_batch": (1, None)}

    def __post_init__(self):
        name = str(self.encoder).lower()
        if name in EVALUATION_NETWORKS:
            raise ConfigError(f"repa.encoder={self.encoder!r} is {EVALUATION_NETWORKS[name]}, used to evaluate the "
                              f"generators; choose one of {sorted(ENCODERS)}")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"repa.encoder={self.encoder!r} is unknown; choose one of {sorted(ENCODERS)}")

    @property
    def enabled(self) -> bool:
        return self.weight > 0


def check_repa(repa: RepaConfig, generator: str, model: nn.Module, sp_size: int = 1, task: str = "GeneratorTask",
               routing=None) -> None:
    """Refuse, by name, settings the term cannot run with: a generator without latent tokens, ``repa.depth`` beyond
    the model's blocks or inside the span of blocks that token ``routing`` (a ``RoutingConfig``) thins out, sequence
    parallelism, or a task that replaces the generator's loss."""
    if generator not in LATENT_GENERATORS:
        raise UnsupportedError(f"repa: model.generator={generator!r} has no continuous latent tokens; representation "
                               f"alignment applies to {' and '.join(LATENT_GENERATORS)} generators; set "
                               "repa.weight=0")
    if task != "GeneratorTask":
        raise UnsupportedError(f"repa: {task} replaces the generator's loss (e.g. distillation); representation "
                               "alignment applies to generator training (pipelines/train_generator.py); set "
                               "repa.weight=0")
    if sp_size > 1:
        raise UnsupportedError(f"repa: sp_size={sp_size} splits each clip's tokens over processes, and the alignment "
                               "needs every token of a clip in one process; set sp_size=1 or repa.weight=0")
    blocks = len(model.backbone.blocks)
    if not 1 <= repa.depth <= blocks:
        raise ConfigError(f"repa.depth={repa.depth}: this {generator} model has {blocks} transformer blocks; set "
                          f"repa.depth to 1..{blocks} (the number of blocks whose output is aligned)")
    if routing is not None and routing.ratio > 0:
        start, end = routing.span(blocks)
        if start <= repa.depth - 1 < end:
            raise UnsupportedError(f"repa.depth={repa.depth}: block {repa.depth - 1} is in the routed span [{start}, "
                                   f"{end}) (routing.ratio={routing.ratio}), where it sees part of each clip's tokens; "
                                   f"set repa.depth <= {start} or > {end}, or routing.ratio=0")


class FrozenEncoder(nn.Module):
    """An ST-LPIPS trunk up to tap ``layer``: ``(N, 3, H, W)`` frames in [-1, 1] -> ``(N, C, h, w)`` features. Frozen:
    no parameter takes a gradient, and it stays in eval mode whatever ``train()`` asks."""

    def __init__(self, name: str = "stlpips-vgg", layer: int = 3):
        super().__init__()
        from vidgen.metrics.perceptual import load_perceptual
        if name not in ENCODERS:
            raise ConfigError(f"repa.encoder={name!r} is unknown; choose one of {sorted(ENCODERS)}")
        distance = load_perceptual("stlpips", ENCODERS[name])  # MissingWeightsError names the package
        self.name, self.layer = name, layer
        self.trunk = nn.Sequential(*(getattr(distance.net, f"slice{k}") for k in range(1, layer + 1)))
        self.register_buffer("shift", distance.shift.clone())  # LPIPS's input scaling
        self.register_buffer("scale", distance.scale.clone())
        self.weights_sha256 = distance.weights_sha256
        self.channels = [m for m in self.trunk.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenEncoder":
        return super().train(False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.trunk((frames - self.shift.to(frames.dtype)) / self.scale.to(frames.dtype))

    @torch.no_grad()
    def map_size(self, height: int, width: int) -> tuple[int, int]:
        """The spatial size of the feature map of ``height`` x ``width`` frames."""
        return tuple(self(self.shift.new_zeros(1, 3, height, width)).shape[-2:])


def projector(dim: int, hidden: int, out: int) -> nn.Sequential:
    """REPA's projector MLP from the transformer width ``dim`` to the encoder's ``out`` channels."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, out))


def representative_frames(latent_frames: int, temporal_compression: int, num_frames: int) -> list[int]:
    """The pixel frame that stands for each latent frame: 0 for latent frame 0, the centre of pixel frames
    ``(k-1)*tc + 1 .. k*tc`` for latent frame ``k`` (clamped to the clip's last frame)."""
    tc = temporal_compression
    return [0] + [min((k - 1) * tc + 1 + (tc - 1) // 2, num_frames - 1) for k in range(1, latent_frames)]


def alignment(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """REPA's term: minus the mean over tokens of the cosine similarity, ``projected`` and ``target`` ``(B, N, C)``."""
    return -F.cosine_similarity(projected.float(), target.float(), dim=-1).mean()


def video_tokens(hidden: torch.Tensor, num_prefix: int, grid, depth: int) -> torch.Tensor:
    """The video tokens ``(B, N, d)`` of a block's output ``(B, P + N, d)`` (``P`` prefix tokens, e.g. text)."""
    n = math.prod(grid)
    if hidden.dim() != 3 or hidden.shape[1] != num_prefix + n:
        raise UnsupportedError(f"repa.depth={depth}: block {depth - 1}'s output holds {tuple(hidden.shape)} tokens, "
                               f"not the clip's {num_prefix} prefix + {n} video tokens (a block that sees part of the "
                               "tokens, e.g. token routing); choose a depth whose block sees every token")
    return hidden[:, num_prefix:]


class AlignedLoss(nn.Module):
    """``forward(x, cond, generator, repa_target=..., **kw)`` = the generator's loss + weight * :func:`alignment`; the
    loss module of a run with REPA (one forward per step for DDP; the projector is a submodule, so its gradients are
    reduced with the model's). ``repa_target``: ``(B, C, t, h, w)`` features on the token grid."""

    def __init__(self, model: nn.Module, proj: nn.Module, depth: int, weight: float):
        super().__init__()
        self.model, self.projector = model, proj
        self.depth, self.weight = depth, float(weight)

    def forward(self, x, cond, generator, repa_target=None, **kwargs):
        if repa_target is None:
            raise InvalidInputError("repa_target: the alignment loss needs the step's target features")
        seen = []

        def capture(module, args, kw, output):
            grid = args[2] if len(args) > 2 else kw["grid"]
            prefix = args[3] if len(args) > 3 else kw.get("num_prefix_tokens", 0)
            seen.append((output, prefix, grid))

        handle = self.model.backbone.blocks[self.depth - 1].register_forward_hook(capture, with_kwargs=True)
        try:
            loss, logs = self.model.loss(x, cond, generator, **kwargs)
        finally:
            handle.remove()
        if len(seen) != 1:
            raise UnsupportedError(f"repa: block {self.depth - 1} ran {len(seen)} times in one loss call; the "
                                   "alignment needs exactly one forward pass of the transformer per step")
        hidden, prefix, grid = seen[0]
        tokens = video_tokens(hidden, prefix, grid, self.depth)
        target = repa_target.flatten(2).transpose(1, 2)  # (B, N, C), tokens in (t, h, w) order
        if target.shape[:2] != tokens.shape[:2]:
            raise InvalidInputError(f"repa_target: {tuple(repa_target.shape)} does not match the {tuple(grid)} token "
                                    f"grid of batch {tokens.shape[0]}")
        term = alignment(self.projector(tokens), target.to(tokens.device))
        return loss + self.weight * term, {**logs, "generator_loss": loss.detach(), "repa": term.detach()}


class RepresentationAlignment:
    """What a generator training task needs for REPA: the frozen encoder, the projector, the loss module and the
    target features of a step's clean latents (see the module docstring)."""

    def __init__(self, cfg, model: nn.Module, tokenizer, device, sp=None, task: str = "GeneratorTask", log=print):
        repa: RepaConfig = cfg.repa
        check_repa(repa, cfg.model.generator, model, sp.size if sp is not None else 1, task,
                   getattr(cfg, "routing", None))
        self.cfg, self.model, self.tokenizer = repa, model, tokenizer
        with torch.random.fork_rng(devices=[]):  # no draw of the run's global RNG: weight 0 and >0 runs start alike
            torch.manual_seed(cfg.seed)
            self.encoder = FrozenEncoder(repa.encoder, repa.layer)
            self.projector = projector(model.backbone.cfg.dim, repa.projector_dim, self.encoder.channels)
        self.encoder.to(device)
        self.projector.to(device)
        self.temporal_compression = int(tokenizer.codec_config.temporal_compression)
        log(f"REPA: weight {repa.weight}, output of block {repa.depth} of {len(model.backbone.blocks)} aligned with "
            f"{repa.encoder} layer {repa.layer} ({self.encoder.channels} channels) through a "
            f"{sum(p.numel() for p in self.projector.parameters()) / 1e6:.2f} M-parameter projector")

    def loss_module(self, model: nn.Module) -> AlignedLoss:
        return AlignedLoss(model, self.projector, self.cfg.depth, self.cfg.weight)

    def token_grid(self, latent_grid) -> tuple:
        return tuple(self.model.patch.grid(tuple(latent_grid)))

    def check_geometry(self, pixels, latent_grid) -> None:
        """Refuse, before the first step, an encoder map smaller than the token grid of clips of ``pixels`` =
        (frames, height, width)."""
        _, th, tw = self.token_grid(latent_grid)
        mh, mw = self.encoder.map_size(*pixels[1:])
        if mh < th or mw < tw:
            raise ConfigError(f"repa.layer={self.cfg.layer}: {self.cfg.encoder}'s map of {pixels[1]}x{pixels[2]} "
                              f"frames is {mh}x{mw}, smaller than the {th}x{tw} token grid; choose an earlier layer")

    @torch.no_grad()
    def target(self, latents: torch.Tensor, pixels) -> torch.Tensor:
        """Target features ``(B, C, t', h', w')`` on the token grid of the clean normalized ``latents`` ``(B, C, t, h,
        w)`` of clips of ``pixels`` = (frames, height, width)."""
        frames, height, width = pixels
        t = latents.shape[2]
        pick = torch.tensor(representative_frames(t, self.temporal_compression, frames), device=latents.device)
        chunks = []
        for part in latents.split(self.cfg.decode_batch):
            video = self.model.decode_videos(self.tokenizer, part, frames, height, width)  # (b, 3, T, H, W)
            chosen = video.index_select(2, pick).transpose(1, 2).flatten(0, 1)  # (b * t, 3, H, W)
            chunks.append(self.encoder(chosen.to(self.encoder.shift.dtype)).float())
        feats = torch.cat(chunks)  # (B * t, C, h_f, w_f)
        tt, th, tw = self.token_grid(latents.shape[2:])
        feats = F.adaptive_avg_pool2d(feats, (th, tw))
        feats = feats.unflatten(0, (latents.shape[0], t)).transpose(1, 2)  # (B, C, t, th, tw)
        return feats if tt == t else F.adaptive_avg_pool3d(feats, (tt, th, tw))

"""The optimizer of a training run: AdamW (``optim.optimizer: adamw``, the default) or Muon for the hidden matrices.

With ``optim.optimizer: muon`` the 2-D weights of the linear layers inside the backbone's blocks (attention q/k/v and
output projections, cross-attention, the MLP) are optimized by :class:`Muon`, ``torch.optim.Muon`` with its
Newton-Schulz iteration in float32 off CUDA (momentum ``optim.muon_momentum`` with Nesterov, 5 Newton-Schulz steps,
learning rate ``optim.muon_lr`` scaled per matrix shape by ``optim.muon_adjust_lr``: torch's ``adjust_lr_fn``, e.g.
``match_rms_adamw`` for Moonlight's scaling, under which ``muon_lr`` may equal AdamW's ``lr``). Everything else (patch embedding and head, conditioning embeddings, the shared
adaLN modulation, each block's modulation table, norms, biases) keeps AdamW with the ``optim`` settings.

The two are stepped as one :class:`MuonAdamW`, a ``torch.optim.Optimizer`` whose ``param_groups`` are those of both,
so the run's one LR schedule (warm-up + cosine) scales each group from its own initial learning rate, gradient
clipping and ``accelerate.prepare`` see one optimizer, and a checkpoint holds both states (``state_dict``: ``adamw``
and ``muon``). A task says which of its parameters are hidden matrices (:meth:`TrainingTask.muon_params
<vidgen.training.trainer.TrainingTask.muon_params>`); tasks that do not (tokenizers, fine-tuning) refuse ``muon``.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from vidgen.errors import ConfigError, UnsupportedError

OPTIMIZERS = ("adamw", "muon")
#: torch.optim.Muon's ``adjust_lr_fn`` choices: the per-matrix learning-rate scaling
MUON_ADJUST_LR = ("original", "match_rms_adamw", "spectral_unclamped")
#: distributed modes whose parameters are sharded over processes (Muon needs each whole matrix)
SHARDED = ("FSDP", "DEEPSPEED", "MEGATRON_LM")


def check_optimizer(optim) -> None:
    """Refuse (``ConfigError``) an unknown ``optim.optimizer`` or ``optim.muon_adjust_lr``."""
    if optim.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optim.optimizer must be one of {OPTIMIZERS}, got {optim.optimizer!r}")
    if optim.muon_adjust_lr not in MUON_ADJUST_LR:
        raise ConfigError(f"optim.muon_adjust_lr must be one of {MUON_ADJUST_LR} (torch.optim.Muon's adjust_lr_fn), "
                          f"got {optim.muon_adjust_lr!r}")


def hidden_matrices(backbone: nn.Module) -> list[nn.Parameter]:
    """The weights of the linear layers inside ``backbone.blocks``: what Muon optimizes."""
    return [m.weight for block in backbone.blocks for m in block.modules() if isinstance(m, nn.Linear)]


def orthogonalize(update: torch.Tensor, coefficients, steps: int, eps: float, dtype) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration (Keller Jordan's coefficients): ``update`` (2-D) mapped close to the
    orthogonal factor of its SVD, computed in ``dtype``."""
    a, b, c = coefficients
    x = update.to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def _shape_scale(rule, shape) -> float:
    """torch.optim.Muon's ``adjust_lr_fn`` factor for a ``shape`` (fan-out, fan-in) matrix."""
    fan_out, fan_in = shape[:2]
    if rule == "match_rms_adamw":
        return 0.2 * max(fan_out, fan_in) ** 0.5
    if rule == "spectral_unclamped":
        return (fan_out / fan_in) ** 0.5
    return max(1.0, fan_out / fan_in) ** 0.5


def _closure_loss(closure):
    """``torch.optim.Optimizer.step``'s contract: re-evaluate the loss with gradients on, if a closure is given."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` (its settings, state and update) with the Newton-Schulz iteration in bfloat16 on CUDA, as
    torch computes it, and in float32 on other devices: without bf16 units a CPU multiplies bf16 matrices hundreds
    of times slower than fp32 ones (the stage-7 model's 24 matrices on one core of a 2-core CPU machine, measured
    once: about 13.5 s a step in bf16, 0.55 s in fp32)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)
            lr, momentum = float(group["lr"]), group["momentum"]
            for param, grad, buffer in zip(params, grads, buffers):
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                dtype = torch.bfloat16 if param.device.type == "cuda" else torch.float32
                update = orthogonalize(update, group["ns_coefficients"], group["ns_steps"], group["eps"], dtype)
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update.to(param.dtype), alpha=-lr * _shape_scale(group["adjust_lr_fn"], param.shape))
        return loss


class _States(Mapping):
    """The inner optimizers' per-parameter states as one read-only mapping (never creating an entry, as their
    defaultdicts would on a lookup)."""

    def __init__(self, states: list):
        self.maps = states

    def __getitem__(self, param):
        for state in self.maps:
            if param in state:
                return state[param]
        raise KeyError(param)

    def __iter__(self):
        return (param for state in self.maps for param in state)

    def __len__(self) -> int:
        return sum(len(state) for state in self.maps)


class MuonAdamW(torch.optim.Optimizer):
    """AdamW over ``adamw_params`` and Muon over ``muon_params`` (2-D), stepped as one optimizer (module docstring).

    ``param_groups`` are AdamW's groups then Muon's (the same dicts the two optimizers read), so a scheduler's
    changes reach both; ``state_dict()`` is ``{"adamw": ..., "muon": ...}``."""

    def __init__(self, adamw_params, muon_params, *, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0,
                 muon_lr: float = 0.02, muon_momentum: float = 0.95, muon_weight_decay: float = 0.0,
                 muon_adjust_lr: str = "original"):
        adamw_params, muon_params = list(adamw_params), list(muon_params)
        if not muon_params:
            raise ConfigError("optim.optimizer=muon: none of the trained parameters is a hidden matrix; set "
                              "optim.optimizer=adamw")
        super().__init__(adamw_params + muon_params, {})
        self.inner = {}
        if adamw_params:
            self.inner["adamw"] = torch.optim.AdamW(adamw_params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        self.inner["muon"] = Muon(muon_params, lr=muon_lr, momentum=muon_momentum, nesterov=True,
                                 weight_decay=muon_weight_decay, adjust_lr_fn=muon_adjust_lr)
        self._link()

    def _link(self) -> None:
        """Share the inner optimizers' groups and state (again after ``load_state_dict``, which replaces them)."""
        self.param_groups = [g for opt in self.inner.values() for g in opt.param_groups]
        self.state = _States([opt.state for opt in self.inner.values()])

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for opt in self.inner.values():
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.inner.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.inner.items()}

    def load_state_dict(self, state_dict: dict) -> None:
        if set(state_dict) != set(self.inner):
            found = "AdamW's" if "param_groups" in state_dict else f"of {sorted(state_dict)}"
            raise ConfigError(f"resume: the checkpoint's optimizer state is {found}, not that of this run's "
                              f"optim.optimizer=muon ({sorted(self.inner)}); resume with the optimizer that wrote it, "
                              "or start a fresh run in another run_dir")
        for name, opt in self.inner.items():
            opt.load_state_dict(state_dict[name])
        self._link()


def build_optimizer(cfg, task, acc=None, log=None) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optim`` names over ``task.params``: AdamW, or :class:`MuonAdamW` with Muon for the
    parameters :meth:`task.muon_params` names (refused under FSDP / DeepSpeed, which shard the matrices)."""
    o = cfg.optim
    if o.optimizer == "adamw":
        return torch.optim.AdamW(task.params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    mode = getattr(getattr(acc, "distributed_type", None), "name", "NO")
    if mode in SHARDED:
        raise UnsupportedError(f"optim.optimizer=muon under {mode}: Muon orthogonalizes each whole weight matrix, "
                               "which this mode shards over processes; train with DDP (configs/accelerate/ddp.yaml) "
                               "or set optim.optimizer=adamw")
    matrices = {id(p) for p in task.muon_params()}
    muon = [p for p in task.params if id(p) in matrices]
    adamw = [p for p in task.params if id(p) not in matrices]
    if log is not None:
        count = lambda ps: f"{len(ps)} tensors, {sum(p.numel() for p in ps) / 1e6:.2f} M"  # noqa: E731
        log(f"optimizer: Muon for the hidden matrices ({count(muon)}), AdamW for the rest ({count(adamw)})")
    return MuonAdamW(adamw, muon, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, muon_lr=o.muon_lr,
                     muon_momentum=o.muon_momentum, muon_weight_decay=o.muon_weight_decay,
                     muon_adjust_lr=o.muon_adjust_lr)


def check_resume(saved_config: dict | None, cfg) -> None:
    """Refuse (``ConfigError``) a checkpoint written with another ``optim.optimizer`` than this run's."""
    saved = ((saved_config or {}).get("optim") or {}).get("optimizer", "adamw")
    if saved != cfg.optim.optimizer:
        raise ConfigError(f"resume: the checkpoint was written with optim.optimizer={saved}, this run sets "
                          f"optim.optimizer={cfg.optim.optimizer}; resume with {saved}, or start a fresh run in another "
                          "run_dir")

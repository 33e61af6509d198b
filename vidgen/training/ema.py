"""Exponential moving average of model weights (kept in fp32, evaluated with ``copy_model``).

An average restarted from the weights part-way through a run (:meth:`EMA.restart`: a continuation from a portable
checkpoint that could not carry the EMA) warms its decay up again, as diffusers' ``EMAModel`` does:
``min(decay, (1 + n) / (10 + n))`` at its n-th update since the restart. Without the warm-up the restart's weights
would keep ``decay ** n`` of the average (55 % after 600 steps at 0.999). A run's first average, made from the
starting weights, uses ``decay`` from its first update.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


def _fp32_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().float() for k, v in model.state_dict().items()}


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = _fp32_copy(model)
        self.since_restart: int | None = None  # updates since restart(); None: no warm-up

    def restart(self, model: nn.Module) -> None:
        """Start the average again from ``model``'s weights, its decay warmed up from there."""
        self.shadow = _fp32_copy(model)
        self.since_restart = 0

    def current_decay(self) -> float:
        if self.since_restart is None:
            return self.decay
        n = self.since_restart
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        for k, v in model.state_dict().items():
            if self.shadow[k].device != v.device:  # made (or resumed) before the model moved to its device
                self.shadow[k] = self.shadow[k].to(v.device)
            if v.is_floating_point():
                self.shadow[k].lerp_(v.float(), 1.0 - decay)
            else:
                self.shadow[k].copy_(v)
        if self.since_restart is not None:
            self.since_restart += 1

    def copy_model(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` carrying the averaged weights."""
        ema_model = copy.deepcopy(model)
        ema_model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
        return ema_model

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow, "since_restart": self.since_restart}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.since_restart = state.get("since_restart")
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}

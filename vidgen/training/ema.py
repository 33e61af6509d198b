"""Exponential moving average of model weights (kept in fp32, evaluated with ``swap_into``)."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if self.shadow[k].device != v.device:  # made (or resumed) before the model moved to its device
                self.shadow[k] = self.shadow[k].to(v.device)
            if v.is_floating_point():
                self.shadow[k].lerp_(v.float(), 1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def copy_model(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` carrying the averaged weights."""
        ema_model = copy.deepcopy(model)
        ema_model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
        return ema_model

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}

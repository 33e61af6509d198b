"""Deepen a trained generator without changing what it computes, to train the deeper model from there.

Issue #34: flow's shape score did not move with 0.48 M more clips at the `small` preset (35.9 % on the tuning prompts
before and after, configs/shapes-flow/stage6.yaml), so capacity is the next question; a preset trained from scratch
would throw away what the shipped model learned. Each old block ``i`` is followed by ``factor - 1`` new blocks that
start as copies of it with their residual branches' output layers at zero (attention, cross-attention and MLP
outputs), so every new block is the identity and the deeper model computes exactly what the shipped one does; the
copied input layers give those zeroed outputs non-zero gradients from the first step. (Zeroing the adaLN gates would
not do: adaLN-single shares one modulation, so a trained model's gates are not zero for a fresh block.)

    python experiments/grow_depth.py --source pretrained/shapes-flow/transformer --factor 2 --out /tmp/flow_deep
    # then train with init_from: /tmp/flow_deep and the same overrides plus depth (e.g. flow_shapes_deep_gpu.yaml)
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from vidgen.generators import GENERATORS


def grow_depth(model: torch.nn.Module, factor: int) -> torch.nn.Module:
    """A new fp32 model of ``factor`` times the depth of ``model`` (any vidgen generator) that computes the same."""
    if not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor must be an int >= 2, got {factor!r}")
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    architecture = dict(config["architecture"])
    depth = architecture["depth"]
    architecture["depth"] = depth * factor
    deeper = type(model)(**{**config, "architecture": architecture})
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.blocks.")}
    for i, block in enumerate(model.backbone.blocks):
        for j in range(factor):
            new = copy.deepcopy(block)
            if j:  # a new block: its residual branches add nothing until trained
                outputs = [new.attn.proj, new.mlp[-1]] + ([new.cross.proj] if new.cross is not None else [])
                for layer in outputs:
                    torch.nn.init.zeros_(layer.weight)
                    torch.nn.init.zeros_(layer.bias)
            state.update({f"backbone.blocks.{i * factor + j}.{k}": v for k, v in new.state_dict().items()})
    deeper.load_state_dict(state)  # strict: every key of the deeper model is set (in fp32, whatever model's dtype)
    return deeper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="a generator folder (config.json + weights)")
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    name = json.loads((args.source / "config.json").read_text())["_class_name"]
    cls = next(c for c in GENERATORS.values() if c.__name__ == name)
    model = cls.from_pretrained(args.source, torch_dtype=torch.float32)
    deeper = grow_depth(model, args.factor)
    deeper.save_pretrained(args.out)
    count = sum(p.numel() for p in deeper.parameters()) / 1e6
    print(f"{name}: depth {model.config['architecture']['depth']} -> {deeper.config['architecture']['depth']}, "
          f"{count:.2f} M parameters -> {args.out}")


if __name__ == "__main__":
    main()

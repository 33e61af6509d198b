#!/usr/bin/env python
"""Turn what pair_gpu.sh returns for one run (config.json and its EMA weights split in files weights_a, weights_b,
..., since one returned file may hold at most 16 MiB) back into that run's ``final`` folder, which
``make_pretrained.py --candidate`` reads.

    python experiments/device/unpack_weights.py /work/.device/1/masked_shapes_gpu runs/masked_shapes_gpu/final
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("returned", type=Path, help="the run's folder as the device returned it")
    parser.add_argument("final", type=Path, help="where the run's final folder goes")
    args = parser.parse_args()
    from safetensors.torch import load_file, save_file

    files = sorted(args.returned.glob("weights_?.safetensors"))
    if not files:
        raise SystemExit(f"{args.returned}: no weights_?.safetensors (the device did not return the weights)")
    parts = [load_file(str(f)) for f in files]
    weights = {k: v for p in parts for k, v in p.items()}
    if len(weights) != sum(len(p) for p in parts):
        raise SystemExit(f"{args.returned}: the weight files share keys; not a split written by pair_gpu.sh")
    args.final.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(args.final / "diffusion_pytorch_model.safetensors"))
    shutil.copy(args.returned / "config.json", args.final / "config.json")
    print(f"{args.final}: {len(weights)} tensors")


if __name__ == "__main__":
    main()

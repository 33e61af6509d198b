#!/usr/bin/env python
"""Train a vidgen video tokenizer (``model.kind: vae``, the causal VAE, or ``vqvae``, the discrete tokenizers).

    python tokenizers/train_tokenizer.py --config configs/natural-vae-small/stage1.yaml [key.sub=value ...]
    accelerate launch --multi_gpu --num_processes 2 tokenizers/train_tokenizer.py --config ... run_dir=runs/x

(``--multi_gpu`` also on CPU-only machines: it starts the processes through torchrun and they meet over gloo;
accelerate's ``--cpu`` flag with ``--num_processes 2`` starts just one process.)

Resumes from ``run_dir/checkpoints/latest`` automatically (a new run takes an empty ``run_dir``). Writes
``run_dir/log.jsonl``, ``run_dir/samples/step_*.{mp4,png}`` and the trained model to ``run_dir/final``.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON training config")
    parser.add_argument("overrides", nargs="*", help="config overrides like loss.gan=0 steps=100")
    args = parser.parse_args(argv)
    from vidgen.cli import quiet_import_notices
    quiet_import_notices()  # the pinned packages' import-time notices, as the vidgen command drops them
    from vidgen.errors import VidgenError
    from vidgen.training import load_config, train
    try:
        metrics = train(load_config(args.config, args.overrides))
    except VidgenError as err:
        print(f"train_tokenizer: error: {err}", file=sys.stderr)
        return 2
    print(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())

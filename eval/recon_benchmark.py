#!/usr/bin/env python
"""Reconstruction benchmark of one trained tokenizer (same as ``vidgen eval recon``; see its --help).

    python eval/recon_benchmark.py runs/vae_small/final --clips 32 --frames 17 --size 64 \
        --tiling-size 256 --out outputs/recon_vae_small
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vidgen.cli.eval_recon import _main, add_arguments  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(_main(parser.parse_args()))

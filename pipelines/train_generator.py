#!/usr/bin/env python
"""Train a vidgen generator (masked, flow or autoregressive) on a video tokenizer's ids / latents.

    python pipelines/train_generator.py --config configs/shapes-masked/stage1.yaml video_tokenizer=runs/fsq_shapes/final
    python pipelines/train_generator.py --config ... model.generator=autoregressive model.overrides.layout=window
    accelerate launch --multi_gpu --num_processes 2 pipelines/train_generator.py --config ... run_dir=runs/x

The dataset is pre-encoded once (video tokenizer + text encoder) into ``data.cache_dir``, keyed by the video tokenizer's
weights and the data settings. Resumes from ``run_dir/checkpoints/latest`` automatically (a new run takes
an empty ``run_dir``). Writes ``run_dir/log.jsonl``, ``run_dir/samples/step_*.{mp4,png}`` and the generator to
``run_dir/final``.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON training config")
    parser.add_argument("overrides", nargs="*", help="config overrides like steps=100 model.generator=masked")
    args = parser.parse_args(argv)
    from vidgen.cli import quiet_import_notices
    quiet_import_notices()  # the pinned packages' import-time notices, as the vidgen command drops them
    from vidgen.errors import VidgenError
    from vidgen.training import GeneratorTrainConfig, load_config, train_generator
    try:
        metrics = train_generator(load_config(args.config, args.overrides, schema=GeneratorTrainConfig))
    except VidgenError as err:
        print(f"train_generator: error: {err}", file=sys.stderr)
        return 2
    print(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())

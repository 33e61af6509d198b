#!/usr/bin/env python
"""``pipelines/train_generator.py`` (or, with ``--distill``, ``pipelines/distill.py``) with the text encoder replaced
by a table from ``text_table.py``.

For the lent GPU machine, which has neither network nor the MiniLM weights. Every caption lookup returns the rows the
encoder produced on the dev machine; a caption missing from the table is an error (never a silent zero embedding).

    python experiments/device/train_offline_text.py --table .carry/text_table.safetensors --config X.yaml k=v ...
    python experiments/device/train_offline_text.py --distill --table ... --config configs/shapes-flow-distilled/stage1.yaml
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def install_table(path: Path) -> None:
    from safetensors.torch import load_file
    import vidgen.text
    import vidgen.training.generator_task as loop
    t = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}  # stored float16
    row = {c: i for i, c in enumerate(json.loads(path.with_suffix(".json").read_text())["captions"])}

    def encode_prompts(tokenizer, encoder, prompts, max_length, batch_size=64):
        prompts = vidgen.text.check_prompts(prompts)
        missing = [p for p in prompts if p not in row]
        if missing or max_length != t["hidden"].shape[1]:
            raise KeyError(f"text table {path}: {len(missing)} prompts missing (first {missing[:1]}) or max_length "
                           f"{max_length} != {t['hidden'].shape[1]}")
        idx = [row[p] for p in prompts]
        return vidgen.text.TextEmbeddings(t["hidden"][idx], t["mask"][idx], t["pooled"][idx], 0)

    import vidgen.pipelines.text_encoding as pipeline_text  # it bound both names at import
    for module in (vidgen.text, pipeline_text):
        module.encode_prompts = encode_prompts
        module.load_text_encoder = lambda *a, **k: (None, None)
    loop._text_dim = lambda cfg: t["hidden"].shape[-1] if cfg.data.conditioning == "text" else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--distill", action="store_true", help="run pipelines/distill.py, not train_generator.py")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    install_table(args.table)
    if args.distill:
        import runpy
        distill = runpy.run_path(str(Path(__file__).parents[2] / "pipelines" / "distill.py"))
        return distill["main"](["--config", args.config, *args.overrides])
    from vidgen.training import GeneratorTrainConfig, load_config, train_generator
    print(train_generator(load_config(args.config, args.overrides, schema=GeneratorTrainConfig)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

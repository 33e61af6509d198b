#!/usr/bin/env python
"""Pre-encode every caption a ShapesDataset split can produce, for a training run on a machine without the text
encoder's weights (the lent GPU machine: nothing can be fetched there, and the MiniLM package is too large to carry).

    python experiments/device/text_table.py --clips 32768 --out .carry/text_table.safetensors

The table holds exactly what ``vidgen.training.encode_cache`` would compute there (``encode_prompts`` on the sorted
distinct captions, fp32), plus the preview prompts of the config, so ``train_offline_text.py`` can look rows up.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, required=True, help="data.num_clips of the run")
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-tokens", type=int, default=16, help="data.max_text_tokens of the run")
    parser.add_argument("--prompts", nargs="*", default=[], help="extra prompts (the config's preview prompts)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm
    from vidgen.data import ShapesDataset
    from vidgen.text import encode_prompts, load_text_encoder
    torch.set_num_threads(2)
    ds = ShapesDataset(args.split, num_frames=1, size=16, num_samples=args.clips)  # captions do not depend on size
    captions = sorted({ds[i]["caption"] for i in tqdm(range(len(ds)), desc="captions")} | set(args.prompts))
    emb = encode_prompts(*load_text_encoder(), captions, args.max_tokens)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # float16 halves the file (28 -> 14 MB of the 64 MiB a device call carries); its rounding (5e-4 relative, values
    # within +-6) is below the bf16 autocast's the runs train in. train_offline_text.py casts back to float32.
    save_file({"hidden": emb.hidden.half().contiguous(), "mask": emb.mask, "pooled": emb.pooled.half().contiguous()},
              str(args.out))
    args.out.with_suffix(".json").write_text(json.dumps({"captions": captions, "clips": args.clips,
                                                         "split": args.split, "max_tokens": args.max_tokens}))
    print(f"{len(captions)} captions -> {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()

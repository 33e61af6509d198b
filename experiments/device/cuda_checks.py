#!/usr/bin/env python
"""CUDA checks of a shipped pipeline that the CPU-only CI cannot run: fp32 on CUDA against fp32 on the CPU, bf16 on
CUDA against fp32 on CUDA, and diffusers' ``enable_model_cpu_offload`` against the plain CUDA pipeline; seconds per
call and peak GPU memory for each. Prompts are encoded from ``text_table.py``'s table (no text encoder there).

    python experiments/device/cuda_checks.py --table .carry/text_table.safetensors --out $OUT/cuda_checks.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_offline_text import install_table  # noqa: E402

PROMPTS = ["a cyan square moving down on a gray background", "an orange square rotating on a gradient background",
           "a white hexagon shrinking on a textured background", "a yellow square standing still on a gradient background"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--pipeline", default="pretrained/shapes-flow")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    install_table(args.table)
    import numpy as np
    import torch
    from vidgen.pipelines import load_pipeline
    cuda = torch.cuda.is_available()
    result = {"pipeline": args.pipeline, "prompts": PROMPTS, "torch": torch.__version__,
              "device": torch.cuda.get_device_name() if cuda else "cpu"}

    def run(pipe, name, device):
        times = []
        for _ in range(2):  # the first call includes warm-up (cuBLAS handles, kernel selection)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            frames = pipe(PROMPTS, generator=torch.Generator().manual_seed(0)).frames
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        result[name] = {"device": device, "precision": pipe.precision, "s_per_call": times,
                        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}
        print(name, result[name], flush=True)
        return np.asarray(frames, dtype=np.float64)

    def attempt(name, device, make):  # one failing variant is recorded, not fatal to the others
        try:
            return run(make(), name, device)
        except Exception as err:  # noqa: BLE001 - reported in the results file
            result[name] = {"error": f"{type(err).__name__}: {err}"}
            print(name, result[name], flush=True)
            return None

    def offloaded():
        pipe = load_pipeline(args.pipeline, dtype="fp32", device_map="cpu")
        pipe.enable_model_cpu_offload()
        return pipe

    outs = {"cpu_fp32": attempt("cpu_fp32", "cpu", lambda: load_pipeline(args.pipeline, dtype="fp32", device_map="cpu"))}
    if cuda:
        outs["cuda_fp32"] = attempt("cuda_fp32", "cuda", lambda: load_pipeline(args.pipeline, dtype="fp32").to("cuda"))
        outs["cuda_bf16"] = attempt("cuda_bf16", "cuda", lambda: load_pipeline(args.pipeline, dtype="bf16").to("cuda"))
        outs["cuda_fp32_offload"] = attempt("cuda_fp32_offload", "cuda (model offload)", offloaded)
    pairs = [("cuda_fp32", "cpu_fp32"), ("cuda_bf16", "cuda_fp32"), ("cuda_fp32_offload", "cuda_fp32")]
    result["abs_diff"] = {f"{a}_vs_{b}": {"mean": float(np.abs(outs[a] - outs[b]).mean()),
                                          "max": float(np.abs(outs[a] - outs[b]).max())}
                          for a, b in pairs if outs.get(a) is not None and outs.get(b) is not None}
    print(result["abs_diff"], flush=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

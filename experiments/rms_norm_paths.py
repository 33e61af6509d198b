"""Which form should the attention's q/k RMS norms take under bf16 autocast? Three forms side by side in one run.

    python experiments/rms_norm_paths.py     # ~1 min on 2 idle cores -> experiments/results/rms_norm_paths.json

Under autocast a bf16 activation meets ``nn.RMSNorm``'s fp32 weight, so PyTorch warns "Mismatch dtype between input
and weight ... Cannot dispatch to fused implementation" and runs its composite path (statistics in fp32, output
cast back to bf16). The alternatives: ``F.rms_norm`` with the weight cast to bf16 (the fused kernel), and the form
the tokenizers' ``PixelNorm`` uses (fp32 ``vector_norm``, then two bf16 multiplies). For each, at the shapes the
generators see (one AR decoding step, one flow sampling step, a training batch), the median time per call after three
warm-up calls (forward; the training shape forward + backward) and the largest error against the fp32 reference on
the same bf16 input.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.bench_generators import timeit  # noqa: E402
from eval.results import write_result  # noqa: E402

HEAD_DIM, EPS = 64, 1e-6
# (B, heads, tokens, head_dim): B doubled for CFG when sampling; mini's 3 heads of 64
SHAPES = {"AR decoding step": (2, 3, 1, HEAD_DIM), "flow sampling step": (2, 3, 336, HEAD_DIM),
          "training batch 64 (fwd + bwd)": (64, 3, 336, HEAD_DIM)}


def composite(x, w):
    """What ``nn.RMSNorm`` does today under autocast: fp32 weight, bf16 input -> PyTorch's composite path."""
    return F.rms_norm(x, (HEAD_DIM,), w, EPS)


def fused(x, w):
    return F.rms_norm(x, (HEAD_DIM,), w.to(x.dtype), EPS)


def fp32_statistics(x, w):
    with torch.autocast(x.device.type, enabled=False):
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
        return x * torch.rsqrt(norm.square() / HEAD_DIM + EPS).to(x.dtype) * w.to(x.dtype)


FORMS = {"nn.RMSNorm (composite, shipped)": composite, "F.rms_norm, bf16 weight (fused)": fused,
         "fp32 statistics, bf16 multiplies (PixelNorm's form)": fp32_statistics}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="experiments/results/rms_norm_paths.json")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Mismatch dtype")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    weight = torch.nn.Parameter(torch.rand(HEAD_DIM, generator=torch.Generator().manual_seed(0)) + 0.5)
    rows = []
    for case, shape in SHAPES.items():
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).mul(3).bfloat16()
        reference = F.rms_norm(x.float(), (HEAD_DIM,), weight.float(), EPS)
        train = "fwd + bwd" in case
        for name, form in FORMS.items():
            with torch.autocast("cpu", torch.bfloat16), torch.no_grad():
                error = (form(x, weight).float() - reference).abs().max().item()
            if train:
                leaf = x.clone().requires_grad_()

                def call():
                    with torch.autocast("cpu", torch.bfloat16):
                        out = form(leaf, weight)
                    out.backward(torch.ones_like(out))
            else:
                def call():
                    with torch.autocast("cpu", torch.bfloat16), torch.no_grad():
                        form(x, weight)
            warm_up = lambda: [call() for _ in range(3)]  # noqa: E731
            _, s = timeit(call, 10 if train else 2000 if x.numel() < 10_000 else 300, warm_up)  # median
            rows.append(dict(case=case, shape=list(shape), form=name, microseconds=s * 1e6, max_error=error))
            print(f"{case:>30} {name:>52}: {s * 1e6:9.1f} us, max error {error:.4f}", flush=True)
    torch.set_num_threads(threads)
    write_result(Path(args.out), dict(head_dim=HEAD_DIM, eps=EPS, rows=rows), threads=args.threads)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Peak activation memory per rank of one training step at sequence-parallel sizes 1 and 2, measured on CPU.

Each setting runs in fresh processes (ru_maxrss is a high-water mark): a worker imports vidgen, builds the flow
generator and the clip, reads ru_maxrss (the model, its inputs and the imports: the baseline), then runs one
forward + backward of the training loss on a clip long enough that activations dominate, and reads ru_maxrss again.
Activation memory = peak - baseline, per rank, with glibc's mmap threshold fixed (so ru_maxrss follows the live
tensors) and with its default. At sp 2 both ranks run on this machine (gloo); a single GPU cannot
run sp 2, and the split is the same on any device. The losses of the two settings are compared as a check, and the bytes autograd
saves for the backward (unique storages, through saved-tensor hooks) are counted as a measure no allocator changes.

    python eval/bench_sequence_parallel.py            # -> docs/results/bench_sequence_parallel.json
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _worker(rank: int, world: int, sp_size: int, rdzv: str, spec: dict, queue) -> None:
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist

    from vidgen.generators import Conditioning, FlowVideoTransformer
    from vidgen.parallel import enable_sequence_parallel, new_sequence_parallel
    try:
        if world > 1:
            dist.init_process_group("gloo", init_method=f"file://{rdzv}", rank=rank, world_size=world)
        torch.manual_seed(0)
        model = FlowVideoTransformer.from_preset(spec["preset"], in_channels=16, num_classes=4, cond_dropout=0.0,
                                                 task_prob=0.0, max_grid=tuple(spec["grid"]))
        x0 = torch.randn(1, 16, spec["grid"][0], 2 * spec["grid"][1], 2 * spec["grid"][2],
                         generator=torch.Generator().manual_seed(1))
        cond = Conditioning(class_labels=torch.tensor([1]))
        sp = new_sequence_parallel(sp_size)
        if sp is not None:
            enable_sequence_parallel(model, sp)
        baseline = _rss_mb()
        start = time.perf_counter()
        saved: dict = {}  # storages autograd keeps for the backward: an allocator-independent count

        def pack(t):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss, _ = model.loss(x0, cond, torch.Generator().manual_seed(2))
        loss.backward()
        elapsed = time.perf_counter() - start
        peak = _rss_mb()
        if sp is not None:
            sp.close()
        if world > 1:
            dist.destroy_process_group()
        queue.put((rank, {"baseline_mb": round(baseline, 1), "peak_mb": round(peak, 1),
                          "activation_mb": round(peak - baseline, 1), "step_s": round(elapsed, 2),
                          "saved_for_backward_mb": round(sum(saved.values()) / 2**20, 1),
                          "loss": float(loss.detach())}))
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        queue.put((rank, {"error": repr(err)}))


def measure(sp_size: int, spec: dict) -> list[dict]:
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # fresh interpreters: each peak is this setting's own
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [ctx.Process(target=_worker, args=(r, sp_size, sp_size, os.path.join(tmp, "rdzv"), spec, queue))
                 for r in range(sp_size)]
        for p in procs:
            p.start()
        out = dict(queue.get(timeout=1800) for _ in procs)
        for p in procs:
            p.join()
    for rank, row in out.items():
        if "error" in row:
            raise RuntimeError(f"sp_size={sp_size} rank {rank}: {row['error']}")
    return [out[r] for r in range(sp_size)]


#: the allocator settings measured: glibc raises its mmap threshold after each large free, so freed activations stay
#: in the heap and ru_maxrss overstates what was alive at the peak; a fixed threshold returns every large block to the
#: system when it is freed, so ru_maxrss follows the live tensors (the workers are spawned: they start with it)
ALLOCATORS = {"fixed_mmap_threshold": str(128 * 1024), "glibc_default": None}


def _setting(sp_size: int, spec: dict, threshold) -> list[dict]:
    saved = os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
    if threshold is not None:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = threshold
    try:
        return measure(sp_size, spec)
    finally:
        os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        if saved is not None:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = saved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--grid", type=int, nargs=3, default=[16, 16, 16], help="token grid (t, h, w)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_sequence_parallel.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    spec = {"preset": args.preset, "grid": args.grid}
    settings = {}
    for name, threshold in ALLOCATORS.items():
        rows = {sp: _setting(sp, spec, threshold) for sp in (1, 2)}
        one, two = rows[1][0]["activation_mb"], max(r["activation_mb"] for r in rows[2])
        saved_ratio = max(r["saved_for_backward_mb"] for r in rows[2]) / rows[1][0]["saved_for_backward_mb"]
        settings[name] = {"malloc_mmap_threshold": threshold, "sp1": rows[1], "sp2": rows[2],
                          "saved_for_backward_ratio": round(saved_ratio, 3),
                          "activation_mb_sp1": one, "activation_mb_sp2_worst_rank": two,
                          "ratio_sp2_to_sp1": round(two / one, 3),
                          "loss_difference": abs(rows[1][0]["loss"] - rows[2][0]["loss"])}
    headline = settings["fixed_mmap_threshold"]
    payload = {
        "model": f"FlowVideoTransformer preset {args.preset}, class-conditioned (no text prefix), fp32, batch 1",
        "token_grid": args.grid, "tokens": args.grid[0] * args.grid[1] * args.grid[2],
        "method": "ru_maxrss after one forward + backward of the training loss minus ru_maxrss before it (model, "
                  "inputs, imports), per rank (the worst rank at sp 2), each setting in fresh processes; sp 2: 2 gloo "
                  "processes on this CPU; measured with glibc's mmap threshold fixed (ru_maxrss follows the live "
                  "tensors; the headline) and with glibc's default (freed blocks stay in the heap)",
        "ratio_sp2_to_sp1": headline["ratio_sp2_to_sp1"], "target_ratio": 0.6,
        "activation_mb_sp1": headline["activation_mb_sp1"],
        "activation_mb_sp2_worst_rank": headline["activation_mb_sp2_worst_rank"],
        "allocators": settings,
    }
    path = write_result(args.out, payload, threads=1)
    for name, row in settings.items():
        print(f"{name}: activation memory per rank sp1 {row['activation_mb_sp1']} MB, sp2 "
              f"{row['activation_mb_sp2_worst_rank']} MB (ratio {row['ratio_sp2_to_sp1']})")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Memory and speed of a mid-size diffusers video transformer on this CPU: bf16, torchao int8 weight-only, and
diffusers' group offloading to disk, with fp32 for context (docs/memory.md).

The model: a Wan-architecture transformer (``WanTransformer3DModel``, 16 blocks at width 1024, FFN 4096, text width
4096: 282 M parameters), random weights from a fixed seed, saved once to a temporary folder in fp32 (its sha256 is in
the results file) and loaded from there by each method as a user loads a folder:

* ``bf16``: ``from_pretrained(torch_dtype=bf16)`` (the reference the differences are taken from);
* ``int8_weight_only``: the same with ``quantization_config=TorchAoConfig(Int8WeightOnlyConfig())`` (torchao: int8
  weights with a scale per row, bf16 activations);
* ``group_offload_disk``: bf16, then ``enable_group_offload(onload_device=cpu, offload_type="block_level",
  num_blocks_per_group=1, offload_to_disk_path=...)``. On a CPU-only machine the onload and offload devices are the
  same, so the in-memory variant does nothing; the disk variant writes each block's weights to a safetensors file,
  replaces the weights by uninitialised placeholders of the same size, and reads each block back (memory-mapped)
  before it runs;
* ``fp32``: ``torch_dtype=fp32``, for context (this CPU may emulate bf16).

Each method runs in its own process (so its memory is its own) at ``--threads`` threads: one step is one transformer
forward at a fixed input (latents ``--grid``, ``--text-tokens`` text tokens; a guided denoising step is two). A first
step (warm-up; for the disk offload it writes the files) is timed apart, then ``--rounds`` timed steps: ``s_per_step``
is their median. Memory, measured at the allocator, not as resident pages:

* ``weights_bytes``: the bytes of the storages the model's parameters and buffers hold between steps (torchao's
  int8 tensors counted by their inner data and scales; the disk offload's placeholders counted, as the allocator
  holds them);
* ``step_extra_bytes``: the most tensor bytes held at once during a steady step (the second) beyond those held
  when the step began: a running sum of the PyTorch profiler's allocation records (``profile_memory=True``: each
  block allocated or freed, the CPU allocator's and memory-mapped storages' alike, such as the block the disk
  offload reads back; the profiler runs from before the load so that it knows the size of every block freed).
  torch keeps no CPU allocator statistics of its own, and RSS mixes in libraries, freed-but-kept heap pages and
  file pages;
* ``peak_bytes`` = the two together: the tensor bytes live at the step's peak.

Also per method: ``resident_peak_bytes`` (the process's VmHWM less its VmRSS before the model loaded, for what the
placeholders do to resident memory) and the output's max / mean absolute difference from bf16's and fp32's.

    python eval/bench_quantized.py                      # about 5-10 min at 1 thread; writes docs/results/bench_quantized.json
    python eval/bench_quantized.py --quick --out /tmp/q.json   # a tiny model, seconds
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import rounds_summary, write_result  # noqa: E402  (imported first: the start load)

import torch  # noqa: E402

#: the mid-size model (Wan2.1's block layout at width 1024, 16 blocks; Wan2.1-1.3B is width 1536, 30 blocks)
MID = dict(patch_size=(1, 2, 2), num_attention_heads=8, attention_head_dim=128, in_channels=16, out_channels=16,
           text_dim=4096, freq_dim=256, ffn_dim=4096, num_layers=16, cross_attn_norm=True,
           qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
TINY = dict(MID, num_attention_heads=2, attention_head_dim=32, text_dim=32, ffn_dim=128, num_layers=2)
METHODS = ("bf16", "int8_weight_only", "group_offload_disk", "fp32")
PRECISION = {"bf16": "bf16", "int8_weight_only": "int8 weights (torchao Int8WeightOnlyConfig), bf16 activations",
             "group_offload_disk": "bf16", "fp32": "fp32"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny model and grid, 2 rounds (a smoke run)")
    p.add_argument("--out", default="docs/results/bench_quantized.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--grid", default="2,12,12", help="latent frames,height,width of the step's input")
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--worker", nargs=3, metavar=("METHOD", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.grid, args.text_tokens, args.rounds = "1,4,4", 8, 2
    elif args.rounds < 3 and not args.worker:
        raise SystemExit(f"--rounds {args.rounds}: s/step is the median of at least 3 rounds")
    args.grid = tuple(int(v) for v in args.grid.split(","))
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or "bf16" not in args.methods:
        raise SystemExit(f"--methods: {unknown or 'bf16 is the reference and must be one'}; choose from {METHODS}")
    return args


# ---------------------------------------------------------------------------------------------- one method (worker)
def _proc_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def storage_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct storages behind ``model``'s parameters and buffers; tensor subclasses (torchao's
    quantized weights) counted by their inner tensors."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass
    seen, total, stack = set(), 0, [*model.parameters(), *model.buffers()]
    while stack:
        t = stack.pop()
        if is_traceable_wrapper_subclass(t):
            stack.extend(getattr(t, name) for name in t.__tensor_flatten__()[0])
            continue
        if t.device.type == "meta":
            continue
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            total += s.nbytes()
    return total


def step_extra_bytes(prof, mark: str = "steady_step") -> int:
    """The most tensor bytes held at once during the ``record_function(mark)`` range of ``prof`` (a
    ``torch.profiler.profile(profile_memory=True)`` started before the model loaded, so that it knows the size of
    every block freed) beyond those held when the range began: the CPU allocator's blocks and memory-mapped
    storages alike."""
    from torch._C._profiler import _EventType
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        events.append(event)
    span = next(e for e in events if e.name == mark)
    # a running sum of the records' sizes (+ allocated, - freed): their total_allocated field is the CPU allocator's
    # own count, and memory-mapped storages (safetensors' reads) come in records that leave it at 0
    running, base, peak = 0, None, 0
    for ts, size in sorted((e.start_time_ns, e.extra_fields.alloc_size) for e in events
                           if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu"):
        if ts >= span.start_time_ns and base is None:
            base = peak = running
        running += size
        if span.start_time_ns <= ts <= span.end_time_ns:
            peak = max(peak, running)
    return peak - base if base is not None else 0


def load(method: str, folder: Path, offload_dir: Path):
    from diffusers import TorchAoConfig, WanTransformer3DModel
    dtype = torch.float32 if method == "fp32" else torch.bfloat16
    kwargs = {}
    if method == "int8_weight_only":
        from torchao.quantization import Int8WeightOnlyConfig
        kwargs["quantization_config"] = TorchAoConfig(Int8WeightOnlyConfig())
    model = WanTransformer3DModel.from_pretrained(str(folder), torch_dtype=dtype, **kwargs).eval()
    if method == "group_offload_disk":
        model.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                                   offload_type="block_level", num_blocks_per_group=1,
                                   offload_to_disk_path=str(offload_dir))
    return model, dtype


def worker(method: str, folder: Path, out: Path, threads: int, rounds: int) -> dict:
    torch.set_num_threads(threads)
    load_start = list(os.getloadavg())
    import diffusers  # noqa: F401  (libraries in memory before the baseline is read)
    import torchao  # noqa: F401
    from torch.profiler import ProfilerActivity, profile
    inputs = torch.load(folder / "inputs.pt")
    offload_dir = out.parent / f"offload_{method}"
    rss_before = _proc_kib("VmRSS") * 1024
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:  # from before the load
        model, dtype = load(method, folder, offload_dir)
        x, t, text = inputs["latents"].to(dtype), inputs["timestep"], inputs["text"].to(dtype)

        @torch.no_grad()
        def step():
            return model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]

        t0 = time.perf_counter()
        y = step()  # the first step (the disk offload writes its files before it)
        first = time.perf_counter() - t0
        with torch.profiler.record_function("steady_step"):
            step()
    extra = step_extra_bytes(prof)
    del prof
    weights = storage_bytes(model)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    torch.save(y.float(), out)
    disk = sum(f.stat().st_size for f in offload_dir.glob("*")) if offload_dir.is_dir() else 0
    return {"method": method, "precision": PRECISION[method], "weights_bytes": weights,
            "step_extra_bytes": extra, "peak_bytes": weights + extra,
            "offload_disk_bytes": disk, "resident_peak_bytes": _proc_kib("VmHWM") * 1024 - rss_before,
            "first_step_s_profiled": first,
            "s_per_step": rounds_summary(times)["median"], "rounds_s": times,
            "weight_types": sorted({type(p).__name__ for p in model.parameters()}),
            "loadavg_start": load_start, "loadavg_end": list(os.getloadavg())}  # the methods run one after another


# ---------------------------------------------------------------------------------------------- the run
def build_folder(config: dict, folder: Path, grid, text_tokens: int) -> int:
    """The random model (seed 0) saved in fp32 to ``folder``, with the step's inputs; returns its parameter count."""
    from diffusers import WanTransformer3DModel
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = WanTransformer3DModel(**config).eval()
        g = torch.Generator().manual_seed(1)
        inputs = {"latents": torch.randn(1, config["in_channels"], *grid, generator=g),
                  "timestep": torch.tensor([500.0]),
                  "text": torch.randn(1, text_tokens, config["text_dim"], generator=g)}
    model.save_pretrained(str(folder))
    torch.save(inputs, folder / "inputs.pt")
    return sum(p.numel() for p in model.parameters())


def differences(outputs: dict) -> dict:
    """Each method's output against bf16's and fp32's: max and mean absolute difference, and the reference's scale."""
    out = {}
    for method, y in outputs.items():
        out[method] = {}
        for ref in ("bf16", "fp32"):
            if ref in outputs and ref != method:
                d = (y - outputs[ref]).abs()
                out[method][f"vs_{ref}"] = {"max": d.max().item(), "mean": d.mean().item(),
                                            "ref_mean_abs": outputs[ref].abs().mean().item()}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        method, folder, out = args.worker
        print(json.dumps(worker(method, Path(folder), Path(out), args.threads, args.rounds)))
        return 0
    start = time.time()
    config = TINY if args.quick else MID
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_quantized_") as tmp:
        folder = Path(tmp) / "transformer"
        params = build_folder(config, folder, args.grid, args.text_tokens)
        from results import sha256_file
        weights = {"(temporary folder)/diffusion_pytorch_model.safetensors":
                   sha256_file(folder / "diffusion_pytorch_model.safetensors")}
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        for method in args.methods:
            out = Path(tmp) / f"{method}.pt"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads), "--rounds",
                   str(args.rounds), "--worker", method, str(folder), str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode:
                rows.append({"method": method, "error": proc.stderr.strip().splitlines()[-1][:300]})
                print(proc.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            outputs[method] = torch.load(out)
            print({k: v for k, v in rows[-1].items() if k != "rounds_s"}, flush=True)
    diffs = differences(outputs)
    for row in rows:
        row["difference"] = diffs.get(row["method"], {})
    payload = {"model": ("tiny Wan-architecture transformer (--quick)" if args.quick else
                         "Wan-architecture transformer, 16 blocks at width 1024 (random weights, seed 0)"),
               "config": config, "parameters_m": params / 1e6, "grid": list(args.grid),
               "text_tokens": args.text_tokens, "rounds": args.rounds, "rows": rows,
               "memory": "weights_bytes: storages of the parameters and buffers between steps; step_extra_bytes: "
                         "the most tensor bytes held during a steady step beyond its start (a running sum of torch.profiler's "
                         "allocation records: allocator blocks and memory-mapped storages); peak_bytes: the two "
                         "together",
               "seconds": round(time.time() - start, 1), "weights_sha256": weights}  # the fp32 file all loaded
    write_result(args.out, payload, threads=args.threads, precision=PRECISION)
    print(f"wrote {args.out} in {time.time() - start:.0f} s")
    return 0


def _mib(n) -> str:
    return f"{n / 2**20:,.0f}"


def _load(row: dict) -> str:
    """`` (load a-b)``: the 1-minute load average when the method's process started and ended."""
    return f" (load {row['loadavg_start'][0]:.1f}-{row['loadavg_end'][0]:.1f})" if "loadavg_start" in row else ""


def readme_table(results: dict) -> str:
    """The Memory table of docs/memory.md (``<!-- table:quantized -->``) from docs/results/bench_quantized.json."""
    lines = ["| method | precision | weights MiB | peak MiB (tensors) | resident peak MiB | s / step | "
             "max / mean abs diff vs bf16 |", "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['method']} | – | – | – | – | – | {r['error']} |")
            continue
        d = r["difference"].get("vs_bf16")
        diff = f"{d['max']:.3g} / {d['mean']:.3g}" if d else "(reference)"
        lines.append(f"| {r['method']} | {r['precision']} | {_mib(r['weights_bytes'])} | {_mib(r['peak_bytes'])} | "
                     f"{_mib(r['resident_peak_bytes'])} | {r['s_per_step']:.2f}{_load(r)} | {diff} |")
    ref = next((r for r in results["rows"] if r["method"] == "bf16" and "difference" in r), None)
    scale = ref["difference"].get("vs_fp32", {}) if ref else {}
    lines += ["", f"{results['model']}, {results['parameters_m']:.0f} M parameters; one step = one forward at latents "
              f"{'x'.join(map(str, results['grid']))} and {results['text_tokens']} text tokens; s / step: median of "
              f"{results['rounds']} rounds after a warm-up step, the methods one after another (in brackets the "
              "1-minute load average as each began and ended: on this shared 2-core machine times measured at "
              f"different loads are not comparable); {results['threads']} thread(s), "
              f"{results['cpu']}, load average {results['loadavg_start'][0]:.1f} at start / "
              f"{results['loadavg_end'][0]:.1f} at end, {results['date'][:10]}. Peak: the weights' bytes plus the most "
              "tensor bytes held at once during a steady step beyond its start (torch.profiler's allocation "
              "records); resident peak: the process's VmHWM less its resident memory before loading."
              + (f" For scale: bf16 differs from fp32 by {scale['max']:.3g} max / {scale['mean']:.3g} mean on an "
                 f"output of mean magnitude {scale['ref_mean_abs']:.3g}." if scale else "")]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Benchmark a real-size diffusers video transformer inside vidgen on one GPU: the Wan2.1-T2V-1.3B architecture
(random weights, bf16) at 480x832, 81 frames (latents 21x60x104, 32,760 tokens), text 512 tokens.

Rows:
* one denoising step with classifier-free guidance as Wan's pipeline runs it (two transformer passes), under
  ``torch.compile`` (regional: each transformer block compiled once and reused, as diffusers'
  ``compile_repeated_blocks``) and eager, with the peak GPU memory of the step:
  - dense (the model's own SDPA attention) against vidgen's 3D window attention swapped into every block
    (:func:`vidgen.adapters.window.window_attention`, ``--window`` in tokens of the 21x30x52 grid);
  - tile-aligned windows (``--tile-window`` tiles of ``--tile`` tokens) against dense at ``--tile-size``: the Triton
    kernel runs tiles of 128 tokens that divide the grid, and none divides 21x30x52, so they are timed at 512x768
    (21x32x48 tokens, 98.5 % of 480x832's) in tiles of 1x8x16;
  each windowed row names the attention backend that ran it; eager windowed rows count their windowed calls,
  compiled rows the graphs they compiled (each row compiles afresh; more graphs than block classes is a recompile);
* one LoRA training step (rank ``--lora-rank`` on to_q / to_k / to_v / to_out.0, bf16 autocast over fp32 adapter
  weights, gradient checkpointing, AdamW) on a ``--train-frames`` x 480 x 832 clip: seconds per step and peak memory.

Each row: a first call (compile / warm-up, reported as ``first_call_s``), then ``--rounds`` timed calls with
``torch.cuda.synchronize()`` around each; ``s`` is their median. The compiled rows come first (the target, tile
windows at least 2x dense, is read from them), the results file is rewritten after every row, and a time guard
(``--budget-s``) skips rows that would start past it, so a stopped run keeps what it measured.

    python eval/bench_diffusers_models.py --out docs/results/bench_diffusers_models_gpu.json   # GPU
    python eval/bench_diffusers_models.py --quick --out /tmp/q.json   # CPU, seconds: a tiny Wan, no compile
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import kernel_provenance, target, write_result  # noqa: E402  (imported first: the start load)

import torch  # noqa: E402

#: Wan2.1-T2V-1.3B's transformer config (its diffusers folder's transformer/config.json)
WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
TINY = dict(WAN_1_3B, num_attention_heads=2, attention_head_dim=16, text_dim=32, ffn_dim=64, num_layers=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU smoke run: a tiny Wan, a small grid, no compile")
    p.add_argument("--out", default="docs/results/bench_diffusers_models_gpu.json")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--text-tokens", type=int, default=512)
    p.add_argument("--window", default="7,15,27", help="t,h,w window in tokens of the transformer's grid")
    p.add_argument("--tile", default="1,8,16", help="t,h,w tile of the tile-aligned window, in tokens")
    p.add_argument("--tile-window", default="5,3,3", help="t,h,w tile-aligned window, in tiles")
    p.add_argument("--tile-size", default="512,768", help="height,width of the tile-window rows and their dense row")
    p.add_argument("--train-frames", type=int, default=33, help="frames of the LoRA training clip (at height x width)")
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=420.0)
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.height, args.width, args.text_tokens, args.train_frames = 9, 64, 64, 16, 5
        args.window, args.rounds, args.no_compile, args.lora_rank = "1,3,3", 2, True, 4
        args.tile, args.tile_window, args.tile_size = "1,2,2", "1,3,3", "64,64"
    args.window, args.tile, args.tile_window, args.tile_size = (
        tuple(int(w) for w in a.split(",")) for a in (args.window, args.tile, args.tile_window, args.tile_size))
    return args


def latent_grid(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Wan's VAE: 4 frames and 8 pixels per latent cell (1 + (frames - 1) / 4 latent frames)."""
    return 1 + (frames - 1) // 4, height // 8, width // 8


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return {"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2**30, 1), "torch": torch.__version__,
                "cuda": torch.version.cuda}
    return {"gpu": None, "torch": torch.__version__}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, rounds: int) -> dict:
    """First call (compile, warm-up) apart, then the median of ``rounds`` calls, and the peak memory over them."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    times = []
    for _ in range(rounds):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"s": statistics.median(times), "times_s": times, "first_call_s": first, "peak_memory_gib": peak}


def build(args, device):
    from diffusers import WanTransformer3DModel

    from vidgen.adapters import DiffusersVideoTransformer
    torch.manual_seed(0)
    with torch.device(device):
        model = WanTransformer3DModel(**(TINY if args.quick else WAN_1_3B))
    dtype = torch.float32 if args.quick else torch.bfloat16
    model.to(dtype)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():  # as from_pretrained(dtype=bf16) keeps them
        if any(k in name.split(".") for k in keep):
            module.float()
    return DiffusersVideoTransformer(model.eval()), dtype


def compile_blocks(model) -> list:
    """Regional compilation: each repeated transformer block (the model's ``_repeated_blocks`` classes, as diffusers'
    ``compile_repeated_blocks`` finds them) replaced by its ``torch.compile`` wrapper, one graph reused by every block
    of a class. Returns the undo: ``[(module list, index, block)]``."""
    names = set(getattr(model, "_repeated_blocks", None) or ())
    undo = []
    for parent in model.modules():
        if isinstance(parent, torch.nn.ModuleList):
            for i, block in enumerate(parent):
                if type(block).__name__ in names:
                    undo.append((parent, i, block))
                    parent[i] = torch.compile(block)
    if not undo:
        raise RuntimeError(f"{type(model).__name__} names no repeated blocks to compile")
    return undo


def attention_backend(gen, token_grid, window, tile, dtype, device) -> str:
    """The backend ``attention3d``'s "auto" picks for the model's attention at this grid (what the row ran)."""
    from vidgen.attention import make_pattern
    from vidgen.attention.api import choose_backend
    heads, head_dim = gen.config.num_attention_heads, gen.config.attention_head_dim
    q = torch.empty(1, heads, int(torch.tensor(token_grid).prod()), head_dim, dtype=dtype, device=device)
    return choose_backend(q, q, q, make_pattern(token_grid, window, tile=tile))


def step_rows(args, gen, dtype, device, deadline: float, save) -> None:
    """One CFG denoising step (two passes): compiled, then eager; dense and exact windows at the video's size, dense
    and tile windows at ``--tile-size``."""
    from torch._dynamo.utils import counters

    from vidgen.generators import Conditioning
    from vidgen.adapters.window import window_attention
    dynamo = torch._dynamo.config  # 30 blocks of one class: room for the recompiles a guard may still cause
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(dynamo, name):
            setattr(dynamo, name, max(getattr(dynamo, name), 64))
    g = torch.Generator(device).manual_seed(0)
    text_dim = gen.config.text_dim
    cond = Conditioning(torch.randn(1, args.text_tokens, text_dim, device=device, generator=g, dtype=dtype))
    neg = Conditioning(torch.randn(1, args.text_tokens, text_dim, device=device, generator=g, dtype=dtype))
    t = torch.tensor([500.0], device=device)
    sizes = {"dense": (args.height, args.width), "windowed": (args.height, args.width),
             "dense_tile_size": args.tile_size, "tiled": args.tile_size}
    same = tuple(args.tile_size) == (args.height, args.width)  # then one dense row serves both
    order = ("tiled", "dense", "windowed") if same else ("dense_tile_size", "tiled", "dense", "windowed")
    for compiled in ([False] if args.no_compile else [True, False]):
        undo = compile_blocks(gen.model) if compiled else []
        for attention in order:
            height, width = sizes[attention]
            grid = latent_grid(args.frames, height, width)
            window = {"windowed": args.window, "tiled": args.tile_window}.get(attention)
            tile = args.tile if attention == "tiled" else None
            row = {"row": "denoising_step", "attention": attention.replace("_tile_size", ""), "compile": compiled,
                   "video": [args.frames, height, width], "latent_grid": list(grid),
                   "token_grid": list(gen.token_grid(grid)), "window": None if window is None else list(window),
                   "tile": None if tile is None else list(tile), "cfg_passes": 2}
            if window is not None:
                row["backend"] = attention_backend(gen, gen.token_grid(grid), window, tile, dtype, device)
            if time.time() > deadline:
                save({**row, "skipped": "time budget spent"})
                continue
            x = torch.randn(1, gen.in_channels, *grid, device=device, generator=g)
            handle = None if window is None else window_attention(gen, window, tile=tile)
            if compiled:  # each row compiles its own attention; the count of graphs shows any recompilation
                torch._dynamo.reset()
                counters.clear()

            @torch.no_grad()
            def one_step():
                for c in (cond, neg):  # Wan guides with one pass per condition
                    gen.model(hidden_states=x.to(dtype), timestep=t, encoder_hidden_states=c.text, return_dict=False)
            try:
                row.update(timed(one_step, device, args.rounds))
            except Exception as err:  # noqa: BLE001  (an out-of-memory or compile failure is a result too)
                row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
            finally:
                if handle is not None:
                    if not compiled:  # counted in eager calls only
                        row["windowed_calls"] = handle.state.windowed_calls
                    handle.remove()
            if compiled:
                row["graphs_compiled"] = counters["stats"]["unique_graphs"]
            save(row)
        for parent, i, block in undo:
            parent[i] = block
        torch._dynamo.reset()


def targets(rows: list) -> list:
    """Tile windows at least 2x dense for a compiled denoising step at the tile rows' size (the eager ratio where no
    compiled row was measured); exact windows against dense at the video's size, reported without a target."""
    def seconds(attention, compiled, size_of):
        found = [r["s"] for r in rows if r.get("row") == "denoising_step" and r["attention"] == attention
                 and r["compile"] == compiled and "s" in r and r["video"][1:] == size_of]
        return found[0] if found else None

    out = []
    tile_rows = [r for r in rows if r.get("attention") == "tiled"]
    window_rows = [r for r in rows if r.get("attention") == "windowed"]
    for name, rows_of, kind, at_least in (("tile windows", tile_rows, "tiled", 2.0),
                                          ("exact windows", window_rows, "windowed", None)):
        for compiled in (True, False):
            size = rows_of[0]["video"][1:] if rows_of else None
            dense, windowed = seconds("dense", compiled, size), seconds(kind, compiled, size)
            ratio = dense / windowed if dense and windowed else None
            label = f"{name} / dense, {'compiled' if compiled else 'eager'} step" + (f" at {size[0]}x{size[1]}"
                                                                                      if size else "")
            out.append(target(label, ratio, at_least) if at_least else {"target": label, "measured": ratio,
                                                                         "result": "reported, no target"})
    return out


def readme_table(results: dict) -> str:
    """The docs' table of a run: one line per row (seconds, peak memory, the backend, or why it did not run), then
    the targets, each met, missed by how much, or not measured."""
    lines = ["| row | video | attention | compiled | s | first call s | peak GiB | backend, or why no time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        video = "x".join(map(str, r.get("video") or r.get("clip") or []))
        name = "CFG denoising step" if r["row"] == "denoising_step" else f"LoRA training step (rank {r['lora_rank']})"
        attention = {"tiled": f"tile windows {r.get('window')} of {r.get('tile')}",
                     "windowed": f"exact window {r.get('window')}"}.get(r.get("attention"), r.get("attention") or "–")
        compiled = "–" if r.get("compile") is None else ("yes" if r["compile"] else "no")
        why = r.get("error") or r.get("skipped")
        note = f"did not run: {why.splitlines()[0][:120]}" if why else (r.get("backend") or "")
        cell = (lambda k, f: f.format(r[k]) if r.get(k) is not None else "–")
        lines.append(f"| {name} | {video} | {attention} | {compiled} | {cell('s', '{:.3f}')} | "
                     f"{cell('first_call_s', '{:.2f}')} | {cell('peak_memory_gib', '{:.2f}')} | {note} |")
    lines += ["", "| target | measured | result |", "|---|---|---|"]
    for t in results.get("targets", []):
        measured = "–" if t["measured"] is None else f"{t['measured']:.2f}×"
        lines.append(f"| {t['target']}" + (f" ≥ {t['at_least']}×" if t.get("at_least") else "")
                     + f" | {measured} | {t['result']} |")
    return "\n".join(lines) + (f"\n\n{results.get('gpu', 'CPU')}, torch {results.get('torch')}, {results['dtype']}, "
                               f"{results['model']}; {results.get('date', '')[:10]}, commit "
                               f"{str(results.get('commit'))[:7]}. `{results.get('command', '')}`.")


def lora_row(args, gen, dtype, device, deadline: float, save) -> None:
    """One LoRA training step on a ``train_frames`` clip: the family's loss, backward, AdamW."""
    from vidgen.generators import Conditioning
    from vidgen.training.lora import add_lora
    grid = latent_grid(args.train_frames, args.height, args.width)
    row = {"row": "lora_train_step", "clip": [args.train_frames, args.height, args.width], "latent_grid": list(grid),
           "lora_rank": args.lora_rank, "gradient_checkpointing": True, "precision": "bf16 autocast" if
           dtype == torch.bfloat16 else "fp32"}
    if time.time() > deadline:
        return save({**row, "skipped": "time budget spent"})
    try:
        params = add_lora(gen, args.lora_rank)
        for p in params:
            p.data = p.data.float()  # fp32 adapter weights, the frozen base stays in bf16
        gen.model.train().enable_gradient_checkpointing()
        opt = torch.optim.AdamW(params, lr=1e-4)
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(1, gen.in_channels, *grid, generator=g).to(device)
        cond = Conditioning(torch.randn(1, args.text_tokens, gen.config.text_dim, generator=g).to(device, dtype))
        row["trainable_params_m"] = sum(p.numel() for p in params) / 1e6

        def train_step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss, _ = gen.loss(x0, cond, torch.Generator().manual_seed(1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        row.update(timed(train_step, device, args.rounds))
    except Exception as err:  # noqa: BLE001
        row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
    save(row)


def bench_device(quick: bool):
    """The GPU, or the CPU for a ``--quick`` smoke run; None (and why, printed) without a GPU otherwise."""
    device = torch.device("cuda" if torch.cuda.is_available() and not quick else "cpu")
    if device.type == "cpu" and not quick:
        print("no GPU: this benchmark measures the real-size model on a GPU; --quick runs a CPU smoke test")
        return None
    return device


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    device = bench_device(args.quick)
    if device is None:
        return 2
    gen, dtype = build(args, device)
    rows: list = []
    payload = {"model": "Wan2.1-T2V-1.3B architecture (random weights)" if not args.quick else "tiny Wan (--quick)",
               "parameters_m": sum(p.numel() for p in gen.parameters()) / 1e6, "dtype": str(dtype).split(".")[-1],
               "video": [args.frames, args.height, args.width], "text_tokens": args.text_tokens,
               **device_info(device), **kernel_provenance(), "rows": rows}

    def save(row):
        rows.append(row)
        payload["targets"] = targets(rows)
        write_result(args.out, payload, weights=(), precision=payload["dtype"])  # random weights: no file
        print({k: v for k, v in row.items() if k != "times_s"}, flush=True)

    deadline = start + args.budget_s
    step_rows(args, gen, dtype, device, deadline, save)
    lora_row(args, gen, dtype, device, deadline, save)
    for t in payload["targets"]:
        print(f"target {t['target']}: {t['result']} ({t['measured']})")
    print(f"wrote {args.out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

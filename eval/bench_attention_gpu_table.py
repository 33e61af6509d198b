"""The tables of eval/bench_attention_gpu.py's results (docs/results/bench_attention_gpu.json): docs/attention.md's
``<!-- table:attention_gpu -->`` through eval/readme_tables.py."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import target  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "bench_attention_gpu.json"
TABLE = "attention_gpu"
PASSES = ("forward", "forward_backward")


def _ms(e: dict) -> str:
    return f"{e['ms']:.2f}" if "ms" in e else "–"


def _vs(e: dict) -> str:
    if "speedup_vs_dense" not in e:
        return "–"
    return f"{e['speedup_vs_dense']:.2f}× ({100 * e['fraction_of_flop_bound']:.0f} %)"


def _measured(t: dict) -> str:
    return "–" if t["measured"] is None else f"{t['measured']:.2f}×"


def _x(values) -> str:
    return "×".join(map(str, values))


def _method(results: dict, timed: list) -> str:
    """How the rounds were run: results from before the L2 flush and the random order say so."""
    rounds = min((r["rounds"] for r in timed), default=0)
    if not any("l2_flush_mib" in r for r in timed):
        method = (f"then the median ms of {rounds}+ rounds in rotated order (the same neighbour before each call), "
                  "`torch.cuda.synchronize()` around each call, no L2 flush")
    else:
        method = (f"then the median ms of {rounds}+ rounds in a seeded random order, the L2 cache flushed "
                  f"({timed[0]['l2_flush_mib']} MiB zeroed) and `torch.cuda.synchronize()` around each call. "
                  "\"kernels only\": the GPU kernels' own time per call (torch.profiler); the rest of `ms` is the GPU "
                  "waiting for launches")
    if timed and not any("triton_coords" in p["backends"] for r in timed for p in r["passes"].values()):
        method += (". This run's `triton` kernels predate the packed mask codes: they rebuilt every partial tile's "
                   "mask from coordinates")
    return method


def targets(rows: list) -> list:
    """The GPU issue's attention targets, each met, missed by how much, or not measured: the exact-window kernel at
    least Flex's speed at every shape and pass and 3.6x dense at (b); tile windows 8x dense at (b), forward."""
    by_key = {row["key"]: row for row in rows if "passes" in row}

    def get(key, p, *path):
        value = by_key.get(key, {}).get("passes", {}).get(p, {})
        for part in path:
            value = value.get(part, {}) if isinstance(value, dict) else {}
        return value if isinstance(value, (int, float)) else None

    out = [target(f"({key}) {p}: exact windows / compiled Flex", get(key, p, "triton_speedup_vs_flex"), 1.0)
           for key in ("a", "b", "c") for p in PASSES]
    out.append(target("(b) forward: exact windows / dense", get("b", "forward", "backends", "triton",
                                                                 "speedup_vs_dense"), 3.6))
    out.append(target("(b) forward: tile windows / dense", get("b", "forward", "backends", "triton_tile",
                                                                "speedup_vs_dense"), 8.0))
    return out


def readme_table(results: dict) -> str:
    """The table of docs/attention.md (``<!-- table:attention_gpu -->``) from docs/results/bench_attention_gpu.json."""
    m = results["machine"]
    lines = ["| shape | pass | allowed pairs (FLOP bound) | `triton` ms (TFLOP/s; dense-equiv.) | "
             "`triton` kernels only, ms | `triton`, coordinate mask, ms | `triton`, raster order, ms | "
             "tile windows (`triton`) ms (TFLOP/s; vs dense) | "
             "`flex` ms (TFLOP/s) | dense flash ms | dense cuDNN ms | `triton` vs dense (of bound) | "
             "`flex` vs dense (of bound) | `triton` vs `flex` |", "|---" * 14 + "|"]
    for row in results["rows"]:
        label = f"({row['key']}) {_x(row['grid'])}, window {_x(row['window'])}"
        if "skipped" in row:
            lines.append(f"| {label} | – | – | {row['skipped']} |" + " |" * 10)
            continue
        label += f", {row['heads']} heads, D {row['head_dim']}"
        if row.get("below_min_rounds"):
            label += f" (**{row['rounds']} round only**: the run's time budget ran out)"
        box = row.get("triton_layout", {}).get("box")
        if box:
            label += f"; `triton` layout: {'raster' if box == 'raster' else _x(box) + ' boxes'}"
        for p, entry in row["passes"].items():
            b = entry["backends"]
            t, f = b["triton"], b["flex"]
            tri = f"{_ms(t)} ({t['tflops']:.0f}; {t['dense_equivalent_tflops']:.0f})" if "ms" in t else "–"
            kernels = f"{t['device_ms']:.2f}" if "device_ms" in t else "–"
            flx = f"{_ms(f)} ({f['tflops']:.0f})" if "ms" in f else "–"
            ratio = entry.get("triton_speedup_vs_flex")
            tl = b.get("triton_tile", {})
            tile = (f"{_ms(tl)} ({tl['tflops']:.0f}; {tl['speedup_vs_dense']:.2f}×)" if "speedup_vs_dense" in tl
                    else "–" if "tile" in row else "no row: " + row.get("no_tile", "no tile pattern at this shape"))
            lines.append(f"| {label} | {p.replace('_', '+')} | {row['allowed_pairs']:,} ({row['flop_bound']:.1f}×) | "
                         f"{tri} | {kernels} | {_ms(b.get('triton_coords', {}))} | "
                         f"{_ms(b.get('triton_raster', {}))} | {tile} | {flx} | {_ms(b['dense_flash'])} | "
                         f"{_ms(b['dense_cudnn'])} | {_vs(t)} | {_vs(f)} | "
                         f"{'–' if ratio is None else f'**{ratio:.2f}×**'} |")
    timed = [r for r in results["rows"] if "rounds" in r]
    first = {name: max(r["passes"][p]["backends"][name].get("first_call_s", 0) for r in timed for p in PASSES)
             for name in ("triton", "flex")} if timed else {}
    gpu = m["gpu"] or "CPU (no GPU: a plumbing run, not a speed)"
    lines += ["", f"{gpu}, driver {m['driver']}, torch {m['torch']}, triton {m['triton']}, CUDA {m['cuda']}; "
              f"{results['dtype']}, B=1, one run ({results['date'][:10]}, {results['elapsed_s']:.0f} s). Each backend "
              "called once first (compile: up to "
              + ", ".join(f"{k} {v:.0f} s" for k, v in first.items()) + " for the first call), "
              + _method(results, timed) + ". TFLOP/s counts the allowed pairs (4·D forward, 12·D "
              "forward+backward); dense-equivalent counts all N² pairs. \"vs dense\": the faster dense SDPA backend's "
              "median over this one's, and in brackets that speedup as a fraction of the FLOP bound. \"Coordinate "
              "mask\": the same kernels rebuilding partial tiles' masks from (t, h, w) coordinates instead of packed "
              "codes (\"–\": not in this run). vidgen's windows "
              "reach |d| ≤ w//2 (an even window sees one position more per axis than NATTEN's) and are clipped at "
              "the borders, where NATTEN shifts them" + "".join(_natten_note(r) for r in timed) + ". Shapes: "
              + "; ".join(f"({r['key']}) {r['note']}" for r in results["rows"] if "note" in r)
              + f". `{results['command']}`."]
    lines += ["", "| target | measured | result |", "|---|---|---|"]
    lines += [f"| {t['target']} ≥ {t['at_least']}× | {_measured(t)} | {t['result']} |"
              for t in targets(results["rows"])]
    return "\n".join(lines)


def _natten_note(row: dict) -> str:
    if "natten_pairs" not in row:
        return ""
    return (f"; at ({row['key']}) vidgen's pattern has {row['allowed_pairs']:,} pairs (FLOP bound "
            f"{row['flop_bound']:.1f}×), NATTEN's {row['natten_pairs']:,} ({row['natten_flop_bound']:.1f}×)")


def write_table(results_path: Path = OUT, page: Path = ROOT / "docs" / "attention.md") -> str:
    """Put :func:`readme_table` of ``results_path`` between the page's markers (eval/readme_tables.py's renderer)."""
    import readme_tables  # eval/ is on sys.path: bench_attention_gpu.py puts it there

    return readme_tables.write_table(TABLE, results_path, page)

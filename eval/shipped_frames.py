"""The frames every shipped pipeline gives at fixed seeds, as hashes: recorded once, checked by
``tests/integration/test_shipped_frames.py`` so that a change of the generation code that should not change what users see
cannot do so unnoticed.

Each case is one call of a shipped folder (``pretrained/``) in fp32, seed fixed, with its frames hashed
(sha256 of the float32 ``np`` output) next to the sha256 of the folder's weights. fp32 frames are the same on every
run of one machine kind, but the last bits of a float GEMM may differ between CPU kinds (AVX-512 against AVX2
kernels), so each record also names the machine it was made on (:func:`machine`) and keeps a small thumbnail of the
frames (8x8 per frame): on the recorded machine the hash must match exactly; on another the thumbnail must match
within ``THUMB_ATOL``.

    python eval/shipped_frames.py record            # (re)write tests/data/shipped_frames.json + .npz
    python eval/shipped_frames.py record --only flow   # re-record one case (a re-shipped folder)
    python eval/shipped_frames.py check             # compare, print the differences
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "shipped_frames.json"
THUMBS = OUT.with_suffix(".npz")
#: a thumbnail (8x8 mean-pooled frames in [0, 1]) may differ by this much on a CPU kind other than the recorded one
THUMB_ATOL = 2e-3

#: name -> (folder, call kwargs, how: "call" | "stream")
CASES = {
    "masked": ("shapes-masked", dict(prompt="a red circle moving right", num_frames=17), "call"),
    "flow": ("shapes-flow", dict(prompt="a blue square moving up", num_frames=17), "call"),
    "flow-short": ("shapes-flow", dict(prompt="a blue square moving up", num_frames=5), "call"),  # make test's flow case
    "flow-distilled": ("shapes-flow-distilled", dict(prompt="a green triangle moving left", num_frames=17), "call"),
    "autoregressive": ("shapes-autoregressive", dict(prompt="a yellow star rotating", num_frames=17), "call"),
    "causal": ("shapes-causal", dict(prompt="a red circle moving down", num_frames=17), "call"),
    "flow-story": ("shapes-flow", dict(prompt={0: "a red circle moving right", 17: "a blue square moving up"},
                                       num_frames=33), "call"),
    "causal-story": ("shapes-causal", dict(prompt={0: "a red circle moving right", 17: "a blue square moving up",
                                                   33: "a white star rotating"}, num_frames=49), "call"),
    "autoregressive-long": ("shapes-autoregressive", dict(prompt="a green star rotating on a black background",
                                                          num_frames=33), "call"),
    "causal-200": ("shapes-causal", dict(prompt="a green circle moving left", num_frames=200), "stream"),
}
#: cases ``make test`` runs (the rest run in ``make test-slow``)
FAST = ("masked", "flow-short", "flow-distilled", "causal")


def machine() -> str:
    """The CPU kind a record holds for: vendor / model, the ISA torch dispatches to, bf16 units, torch version."""
    model = platform.processor() or ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), model)
        flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    units = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "none"
    return f"{model} | {torch.backends.cpu.get_cpu_capability()} | bf16 units: {units} | torch {torch.__version__}"


def weights_hash(folder: Path) -> str:
    """sha256 over the folder's safetensors files (path and bytes, in sorted order)."""
    digest = hashlib.sha256()
    for f in sorted(folder.rglob("*.safetensors")):
        digest.update(str(f.relative_to(folder)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def run_case(name: str, pipes: dict | None = None) -> np.ndarray:
    """The case's frames (T, H, W, 3) float32 in [0, 1], on 2 threads."""
    from vidgen.pipelines import load_pipeline
    folder, kwargs, how = CASES[name]
    torch.set_num_threads(2)
    pipes = {} if pipes is None else pipes
    if folder not in pipes:
        pipes[folder] = load_pipeline(ROOT / "pretrained" / folder, dtype="fp32")
    pipe = pipes[folder]
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    if how == "stream":
        frames = np.concatenate(list(pipe.stream(generator=g, **kwargs)), axis=1)
    else:
        frames = pipe(generator=g, **kwargs).frames
    return np.ascontiguousarray(np.asarray(frames, dtype=np.float32)[0])


def frames_hash(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames, dtype=np.float32).tobytes()).hexdigest()


def thumbnail(frames: np.ndarray) -> np.ndarray:
    """(T, 8, 8, 3) mean-pooled frames."""
    t, h, w, c = frames.shape
    return frames.reshape(t, 8, h // 8, 8, w // 8, c).mean((2, 4)).astype(np.float32)


def load() -> tuple[dict, dict]:
    records = json.loads(OUT.read_text()) if OUT.exists() else {}
    thumbs = dict(np.load(THUMBS)) if THUMBS.exists() else {}
    return records, thumbs


def compare(name: str, frames: np.ndarray, record: dict, thumb: np.ndarray) -> tuple[bool, str]:
    """Exact on the recorded machine kind, thumbnails within :data:`THUMB_ATOL` elsewhere -> (ok, what)."""
    if frames.shape != tuple(record["shape"]):
        return False, f"{name}: shape {frames.shape}, recorded {tuple(record['shape'])}"
    if record["machine"] == machine():
        got = frames_hash(frames)
        return got == record["frames_sha256"], f"{name}: frames sha256 {got[:16]}, recorded {record['frames_sha256'][:16]}"
    diff = float(np.abs(thumbnail(frames) - thumb).max())
    return diff <= THUMB_ATOL, f"{name}: other machine kind; thumbnail max |diff| {diff:.2e} (bound {THUMB_ATOL})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("record", "check"))
    parser.add_argument("--only", nargs="*", default=None, help="case names (default: all)")
    args = parser.parse_args(argv)
    names = args.only or list(CASES)
    records, thumbs = load()
    pipes, failed = {}, 0
    for name in names:
        frames = run_case(name, pipes)
        folder = ROOT / "pretrained" / CASES[name][0]
        if args.mode == "record":
            records[name] = {"folder": f"pretrained/{CASES[name][0]}", "call": repr(CASES[name][1]),
                             "how": CASES[name][2], "dtype": "fp32", "seed": 0, "threads": 2,
                             "shape": list(frames.shape), "frames_sha256": frames_hash(frames),
                             "weights_sha256": weights_hash(folder), "machine": machine(),
                             "commit": _commit()}
            thumbs[name] = thumbnail(frames)
            print(f"{name}: {records[name]['frames_sha256'][:16]} {frames.shape}", flush=True)
        else:
            ok, what = compare(name, frames, records[name], thumbs[name])
            failed += not ok
            print(("ok   " if ok else "FAIL ") + what, flush=True)
    if args.mode == "record":
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(dict(sorted(records.items())), indent=1) + "\n")
        np.savez_compressed(THUMBS, **thumbs)
    return 1 if failed else 0


def _commit() -> str:
    import subprocess
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())

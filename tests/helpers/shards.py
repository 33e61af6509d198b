"""Helpers of the shard tests: tiny live tokenizers, a folder of captioned random clips, and a run killed with
kill -9 at its first checkpoint."""
from __future__ import annotations

import torch

from vidgen.testing import perturb_weights


def save_tiny_tokenizers(root, kinds=("vae", "fsq")) -> dict:
    """Save live (perturbed) tiny tokenizers under ``root``: ``"vae"`` a CausalVAE, ``"fsq"`` a CausalVQVAE with
    FSQ levels (4, 4, 4); returns ``{kind: folder}``. Torch's global RNG is left as found."""
    from pathlib import Path

    from vidgen.tokenizers import CausalVAE, CausalVQVAE
    build = {"vae": lambda: CausalVAE.from_preset("tiny"),
             "fsq": lambda: CausalVQVAE.from_preset("tiny", quantizer="fsq", fsq_levels=(4, 4, 4))}
    folders = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for kind in kinds:
            folders[kind] = Path(root) / kind
            perturb_weights(build[kind](), scale=0.02).save_pretrained(folders[kind])
    return folders


def write_captioned_clips(folder, clips: dict, seed: int = 0):
    """Write random MP4 clips ``{name: (frames, height, width, caption)}`` into ``folder`` (lossless H.264) with a
    ``metadata.jsonl`` of their captions; returns ``folder``."""
    import json
    from pathlib import Path

    from vidgen.io import write_video
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for name, (t, h, w, _) in clips.items():
        write_video(folder / name, torch.rand(3, t, h, w, generator=g) * 2 - 1, fps=8, quality=0)
    (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": c[3]}) + "\n"
                                                   for n, c in clips.items()))
    return folder


def kill9_at_first_checkpoint(cmd: list, run_dir, timeout: float = 120.0) -> None:
    """Start ``cmd`` (offline, one thread) and kill it with SIGKILL as soon as ``run_dir/checkpoints/latest``
    exists (or when it ends, or after ``timeout`` seconds); the caller checks that it was killed with steps to go."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = Path(run_dir) / "checkpoints" / "latest"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not latest.is_file():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

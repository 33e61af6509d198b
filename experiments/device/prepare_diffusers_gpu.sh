#!/usr/bin/env bash
# Run HERE, on the CPU machine (PyPI reachable), before the device call of diffusers_gpu.sh (its header gives the call).
# Makes .whl/ (ignored): the wheels the GPU image lacks for eval/bench_diffusers_models.py, which are diffusers and
# its one missing need (the image has torch, triton, transformers, accelerate, safetensors and peft; its package list
# is /work/.library/device/KINDS.md); setup.sh installs them there. Then prints what travels (under 64 MiB).
#   bash experiments/device/prepare_diffusers_gpu.sh
set -eu
cd "$(git rev-parse --show-toplevel)"
PY=${PY:-.venv/bin/python}
mkdir -p .git/info
grep -qxF /.whl/ .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  diffusers==0.42.1 importlib-metadata==10.2.0
$PY - <<'PYEOF'
import subprocess
from pathlib import Path
listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True,
                        text=True, check=True).stdout.split("\0")
tree = sum(Path(p).stat().st_size for p in listed if p and Path(p).is_file())
extra = sum(p.stat().st_size for p in Path(".whl").iterdir())
total = (tree + extra) / 2**20
print(f"travels: tree {tree / 2**20:.1f} MiB + .whl {extra / 2**20:.1f} MiB = {total:.1f} MiB of 64")
raise SystemExit(0 if total < 63.5 else "too large for one device call: carry less or shrink the tree")
PYEOF

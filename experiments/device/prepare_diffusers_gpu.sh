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
$PY experiments/device/travel_size.py .whl --hint "leave pretrained/ behind (bash experiments/device/travel.sh leave tokenizer: the call reads none of it)"

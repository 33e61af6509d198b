#!/usr/bin/env bash
# Run HERE, on the CPU machine (PyPI reachable), before the device calls of attention_gpu.sh and train_sample_gpu.sh
# (their headers give the calls). Makes the two ignored things that call carries and checks that the call fits:
#   .whl/   the wheels the GPU image lacks (diffusers and vector-quantize-pytorch with their missing needs; the image's
#           package list is /work/.library/device/KINDS.md); setup.sh installs them there;
#   .carry/test_prompts.{safetensors,json}   the MiniLM encodings of every prompt the CUDA test files and
#           eval/bench_pipelines.py use, recorded by experiments/device/offline_env.py while they run here (~2 min);
# and prints the size of what travels (tracked + untracked-not-ignored + carried), which must stay under 64 MiB.
# PyAV (35.8 MB) and the MiniLM package (83.5 MB) cannot travel at all: offline_env.py stands in for them there.
#   bash experiments/device/prepare_attention_gpu.sh
set -eu
cd "$(git rev-parse --show-toplevel)"
PY=${PY:-.venv/bin/python}
mkdir -p .git/info
for p in /.whl/ /.carry/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
rm -rf .whl && mkdir -p .whl .carry
# the commit the device runs (the copy it gets has no git history): eval/results.py's source_provenance reads it
# and the kernel files' sha256 at it, so a tree changed after this script ran is flagged in the results, not hidden
{ git rev-parse HEAD; git status --porcelain --untracked-files=no | grep -q . && echo 1 || echo 0
  for f in vidgen/attention/triton_jit.py vidgen/attention/triton_kernel.py; do
    printf '%s=%s,' $f $(git show HEAD:$f | sha256sum | cut -d' ' -f1); done; echo; } > .carry/commit.txt
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  diffusers==0.42.1 vector-quantize-pytorch==1.32.0 einx==0.4.3 torch-einops-utils==0.2.0 loguru==0.7.3 \
  frozendict==2.5.1 importlib-metadata==10.2.0
# the CUDA test files (setup.sh's CUDA_TESTS) that encode prompts
FILES=$(sed -n '/^CUDA_TESTS="/,/"$/p' experiments/device/setup.sh | tr -d '"' | sed 's/^CUDA_TESTS=//' | tr -s ' \n' ' ')
FILES=$(grep -l "prompt\|load_pipeline\|tiny_pipeline" $FILES)
echo "recording the prompts of: $FILES"
rm -f .carry/test_prompts.safetensors .carry/test_prompts.json
HF_HUB_OFFLINE=1 PYTHONPATH=experiments/device VIDGEN_TEXT_RECORD=.carry/test_prompts.safetensors \
  $PY -m pytest -q -p offline_env -p no:cacheprovider $FILES | tail -3
# the prompts of eval/bench_pipelines.py (train_sample_gpu.sh runs it there with PIPELINES=1): its smoke run at
# batch 8, recorded (about 12 minutes on a 2-core CPU without bf16 units; PIPELINE_PROMPTS=0 skips it)
if [ "${PIPELINE_PROMPTS:-1}" = 1 ]; then
  HF_HUB_OFFLINE=1 VIDGEN_TEXT_RECORD=.carry/test_prompts.safetensors OMP_NUM_THREADS=1 \
    $PY experiments/device/run_offline.py eval/bench_pipelines.py --quick --batch 8 --threads 1 | tail -2
fi
test -s .carry/test_prompts.safetensors
[ "${SIZE_CHECK:-1}" = 0 ] && exit 0  # gpu_issue.sh: travel.sh leave gpu-issue measures what travels instead
$PY experiments/device/travel_size.py .whl .carry/test_prompts.safetensors .carry/test_prompts.json \
  --hint "leave the shipped folders the call does not read behind (bash experiments/device/travel.sh leave gpu-issue)"

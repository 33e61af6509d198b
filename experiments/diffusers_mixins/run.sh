#!/usr/bin/env bash
# Runs the three harness files, one pytest process at a time, and prints each file's summary line.
#   ./run.sh                                   # vidgen from /work/main, tokenizer component named "tokenizer"
#   VIDGEN_TOKENIZER_KEY=text_tokenizer ./run.sh                      # vidgen before the rename
#   VIDGEN_ROOT=/work/scratch/vidgen-snapshot VIDGEN_TOKENIZER_KEY=text_tokenizer ./run.sh   # a pinned snapshot
# Extra arguments go to pytest (e.g. -rf to list failures, --tb=short).
set -u
cd "$(dirname "$0")"
VIDGEN_ROOT="${VIDGEN_ROOT:-/work/main}"
DIFFUSERS_TESTS_ROOT="${DIFFUSERS_TESTS_ROOT:-/work/scratch/diffusers-tests}"
PY="${PY:-/work/main/.venv/bin/python}"
echo "vidgen: $VIDGEN_ROOT   tokenizer key: ${VIDGEN_TOKENIZER_KEY:-tokenizer}   diffusers tests: $DIFFUSERS_TESTS_ROOT"
status=0
# Deselected, with the reason: test_from_save_pretrained_variant loads the variant fine, then asserts diffusers' wording
# for the missing non-variant file, "no file named diffusion_pytorch_model.bin", the pickle fallback diffusers looks
# for after safetensors. vidgen loads safetensors only by policy (a pickle is never read), so its OSError names the
# safetensors file it looked for instead.
DESELECT=(--deselect test_vidgen_tokenizer_models.py::TestCausalVAE::test_from_save_pretrained_variant
          --deselect test_vidgen_tokenizer_models.py::TestCausalVQVAE::test_from_save_pretrained_variant)
for f in test_vidgen_pipelines.py test_vidgen_pipelines_common.py test_vidgen_tokenizer_models.py; do
  out=$(PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 PYTHONPATH="$DIFFUSERS_TESTS_ROOT:$VIDGEN_ROOT" DIFFUSERS_TESTS_ROOT="$DIFFUSERS_TESTS_ROOT" \
        "$PY" -m pytest -q -p no:randomly -W ignore "${DESELECT[@]}" "$@" "$f" 2>&1)
  rc=$?
  [ $rc -ne 0 ] && status=$rc
  printf '%s\n' "$out" | grep -E '^(FAILED|ERROR) test_[a-z_]+\.py' || true
  printf '%-34s %s\n' "$f:" "$(printf '%s\n' "$out" | tail -n 1)"
done
exit $status

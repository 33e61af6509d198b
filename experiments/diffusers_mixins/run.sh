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
# Deselected tests and expected failures, each with its reason, are listed in expectations.py and applied by
# conftest.py (nothing is put into diffusers' namespaces). record.py runs the same three files and writes
# docs/results/diffusers_test_mixins.json.
for f in test_vidgen_pipelines.py test_vidgen_pipelines_common.py test_vidgen_tokenizer_models.py; do
  out=$(PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 PYTHONPATH="$DIFFUSERS_TESTS_ROOT:$VIDGEN_ROOT" DIFFUSERS_TESTS_ROOT="$DIFFUSERS_TESTS_ROOT" \
        "$PY" -m pytest -q -p no:randomly -W ignore "$@" "$f" 2>&1)
  rc=$?
  [ $rc -ne 0 ] && status=$rc
  printf '%s\n' "$out" | grep -E '^(FAILED|ERROR) test_[a-z_]+\.py' || true
  printf '%-34s %s\n' "$f:" "$(printf '%s\n' "$out" | tail -n 1)"
done
exit $status

#!/usr/bin/env bash
# What a device call sends is the working tree (tracked and untracked-not-ignored files) plus what it carries, at most
# 64 MiB; pretrained/ alone is about 80. So, for the calls, the shipped folders a call does not read stay behind:
#   bash experiments/device/travel.sh leave gpu-issue   # attention_gpu.sh, train_sample_gpu.sh: the CUDA tests load
#                                                       # shapes-flow, shapes-masked, shapes-autoregressive only
#   bash experiments/device/travel.sh leave tokenizer   # tokenizer_gpu.sh reads no shipped folder
#   bash experiments/device/travel.sh leave stage7      # stage7_gpu.sh reads pretrained/shapes-flow only
#   ... the device calls ...
#   bash experiments/device/travel.sh back              # always, before anything else
# `leave` moves the folders to $HOLD (outside the checkout) and prints what travels then; `back` returns them and
# checks the tree has no deletions left. Never commit between the two.
set -eu
cd "$(git rev-parse --show-toplevel)"
HOLD=${HOLD:-/tmp/vidgen-device-hold}
case "${1:-}" in
  leave)
    case "${2:-}" in
      gpu-issue) LEAVE="pretrained/shapes-causal pretrained/shapes-flow-distilled pretrained/natural-vae-small
                        pretrained/natural-fsq-small" ;;
      tokenizer) LEAVE=$(ls -d pretrained/*) ;;
      stage7) LEAVE=$(ls -d pretrained/* | grep -vx pretrained/shapes-flow) ;;  # stage7_gpu.sh reads shapes-flow
      *) echo "usage: $0 leave gpu-issue|tokenizer|stage7" >&2; exit 2 ;;
    esac
    if git status --porcelain pretrained | grep -q .; then
      echo "pretrained/ has uncommitted changes: commit them first (back restores pretrained/ from git)" >&2; exit 1
    fi
    mkdir -p $HOLD/pretrained
    for d in $LEAVE; do [ -d "$d" ] && mv "$d" "$HOLD/$d"; done
    ${PY:-.venv/bin/python} experiments/device/travel_size.py --each .whl $(ls -d .carry/* 2>/dev/null)
    echo "left behind in $HOLD: $LEAVE; run '$0 back' after the calls" ;;
  back)
    if [ -d $HOLD/pretrained ]; then
      for d in $HOLD/pretrained/*; do [ -e "$d" ] && mv "$d" pretrained/; done
      rmdir $HOLD/pretrained 2>/dev/null || true
    fi
    git ls-files -d -z pretrained | xargs -0 -r git checkout --  # only what is still missing comes from git
    if git status --porcelain pretrained | grep -q .; then echo "pretrained/ differs from git:" >&2; git status --short pretrained >&2; exit 1; fi
    echo "pretrained/ is back" ;;
  *) echo "usage: $0 leave gpu-issue|tokenizer|stage7, or $0 back" >&2; exit 2 ;;
esac

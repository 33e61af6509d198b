#!/usr/bin/env bash
# The GPU issue's run from this machine, in two steps around its two device calls (12 minutes of commands):
#   bash experiments/device/gpu_issue.sh prepare
#       prepare_attention_gpu.sh (wheels, recorded prompts, the commit; ~2 min), then travel.sh leave gpu-issue; it
#       prints the two calls to make, one right after the other on the warm machine:
#         run(command="bash experiments/device/attention_gpu.sh", timeout_s=420,
#             carry=[".whl", ".carry/test_prompts.safetensors", ".carry/test_prompts.json", ".carry/commit.txt"])
#         run(command="bash experiments/device/train_sample_gpu.sh", timeout_s=420, carry=<the same>)
#   bash experiments/device/gpu_issue.sh collect <files_at of call 1> <files_at of call 2>
#       travel.sh back; the results files into docs/results/ (each must record the kernel files' sha256 of this
#       tree), the logs into experiments/results/device_<gpu>_<date>/, and the docs' tables regenerated; then read
#       each file's "targets".
# Leftover device time (4 minutes or more): tokenizer_gpu.sh (its header).
set -eu
cd "$(git rev-parse --show-toplevel)"
PY=${PY:-.venv/bin/python}
case "${1:-}" in
  prepare)
    if git status --porcelain --untracked-files=no | grep -q .; then
      echo "commit first: the results record the commit the device ran" >&2; exit 1
    fi
    SIZE_CHECK=0 bash experiments/device/prepare_attention_gpu.sh
    bash experiments/device/travel.sh leave gpu-issue
    sed -n '/^#         run(/,/carry=<the same>)/p' "$0" | sed 's/^#       //' ;;
  collect)
    bash experiments/device/travel.sh back
    $PY - "$2" "$3" <<'PYEOF'
import hashlib
import json
import shutil
import sys
import tarfile
from datetime import date
from pathlib import Path

for i, folder in enumerate(map(Path, sys.argv[1:3]), start=1):
    for result in sorted(folder.glob("*.json")):
        data = json.loads(result.read_text())
        source = data.get("machine", data).get("source") or data.get("source")
        for name, digest in (source or {}).get("sha256", {}).items():
            if hashlib.sha256(Path(name).read_bytes()).hexdigest() != digest:
                raise SystemExit(f"{result.name}: {name} differs from the files the device ran")
        shutil.copyfile(result, Path("docs/results") / result.name)
        print(f"docs/results/{result.name}: " + json.dumps(data.get("targets", "no targets"))[:400])
    logs = folder / "logs.tgz"
    if logs.is_file():
        first = Path(sys.argv[1]) / "bench_attention_gpu.json"  # call 1's results name the GPU
        machine = json.loads(first.read_text()).get("machine", {}) if first.is_file() else {}
        gpu = "-".join((machine.get("gpu") or "gpu").lower().replace("nvidia", "").split()[:2])  # e.g. h100-80gb
        target = Path("experiments/results") / f"device_{gpu}_{date.today()}" / f"call{i}"
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(logs) as tar:
            tar.extractall(target, filter="data")
        print(f"logs of call {i}: {target}")
PYEOF
    $PY eval/readme_tables.py ;;
  *) echo "usage: $0 prepare | collect <files_at 1> <files_at 2>" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Run HERE, on the CPU machine, before the device call of tokenizer_gpu.sh (its header gives the call). Makes
# .carry/tokenizer/ (ignored), what that call carries besides .whl (prepare_attention_gpu.sh makes .whl):
#   site/     stand-ins for two packages the GPU image lacks, holding only the files the training reads: gradio's four
#             scene photographs (cheetah, tower, lion, groot; vidgen.data.natural.EXTRA_SOURCES) and stlpips-pytorch's
#             AlexNet weights (the perceptual loss, 9.9 MB); the image has scikit-image, scikit-learn and matplotlib,
#             which hold the other photographs;
#   resume/   with RESUME=<folder the last call's files came back to>: its run without the final weights, so a fresh
#             machine resumes the run (a warm one keeps runs/ and needs none); the small VAE's checkpoint is about
#             40 MB, so with the wheels and the stand-ins this fits the 64 MiB only with all of pretrained/ left behind
#             (travel.sh leave tokenizer), and the size check below says whether it does;
# and prints the size of what travels (tracked + untracked-not-ignored + .whl + .carry/tokenizer), under 64 MiB.
#   bash experiments/device/prepare_tokenizer_gpu.sh            # or RESUME=/work/.device/<call> bash <this>
set -eu
cd "$(git rev-parse --show-toplevel)"
PY=${PY:-.venv/bin/python}
mkdir -p .git/info
grep -qxF /.carry/ .git/info/exclude 2>/dev/null || echo /.carry/ >> .git/info/exclude
rm -rf .carry/tokenizer && mkdir -p .carry/tokenizer/site .carry/tokenizer/resume
$PY - <<'PYEOF'
import shutil
from pathlib import Path

from vidgen.data.natural import EXTRA_SOURCES
from vidgen.metrics.weights import package_file

site = Path(".carry/tokenizer/site")
wanted = [(package, relative) for package, relative in EXTRA_SOURCES.values() if package == "gradio"]
wanted.append(("stlpips_pytorch", "weights/vST0.0/alex_shift_tolerant.pth"))
for package, relative in wanted:
    target = site / package / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(package_file(package, relative), target)
    print(f"{target} ({target.stat().st_size / 2**20:.1f} MiB)")
PYEOF
if [ -n "${RESUME:-}" ]; then  # what resuming reads (the last checkpoint, log, plan), without the final weights
  $PY - "$RESUME" <<'PYEOF'
import io
import sys
import tarfile
from pathlib import Path

data = b"".join(p.read_bytes() for p in sorted(Path(sys.argv[1]).glob("run.tar.part*")))
with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as src, \
        tarfile.open(".carry/tokenizer/resume/run.tar.part00", "w:gz") as dst:
    for member in src.getmembers():
        if "/final" not in member.name:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
PYEOF
fi
$PY experiments/device/travel_size.py .whl .carry/tokenizer \
  --hint "leave pretrained/ behind first (bash experiments/device/travel.sh leave tokenizer), then run this again"

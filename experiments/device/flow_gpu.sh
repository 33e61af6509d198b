#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), from the repository root, in one call:
#   1. the CUDA-only tests (compiled Triton kernel, CUDA attention paths, precision, diffusers offload) and
#   2. experiments/device/cuda_checks.py (the flow pipeline on CUDA: fp32, bf16, model offload, against the CPU),
#      beside a probe of experiments/configs/generators/flow_shapes_gpu.yaml: it pre-encodes the clips and times 60 steps;
#   3. the flow continuation itself, its step count set so that it ends by DEADLINE seconds into the call.
# Needs (carried): .whl (diffusers, vector-quantize-pytorch and their missing needs) and .carry/text_table.* (made here
# by experiments/device/text_table.py). Writes $OUT/logs.tgz, $OUT/config.json and the final (EMA) weights in fp32,
# split in two files (one returned file may hold at most 16 MiB).
set -u
DEADLINE=${DEADLINE:-560}  # EXTRA: overrides for both runs (a CPU dry run: EXTRA='data.num_clips=64 data.batch=4')
source experiments/device/setup.sh  # wheels, environment, $L, $T, $CFG, machine.txt

(timeout 150 python3 -m pytest -q -rs -p no:cacheprovider tests/test_attention_triton.py tests/test_attention_bf16.py \
   tests/test_attention_backends.py tests/test_attention_module.py tests/test_precision.py \
   tests/test_tokenizers_diffusers.py -k "${TESTS_K:-not nothing}" > $L/tests.log 2>&1; echo "exit $?" >> $L/tests.log) &
TESTS=$!
# beside the probe's pre-encoding (one CPU core, short GPU bursts): its timings are indicative only
(timeout 120 python3 experiments/device/cuda_checks.py --table $T --out $L/cuda_checks.json > $L/cuda_checks.log 2>&1) &
CHECKS=$!
timeout 200 python3 experiments/device/train_offline_text.py --table $T --config $CFG steps=60 run_dir=runs/probe ${EXTRA:-} \
  log_every=20 ckpt_every=100000 > $L/probe.log 2>&1
wait $TESTS $CHECKS

BUDGET=$((DEADLINE - SECONDS - 45))  # start-up, cache read and the final save
STEPS=$(python3 -c "
import json, yaml; rows = [json.loads(l) for l in open('runs/probe/log.jsonl') if 'tokens_per_s' in l]
batch = yaml.safe_load(open('runs/probe/config.yaml'))['data']['batch']
s = batch * 320 / rows[-1]['tokens_per_s']; print(max(100, int($BUDGET / s)))") || STEPS=2000
echo "seconds $SECONDS budget $BUDGET steps $STEPS" | tee $L/plan.txt
timeout $((DEADLINE - SECONDS)) python3 experiments/device/train_offline_text.py --table $T --config $CFG \
  steps=$STEPS ${EXTRA:-} > $L/train.log 2>&1
echo "train exit $? at $SECONDS s" >> $L/plan.txt
cp runs/flow_shapes_gpu/log.jsonl runs/flow_shapes_gpu/config.yaml $L/ 2>/dev/null
cp runs/probe/log.jsonl $L/probe.jsonl 2>/dev/null
python3 - <<'PY' >> $L/plan.txt 2>&1
import os, shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
run, out = Path("runs/flow_shapes_gpu"), Path(os.environ["OUT"])
src = run / "final"
if not src.exists():  # stopped early: the last checkpoint's (non-EMA) weights
    src = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
t = load_file(str(src / "diffusion_pytorch_model.safetensors"))
total, seen, parts = sum(v.numel() * v.element_size() for v in t.values()), 0, ({}, {})
for k in sorted(t):
    parts[seen >= total / 2][k] = t[k].contiguous()
    seen += t[k].numel() * t[k].element_size()
for name, part in zip("ab", parts):
    save_file(part, str(out / f"weights_{name}.safetensors"))
shutil.copy(src / "config.json", out / "config.json")
print("weights from", src)
PY
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

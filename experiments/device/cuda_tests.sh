#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), from the repository root, one step after another (run side by
# side, they starved each other of the 16 cores): the CUDA-only tests, experiments/device/cuda_checks.py, and a
# short generator training on CUDA that is then resumed from its checkpoint. Carry .whl and .carry (see
# pair_gpu.sh). Writes $OUT/logs.tgz.
set -u
source experiments/device/setup.sh  # wheels, environment, $L, $T, $CFG, $CUDA_TESTS, machine.txt
timeout ${TESTS_S:-170} python3 -m pytest -q -rs -p no:cacheprovider --timeout 60 $CUDA_TESTS \
  -k "${TESTS_K:-not nothing}" > $L/tests.log 2>&1
echo "tests exit $? at $SECONDS s" >> $L/plan.txt
timeout 50 python3 experiments/device/cuda_checks.py --table $T --out $L/cuda_checks.json > $L/cuda_checks.log 2>&1
echo "checks exit $? at $SECONDS s" >> $L/plan.txt
SMOKE="--table $T --config $CFG run_dir=runs/smoke data.num_clips=2048 log_every=50 ckpt_every=150 ${EXTRA:-}"
timeout 60 python3 experiments/device/train_offline_text.py $SMOKE steps=300 > $L/smoke.log 2>&1
echo "smoke exit $? at $SECONDS s" >> $L/plan.txt
timeout 40 python3 experiments/device/train_offline_text.py $SMOKE steps=400 > $L/smoke_resume.log 2>&1
echo "resume exit $? at $SECONDS s" >> $L/plan.txt
cp runs/smoke/log.jsonl $L/smoke.jsonl 2>/dev/null
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

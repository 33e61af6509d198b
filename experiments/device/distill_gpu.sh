#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), from the repository root, in ONE call of at most ~8 minutes:
#   1. experiments/device/setup.sh: the carried wheels (diffusers), the environment, $L/machine.txt;
#   2. eval/bench_distill_gpu.py: the Wan2.1-T2V-1.3B architecture (random weights, bf16) at 480x832, 81 frames: the
#      teacher's guided denoising step (x 50: the dense sample), one DMD2 distillation step on a rank-32 LoRA student
#      with a full critic, and the student's 4-step sample. Its own time guard BENCH_BUDGET_S (default 360 s) and a
#      hard `timeout` of BENCH_S (420 s); it rewrites its results file after every row.
# Before the call, here on the CPU machine: bash experiments/device/prepare_diffusers_gpu.sh (.whl, a size check).
# Then the call:
#   run(command="bash experiments/device/distill_gpu.sh", timeout_s=480, carry=[".whl"])
# What comes back, under files_at: bench_distill_gpu.json (the rows, GPU name, torch, CUDA) and logs.tgz.
# Afterwards, here: copy the JSON to docs/results/ and quote it in docs/faster-sampling.md.
set -u
source experiments/device/setup.sh  # wheels, environment, $L, machine.txt
echo "setup done at $SECONDS s" >> $L/plan.txt
timeout ${BENCH_S:-420} python3 eval/bench_distill_gpu.py --budget-s ${BENCH_BUDGET_S:-360} \
  --out $OUT/bench_distill_gpu.json > $L/bench.log 2>&1
echo "bench exit $? at $SECONDS s" >> $L/plan.txt
tail -30 $L/bench.log; cat $L/machine.txt $L/plan.txt  # into output_tail
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), from the repository root, in ONE call of at most ~9 minutes:
#   1. experiments/device/setup.sh: the carried wheels (diffusers), the environment, $L/machine.txt;
#   2. eval/bench_diffusers_models.py: the Wan2.1-T2V-1.3B architecture at its real size (random weights, bf16) at
#      480x832, 81 frames: one CFG denoising step dense against vidgen's window attention, each eager and compiled,
#      with peak memory; then one LoRA training step (rank 32, 33x480x832 clip, gradient checkpointing). Its own time
#      guard BENCH_BUDGET_S (default 420 s) and a hard `timeout` of BENCH_S (480 s); it rewrites its results file
#      after every row, so a stopped run still returns what it measured.
# Before the call, here on the CPU machine: bash experiments/device/prepare_diffusers_gpu.sh (.whl, a size check).
# Then the call (kind left out: an H100, or an H200 when none opens; the results file names the GPU):
#   run(command="bash experiments/device/diffusers_gpu.sh", timeout_s=560, carry=[".whl"])
# What comes back, under files_at:
#   bench_diffusers_models_gpu.json   the rows (GPU name, torch, CUDA; seconds, first-call seconds, peak GiB);
#   logs.tgz                          logs/: plan.txt (exit code and time), machine.txt, bench.log.
# Afterwards, here: copy the JSON to docs/results/ and give its numbers in docs/bring-your-own-model.md.
# A CPU dry run (no GPU: the benchmark exits 2 and says so), python3 being the venv's:
#   PATH=$PWD/.venv/bin:$PATH OUT=/tmp/o bash experiments/device/diffusers_gpu.sh
set -u
source experiments/device/setup.sh  # wheels, environment, $L, machine.txt
echo "setup done at $SECONDS s" >> $L/plan.txt
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
timeout ${BENCH_S:-480} python3 eval/bench_diffusers_models.py --budget-s ${BENCH_BUDGET_S:-420} \
  --out $OUT/bench_diffusers_models_gpu.json > $L/bench.log 2>&1
echo "bench exit $? at $SECONDS s" >> $L/plan.txt
tail -30 $L/bench.log; cat $L/machine.txt $L/plan.txt  # into output_tail
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

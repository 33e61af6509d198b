#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), from the repository root, in ONE call of about 3 minutes:
#   1. experiments/device/setup.sh: the carried wheels (diffusers), the environment, $L/machine.txt;
#   2. eval/bench_causal_wan_gpu.py: the Wan2.1-T2V-1.3B architecture (random weights, bf16) made block-causal
#      (vidgen.adapters.causal) at 480x832: 10 chunks of 3 latent frames, 4 steps each against the rolling
#      KV cache (a sink and a window of 6 chunks); first-chunk latency, steady seconds per chunk and frames/s against
#      Self-Forcing's 17 frames/s. A hard `timeout` of BENCH_S (300 s).
# Before the call, here on the CPU machine: bash experiments/device/prepare_diffusers_gpu.sh (.whl, a size check).
# Then the call:
#   run(command="bash experiments/device/causal_wan_gpu.sh", timeout_s=360, carry=[".whl"])
# What comes back, under files_at: bench_causal_wan_gpu.json and logs.tgz.
# Afterwards, here: copy the JSON to docs/results/ and quote it in docs/streaming.md.
set -u
source experiments/device/setup.sh  # wheels, environment, $L, machine.txt
echo "setup done at $SECONDS s" >> $L/plan.txt
timeout ${BENCH_S:-300} python3 eval/bench_causal_wan_gpu.py --out $OUT/bench_causal_wan_gpu.json > $L/bench.log 2>&1
echo "bench exit $? at $SECONDS s" >> $L/plan.txt
tail -30 $L/bench.log; cat $L/machine.txt $L/plan.txt  # into output_tail
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

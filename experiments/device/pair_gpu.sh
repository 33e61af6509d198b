#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), from the repository root, in one call:
#   1. the CUDA-only tests, niced, with pytest-xdist when its wheel was carried (Triton compiles on the CPU cores);
#   2. the clips pre-encoded once and a 60-step probe of run A alone, then 60-step probes of A and B side by side
#      (same GPU; the same cached clips when both read the same tokenizer);
#   3. both runs side by side, each one's `steps` set from its side-by-side probe so that it ends by DEADLINE seconds
#      into the call.
# PREPARE: a command run first (flow_shapes_deep_gpu.yaml's header gives its own).
# The runs are two generator configs, CFG_A and CFG_B, both required (flow_gpu.sh names the flow pair of
# 2026-11-27). Masked and autoregressive, side by side:
#   CFG_A=experiments/configs/generators/masked_shapes_gpu.yaml \
#   CFG_B=experiments/configs/generators/autoregressive_shapes_gpu.yaml bash experiments/device/pair_gpu.sh
# Needs (carried): .whl (diffusers, vector-quantize-pytorch and their missing needs; pytest-xdist, execnet) and
# .carry/text_table.* (made here by experiments/device/text_table.py). Writes $OUT/logs.tgz and, per run, config.json
# and its EMA weights in fp32 split in files of at most 15 MiB (one returned file may hold at most 16 MiB; a 10.5 M
# parameter model needs three): $OUT/<run>/weights_{a,b,...}, <run> being the run_dir's last part.
# A CPU dry run: CFG_A=... CFG_B=... EXTRA='data.num_clips=64 data.batch=4 data.encode_batch=4' DEADLINE=200 OUT=/tmp/o bash <this>
set -u
DEADLINE=${DEADLINE:-550}
CFG_A=${CFG_A:?set CFG_A and CFG_B to two generator configs}; CFG_B=${CFG_B:?set CFG_A and CFG_B to two generator configs}
source experiments/device/setup.sh  # wheels, environment, $L, $T, $CFG, $CUDA_TESTS, machine.txt, run_dir, export_run
RUN_A=$(run_dir $CFG_A); RUN_B=$(run_dir $CFG_B)
TRAIN="python3 experiments/device/train_offline_text.py --table $T"

(N=""; python3 -c "import xdist" 2>/dev/null && N="-n ${TEST_WORKERS:-4}"
 OMP_NUM_THREADS=1 timeout ${TESTS_S:-380} nice -n 19 python3 -m pytest -q -rs -p no:cacheprovider $N --timeout 150 \
   --junitxml=$L/tests.xml $CUDA_TESTS -k "${TESTS_K:-not nothing}" > $L/tests.log 2>&1
 echo "tests exit $? at $SECONDS s" >> $L/plan.txt) &
TESTS=$!

${PREPARE:-true} > $L/prepare.log 2>&1 || echo "PREPARE failed: see prepare.log" >> $L/plan.txt  # e.g. a grown model
PROBE="steps=60 log_every=20 ckpt_every=100000 threads=4 ${EXTRA:-}"
timeout 240 $TRAIN --config $CFG_A run_dir=runs/probe_alone $PROBE > $L/probe_alone.log 2>&1
echo "probe alone exit $? at $SECONDS s" >> $L/plan.txt
timeout 90 $TRAIN --config $CFG_A run_dir=runs/probe_a $PROBE > $L/probe_a.log 2>&1 &
PA=$!
timeout 90 $TRAIN --config $CFG_B run_dir=runs/probe_b $PROBE > $L/probe_b.log 2>&1
wait $PA
echo "probes side by side done at $SECONDS s" >> $L/plan.txt

# Seconds a step from the probe's logged times (rows 20 steps apart), and the steps that fit. The 1.9: on 2026-11-27
# (experiments/results/device_h100_2026-11-27c/) the full runs side by side took 1.4x (flow, 12 blocks) and 1.9x (AR)
# the probes' step times, so both were stopped by the deadline before their schedules ended.
steps_for() {
  python3 -c "
import json; rows = [json.loads(l) for l in open('$1/log.jsonl') if '\"loss\"' in l]
s = (rows[-1]['time'] - rows[0]['time']) / (rows[-1]['step'] - rows[0]['step'])
print(max(100, int(($DEADLINE - $SECONDS - 60) / (1.9 * s))), round(s, 4))" 2>/dev/null || echo "1000 unknown"
}
read STEPS_A SA <<< "$(steps_for runs/probe_a)"; read STEPS_B SB <<< "$(steps_for runs/probe_b)"
echo "at $SECONDS s: A $SA s/step -> $STEPS_A steps; B $SB s/step -> $STEPS_B steps" | tee -a $L/plan.txt
LEFT=$((DEADLINE - SECONDS - 15))
timeout $LEFT $TRAIN --config $CFG_A steps=$STEPS_A ckpt_every=250 threads=4 ${EXTRA:-} > $L/train_a.log 2>&1 &
A=$!
timeout $LEFT $TRAIN --config $CFG_B steps=$STEPS_B ckpt_every=250 threads=4 ${EXTRA:-} > $L/train_b.log 2>&1
echo "train B exit $? at $SECONDS s" >> $L/plan.txt
wait $A; echo "train A exit $? at $SECONDS s" >> $L/plan.txt
kill $TESTS 2>/dev/null; wait $TESTS 2>/dev/null

export_run $RUN_A; export_run $RUN_B
for p in probe_alone probe_a probe_b; do cp runs/$p/log.jsonl $L/$p.jsonl 2>/dev/null; done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), from the repository root: ONE generator run alone, for a call too
# short for pair_gpu.sh's tests and probes (written for the 264 s left on 2026-11-27).
#   1. a 1-step run that pre-encodes the clips into the cache (its time is not the training's);
#   2. the run with `steps` set from STEP_S (seconds a step alone, from an earlier call's log) so that it ends by
#      DEADLINE seconds into the call, ckpt_every 250;
#   3. the EMA weights exported as pair_gpu.sh does ($OUT/<run>/weights_*.safetensors, config.json; logs.tgz).
#   CFG=experiments/configs/generators/autoregressive_shapes_story_tail_gpu.yaml STEP_S=0.045 DEADLINE=170 \
#     bash experiments/device/continue_gpu.sh
# A CPU dry run: CFG=... STEP_S=1 EXTRA='data.num_clips=64 data.batch=4 data.encode_batch=4 threads=2' DEADLINE=150 OUT=/tmp/o bash <this>
set -u
DEADLINE=${DEADLINE:-170}; STEP_S=${STEP_S:?seconds a step alone, from an earlier log}
RUN_CFG=${CFG:?set CFG to a generator config}
source experiments/device/setup.sh  # $L, $T, run_dir, export_run (it sets CFG too: RUN_CFG keeps ours)
RUN=$(run_dir $RUN_CFG)
TRAIN="python3 experiments/device/train_offline_text.py --table $T"
timeout 120 $TRAIN --config $RUN_CFG run_dir=runs/encode_only steps=1 log_every=1 ckpt_every=100000 ${EXTRA:-} > $L/encode.log 2>&1
echo "encode exit $? at $SECONDS s" >> $L/plan.txt
STEPS=$(python3 -c "print(max(100, int(($DEADLINE - $SECONDS - 25) / $STEP_S)))")
echo "at $SECONDS s: $STEPS steps at $STEP_S s/step" >> $L/plan.txt
timeout $((DEADLINE - SECONDS - 12)) $TRAIN --config $RUN_CFG steps=$STEPS ckpt_every=250 ${EXTRA:-} > $L/train.log 2>&1
echo "train exit $? at $SECONDS s" >> $L/plan.txt
export_run $RUN
echo "exported at $SECONDS s" >> $L/plan.txt
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

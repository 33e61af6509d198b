#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), from the repository root: the GPU issue's leftover device time trains
# the general tokenizer (experiments/configs/tokenizers/natural_vae_small_gpu.yaml, its ship rule in its header),
# resumable across calls: experiments/device/tokenizer_gpu.py train, until DEADLINE seconds into the call.
# Before the call, here: bash experiments/device/prepare_attention_gpu.sh (the wheels, .whl) and
# bash experiments/device/prepare_tokenizer_gpu.sh (the photographs and ST-LPIPS weights; RESUME=<folder> carries the
# last call's parts for a fresh machine) and bash experiments/device/travel.sh leave tokenizer (no shipped folder is
# read; travel.sh back after the call). Then, with at least 4 minutes of device time left:
#   run(command="DEADLINE=170 bash experiments/device/tokenizer_gpu.sh", timeout_s=200, carry=[".whl", ".carry/tokenizer"])
# What comes back: tokenizer_gpu.json (resume, plan, steps done), run.tar.partNN (the run: last checkpoint, EMA
# weights in final/, log, plan) and logs.tgz. Afterwards, here:
#   .venv/bin/python experiments/device/tokenizer_gpu.py judge <files_at>   # the ship rule, on the CPU
# A CPU dry run (no GPU: the trainer runs on the CPU, tiny):
#   OUT=/tmp/o DEADLINE=120 EXTRA='data.num_clips=32 data.render_workers=2 data.video_batch=2 data.image_batch=2
#     data.crop=32 loss.perceptual=0 log_every=2 threads=2' PROBE=6 bash experiments/device/tokenizer_gpu.sh
set -u
DEADLINE=${DEADLINE:-170}
source experiments/device/setup.sh  # wheels, environment, $L, machine.txt
export PYTHONPATH=$PWD/.carry/tokenizer/site:$PYTHONPATH  # the stand-ins for gradio's photographs and ST-LPIPS
echo "setup done at $SECONDS s" >> $L/plan.txt
python3 experiments/device/tokenizer_gpu.py train --deadline-s $((DEADLINE - SECONDS - 5)) --out $OUT \
  --probe-steps ${PROBE:-200} ${EXTRA:-} > $L/driver.log 2>&1
echo "driver exit $? at $SECONDS s" >> $L/plan.txt
mv $OUT/train.log $L/ 2>/dev/null
tail -30 $L/driver.log; tail -5 $L/train.log 2>/dev/null; cat $L/machine.txt $L/plan.txt  # into output_tail
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

#!/usr/bin/env bash
# Stage 7 of the shapes issue on the lent GPU machine, in ONE call: experiments/configs/generators/flow_shapes_stage7.yaml
# trained (continued from its committed portable checkpoint when there is one), then read by its ship rule
# (experiments/stage7_read.py: every 1000 steps in order, the first that passes ships).
#   1. setup.sh (wheels, environment, $L/machine.txt);
#   2. the clips pre-encoded (a 1-step run; its time is not the training's);
#   3. the run until its last step or TRAIN_END seconds into the call (default 400): checkpoints every 1000 steps,
#      all kept, and the portable checkpoint every 100;
#   4. the reads on this GPU until READ_END (default 560): experiments/stage7_read.py, results after every read;
#   5. what comes back under $OUT: stage7_read.json (the committed curve with this machine's reads added); the
#      shipping (or last) checkpoint's EMA weights (export_weights.py: stage7/weights_*.safetensors and
#      config.json); the portable checkpoint (portable/, to
#      commit when the run did not reach its last step); logs.tgz (plan.txt, machine.txt, encode.log, train.log,
#      read.log, the run's log.jsonl).
# Before the call, here (the tree committed):
#   bash experiments/device/stage7_gpu.sh prepare      # wheels, the two text tables, what travels
#   run(command="bash experiments/device/stage7_gpu.sh", timeout_s=600,
#       carry=[".whl", ".carry/text_table.safetensors", ".carry/text_table.json", ".carry/test_prompts.safetensors",
#              ".carry/test_prompts.json", ".carry/commit.txt"])
#   bash experiments/device/travel.sh back; then experiments/device/unpack_weights.py and the read's JSON into
#   experiments/results/ (the header of flow_shapes_stage7.yaml says what ships).
# A CPU dry run (tiny data, 4 steps, reads at 2-step checkpoints at 1 sampling step):
#   OUT=/tmp/s7 DRY=1 bash experiments/device/stage7_gpu.sh
set -u
RUN_CFG=experiments/configs/generators/flow_shapes_stage7.yaml
if [ "${1:-}" = prepare ]; then
  set -eo pipefail
  SIZE_CHECK=0 PIPELINE_PROMPTS=0 bash experiments/device/prepare_attention_gpu.sh  # wheels, .carry/commit.txt
  PY=${PY:-.venv/bin/python}
  # every training caption (train_offline_text.py) and the read's 192 tuning prompts (recorded as the pipeline
  # encodes them, negative prompt included, by a 1-step read of the shipped model)
  HF_HUB_OFFLINE=1 $PY experiments/device/text_table.py --clips 32768 --out .carry/text_table.safetensors
  mkdir -p /tmp/stage7_prepare/final && cp -r pretrained/shapes-flow/transformer/. /tmp/stage7_prepare/final/
  HF_HUB_OFFLINE=1 VIDGEN_TEXT_RECORD=.carry/test_prompts.safetensors OMP_NUM_THREADS=2 $PY \
    experiments/device/run_offline.py experiments/stage7_read.py /tmp/stage7_prepare --steps 1 --batch 32 \
    --out /tmp/stage7_prepare/read.json | tail -2
  bash experiments/device/travel.sh leave stage7
  exit 0
fi
TRAIN_END=${TRAIN_END:-400}; READ_END=${READ_END:-560}
READ_ARGS="--device cuda --batch 64"; EXTRA="threads=8"
if [ "${DRY:-0}" = 1 ]; then  # the CPU dry run
  READ_ARGS="--device cpu --batch 4 --prompts 4 --steps 1 --every 2"
  EXTRA="data.num_clips=64 data.batch=4 data.encode_batch=4 threads=2 steps=4 portable_every=2"
  CKPT=2; TRAIN_END=300; READ_END=400
fi
source experiments/device/setup.sh  # $L, $T, run_dir, export_run (it sets CFG too: ours is RUN_CFG)
RUN=$(run_dir $RUN_CFG)
TRAIN="python3 experiments/device/train_offline_text.py --table $T --config $RUN_CFG"
echo "setup done at $SECONDS s" >> $L/plan.txt
timeout 150 $TRAIN run_dir=runs/encode_only steps=1 log_every=1 ckpt_every=100000 portable_dir= $EXTRA \
  > $L/encode.log 2>&1
echo "encode exit $? at $SECONDS s" >> $L/plan.txt
timeout $((TRAIN_END - SECONDS)) $TRAIN ckpt_every=${CKPT:-1000} keep_checkpoints=100 $EXTRA > $L/train.log 2>&1
echo "train exit $? at $SECONDS s" >> $L/plan.txt
cp $RUN/log.jsonl $L/ 2>/dev/null
# the curve so far (earlier machines' reads): the read keeps its rows and adds this machine's
[ "${DRY:-0}" = 1 ] || cp experiments/results/stage7_read.json $OUT/stage7_read.json 2>/dev/null
timeout $((READ_END - SECONDS)) python3 experiments/device/run_offline.py experiments/stage7_read.py $RUN $READ_ARGS \
  --out $OUT/stage7_read.json > $L/read.log 2>&1
echo "read exit $? at $SECONDS s" >> $L/plan.txt
SHIPS=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(next((r['folder'] for r in d['rows'] if r['verdict']['ships']), d['rows'][-1]['folder']))" $OUT/stage7_read.json 2>/dev/null)
if [ -n "$SHIPS" ]; then
  python3 experiments/device/export_weights.py $RUN $OUT/stage7 $SHIPS >> $L/plan.txt 2>&1
  echo "exported $SHIPS at $SECONDS s" >> $L/plan.txt
fi
PORTABLE=$(python3 -c "import yaml; print(yaml.safe_load(open('$RUN_CFG'))['portable_dir'])")
[ -d "$PORTABLE" ] && mkdir -p $OUT/portable && cp $PORTABLE/* $OUT/portable/
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

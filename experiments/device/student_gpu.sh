#!/usr/bin/env bash
# The shipped flow's few-step student distilled on the lent GPU machine, in ONE call: configs/shapes-flow-distilled/
# stage1.yaml (DMD2, its teacher pretrained/shapes-flow as shipped) run through train_offline_text.py --distill.
# Its ship rule is the recipe's header; the read (eval/distill_tuning.py) runs afterwards on the CPU machine.
#   1. setup.sh (wheels, environment, $L/machine.txt);
#   2. the clips pre-encoded (a 1-step run; its time is not the training's);
#   3. the run until its last step or TRAIN_END seconds into the call (default 200): checkpoints every 100 steps,
#      the portable checkpoint (experiments/checkpoints/distill_shapes_dmd2) every 50;
#   4. what comes back under $OUT: the student's EMA weights (export_weights.py: student/weights_*.safetensors and
#      config.json; final/ when the run ended, else its last checkpoint), the portable checkpoint (portable/, to
#      commit when the run did not reach its last step) and logs.tgz (plan.txt, machine.txt, encode.log,
#      train.log, the run's log.jsonl).
# Before the call, here (the tree committed; after gpu_issue.sh prepare, whose travel state it shares):
#   bash experiments/device/student_gpu.sh prepare     # the training captions' text table
#   run(command="bash experiments/device/student_gpu.sh", timeout_s=<what is left>,
#       carry=[".whl", ".carry/student_text.safetensors", ".carry/student_text.json", ".carry/commit.txt"])
#   bash experiments/device/travel.sh back; experiments/device/unpack_weights.py <files_at>/student runs/.../final
#   and pipelines/distill.py --assemble for the pipeline eval/distill_tuning.py reads.
# A CPU dry run (tiny data, 4 steps):  OUT=/tmp/sg DRY=1 bash experiments/device/student_gpu.sh
set -u
RUN_CFG=configs/shapes-flow-distilled/stage1.yaml
PORTABLE=experiments/checkpoints/distill_shapes_dmd2
TABLE=.carry/student_text.safetensors
if [ "${1:-}" = prepare ]; then
  set -eo pipefail
  CLIPS=$(${PY:-.venv/bin/python} -c "import yaml; print(yaml.safe_load(open('$RUN_CFG'))['data']['num_clips'])")
  HF_HUB_OFFLINE=1 ${PY:-.venv/bin/python} experiments/device/text_table.py --clips $CLIPS --out $TABLE
  exit 0
fi
TRAIN_END=${TRAIN_END:-200}
EXTRA="threads=8 ckpt_every=100 portable_dir=$PORTABLE portable_every=50 portable_ema=false"
if [ "${DRY:-0}" = 1 ]; then  # the CPU dry run
  PORTABLE=/tmp/student_dry_portable
  EXTRA="data.num_clips=64 data.batch=4 data.encode_batch=4 threads=2 steps=4 ckpt_every=2 portable_dir=$PORTABLE \
portable_every=2 portable_ema=false run_dir=/tmp/student_dry"
  TRAIN_END=400
fi
source experiments/device/setup.sh  # $L, run_dir, export_run
RUN=$(run_dir $RUN_CFG); [ "${DRY:-0}" = 1 ] && RUN=/tmp/student_dry
TRAIN="python3 experiments/device/train_offline_text.py --distill --table $TABLE --config $RUN_CFG"
echo "setup done at $SECONDS s" >> $L/plan.txt
timeout 120 $TRAIN $EXTRA run_dir=runs/encode_only steps=1 log_every=1 ckpt_every=100000 portable_dir= \
  > $L/encode.log 2>&1
echo "encode exit $? at $SECONDS s" >> $L/plan.txt
timeout $((TRAIN_END - SECONDS)) $TRAIN $EXTRA > $L/train.log 2>&1
echo "train exit $? at $SECONDS s" >> $L/plan.txt
cp $RUN/log.jsonl $L/ 2>/dev/null
python3 experiments/device/export_weights.py $RUN $OUT/student >> $L/plan.txt 2>&1
echo "exported at $SECONDS s" >> $L/plan.txt
[ -d "$PORTABLE" ] && mkdir -p $OUT/portable && cp $PORTABLE/* $OUT/portable/
tail -5 $L/train.log; cat $L/plan.txt  # into output_tail
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

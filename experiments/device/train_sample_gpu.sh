#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), from the repository root, in ONE call of at most 6 minutes, right after
# attention_gpu.sh (that one first: it is the GPU issue's kernel check; this one then finds the machine warm).
# Generator training and sampling on the GPU:
#   1. experiments/device/setup.sh (wheels, environment, $L/machine.txt);
#   2. eval/bench_generators.py --device cuda: training tokens/s and MFU against an 8192^3 bf16 GEMM timed in the same
#      run, large (~310 M, also compiled) / base / small presets, a 17x256x256 clip through a 4x8x8 VAE in 1x2x2
#      patches (1,280 tokens a clip), fp32 / bf16 / bf16+compile; the AR decode step eager and replayed from a CUDA
#      graph (right after `large`); sampling of the three generators (hard limit GEN_S, default 190 s; the results
#      file is rewritten after every row); provenance: the commit and the kernel files' sha256;
#   3. eval/bench_diffusers_models.py: the Wan2.1-1.3B architecture (random weights, bf16), one guided denoising step,
#      compiled (each block once) then eager: dense against exact windows at 480x832, 81 frames, and dense against
#      tile-aligned windows at 512x768 (tiles the Triton kernel runs), with peak memory and the backend each windowed
#      row ran; then a LoRA training step (hard limit WAN_S, default 150 s; its own time guard 20 s less);
#   4. only with PIPELINES=1: eval/bench_pipelines.py --device cuda at batch 1 and 8 (seconds per video of the three
#      shipped pipelines, prompts served from the recorded text table: run_offline.py; hard limit PIPE_S each, 45 s).
# Before the call, here: bash experiments/device/prepare_attention_gpu.sh (wheels, recorded prompts, the commit) and
# bash experiments/device/travel.sh leave gpu-issue (both done for attention_gpu.sh; travel.sh back after this call).
#   run(command="bash experiments/device/train_sample_gpu.sh", timeout_s=420,
#       carry=[".whl", ".carry/test_prompts.safetensors", ".carry/test_prompts.json", ".carry/commit.txt"])
# What comes back: bench_generators_cuda.json, bench_diffusers_models_gpu.json (with PIPELINES=1 also
# bench_pipelines_cuda_b1.json, bench_pipelines_cuda_b8.json) and logs.tgz (plan.txt, machine.txt, each step's log). Afterwards, here: copy the JSON files to docs/results/ and
# `make docs` (their tables: eval/readme_tables.py).
set -u
source experiments/device/setup.sh
echo "setup done at $SECONDS s" >> $L/plan.txt
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor
timeout ${GEN_S:-190} python3 eval/bench_generators.py --device cuda --out $OUT/bench_generators_cuda.json \
  > $L/generators.log 2>&1
echo "generators exit $? at $SECONDS s" >> $L/plan.txt
WAN_S=${WAN_S:-150}
timeout $WAN_S python3 eval/bench_diffusers_models.py --budget-s $((WAN_S - 20)) \
  --out $OUT/bench_diffusers_models_gpu.json > $L/wan.log 2>&1
echo "wan step exit $? at $SECONDS s" >> $L/plan.txt
if [ "${PIPELINES:-0}" = 1 ]; then
  for B in 1 8; do
    timeout ${PIPE_S:-45} python3 experiments/device/run_offline.py eval/bench_pipelines.py --device cuda --batch $B \
      --no-compile --rounds 3 --out $OUT/bench_pipelines_cuda_b$B.json > $L/pipelines_b$B.log 2>&1
    echo "pipelines batch $B exit $? at $SECONDS s" >> $L/plan.txt
  done
fi
tail -25 $L/generators.log; tail -12 $L/wan.log; tail -4 $L/pipelines_b*.log 2>/dev/null
cat $L/machine.txt $L/plan.txt  # into output_tail
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

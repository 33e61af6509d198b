#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), from the repository root, in ONE call of at most 6 minutes (the GPU
# issue's run is this call and train_sample_gpu.sh's, 12 minutes of commands in all):
#   1. experiments/device/setup.sh: the carried wheels, the environment (with offline_env.py standing in for PyAV and
#      the MiniLM package, which cannot travel), $L/machine.txt (GPU, driver, torch, triton, what is not importable);
#   2. eval/bench_attention_gpu.py on a quiet GPU (all 16 cores free for its Triton and flex compiles): its own time
#      guard BENCH_BUDGET_S (default 200 s) and a hard `timeout` of BENCH_S (230 s); it rewrites its results file after
#      every shape, so a stopped run still returns what it measured;
#   3. the CUDA tests of cuda_tests.sh (setup.sh's $CUDA_TESTS: the Triton kernels against the reference on this GPU;
#      the benchmark also checks the timed, autotuned kernels against Flex and the reference at its own shapes) with
#      pytest-xdist, until DEADLINE (default 355 s into the call),
#      with VIDGEN_TRITON_AUTOTUNE=0 (one launch config: each small test grid would otherwise pay a tuning; the last
#      run's tests stopped at 80 % on that).
#      (cuda_tests.sh's pipeline checks and smoke training need the 14 MB training text table, which does not fit
#      beside the wheels: not run here.)
# Before the call, here on the CPU machine: bash experiments/device/prepare_attention_gpu.sh (wheels into .whl, the
# test prompts' encodings into .carry/test_prompts.*, the commit), then bash experiments/device/travel.sh leave
# gpu-issue (pretrained/ alone is ~80 MiB of the 64 a call carries: the shipped folders no CUDA test loads stay
# behind; it prints what travels). Then the call, and after this call and train_sample_gpu.sh's, travel.sh back:
#   run(command="bash experiments/device/attention_gpu.sh", timeout_s=420,
#       carry=[".whl", ".carry/test_prompts.safetensors", ".carry/test_prompts.json", ".carry/commit.txt"])
# (kind left out: an H100, or an H200 when none opens; the results file names the GPU). With the machine's start
# (~50 s) it leaves about 8 of a session's 15 device minutes: call train_sample_gpu.sh at once, on the warm
# machine (its ~6 minutes end the GPU issue's run; what is left then can go to tokenizer_gpu.sh). What comes back, under files_at:
#   bench_attention_gpu.json   the results (GPU name, driver, torch, triton, CUDA, cuDNN; every shape's rows);
#   logs.tgz                   logs/: plan.txt (each step's exit code and time), machine.txt, bench.log, tests.log,
#                              tests.xml.
# Afterwards, here: copy the JSON to docs/results/, `make docs` (docs/attention.md's table), and unpack logs.tgz into
# experiments/results/device_<gpu>_<date>/.
# A CPU dry run (no GPU: the benchmark exits 2 and says so; TESTS_K narrows the tests):
#   OUT=/tmp/o TESTS_K=test_pipeline_dtype DEADLINE=200 bash experiments/device/attention_gpu.sh
set -u
DEADLINE=${DEADLINE:-355}
source experiments/device/setup.sh  # wheels, environment, $L, $CUDA_TESTS, machine.txt
echo "setup done at $SECONDS s" >> $L/plan.txt
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor

timeout ${BENCH_S:-230} python3 eval/bench_attention_gpu.py --budget-s ${BENCH_BUDGET_S:-200} \
  --out $OUT/bench_attention_gpu.json > $L/bench.log 2>&1
echo "bench exit $? at $SECONDS s" >> $L/plan.txt

LEFT=$((DEADLINE - SECONDS))
N=""; python3 -c "import xdist" 2>/dev/null && N="-n ${TEST_WORKERS:-8}"
if [ $LEFT -gt 30 ]; then
  VIDGEN_TRITON_AUTOTUNE=0 timeout $LEFT python3 -m pytest -q -rs -p no:cacheprovider $N --timeout 150 --junitxml=$L/tests.xml $CUDA_TESTS \
    -k "${TESTS_K:-not nothing}" > $L/tests.log 2>&1
  echo "tests exit $? at $SECONDS s (limit $LEFT s)" >> $L/plan.txt
else
  echo "tests not run: $LEFT s left before DEADLINE=$DEADLINE" >> $L/plan.txt
fi
tail -20 $L/bench.log; tail -3 $L/tests.log 2>/dev/null; cat $L/machine.txt $L/plan.txt  # into output_tail
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L

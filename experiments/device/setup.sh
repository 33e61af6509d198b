# Sourced by the device scripts (pair_gpu.sh, cuda_tests.sh) on the lent GPU machine, from the repository root:
# installs the carried wheels (.whl), sets the environment, and records the machine in $L/machine.txt.
# Sets L (the log folder under $OUT), T (the carried text table), CFG (the flow GPU config) and CUDA_TESTS (the test
# files with CUDA-only paths).
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
L=$OUT/logs; mkdir -p $L
T=.carry/text_table.safetensors; CFG=experiments/configs/generators/flow_shapes_gpu.yaml
CUDA_TESTS="tests/test_attention_triton.py tests/test_attention_bf16.py tests/test_attention_backends.py
  tests/test_attention_module.py tests/test_precision.py tests/test_tokenizers_diffusers.py
  tests/test_device_placement.py"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } > $L/machine.txt 2>&1

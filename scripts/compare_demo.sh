#!/usr/bin/env bash
# The demo-size baseline comparison (README "Baselines and controls"): the demo (base, ST-S,
# ST-D), then every baseline config on the same held-out prompts, then one `compare` table.
# Usage: bash scripts/compare_demo.sh [EXTRA_ARGS...]   (extra args go to every `run`,
# e.g. --model.dtype float32). Resumable: rerun it and finished stages are skipped.
# Prints each step's wall time and the total, and writes them to runs/compare/timings.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ST=.venv/bin/safetrigger
mkdir -p runs/compare
timings=runs/compare/timings.txt
: > "$timings"
t_all=$(date +%s)

step() {  # step NAME CMD... : run it and log its wall time
  local name=$1; shift
  local t0; t0=$(date +%s)
  "$@"
  echo "$name $(( $(date +%s) - t0 )) s" | tee -a "$timings"
}

step demo $ST run configs/demo.yaml "$@"
# Same pass-① / pass-② rows for the baselines that differ only in assembly: reused, not
# regenerated. Valid only because these configs inherit every generate/trigger setting from
# demo.yaml; the copied rows resume as done ids, so generate/trigger finish at once.
for b in no-trigger safe-in-think think2; do
  mkdir -p runs/baselines/$b
  for f in generate.jsonl trigger.jsonl; do
    [ -e runs/baselines/$b/$f ] || cp runs/demo/$f runs/baselines/$b/
  done
done
for b in safepath no-trigger safe-in-think think2 system-prompt self-audit; do
  step "$b" $ST run configs/baselines/$b.yaml "$@"
done
step compare $ST compare runs/demo runs/baselines/{safepath,no-trigger,safe-in-think,think2,system-prompt,self-audit} --out runs/compare
echo "total $(( $(date +%s) - t_all )) s" | tee -a "$timings"

#!/usr/bin/env bash
# Reproduces the GAA numbers of docs/gaa.md (MNIST, n = 50, CPU-scaled to ROUNDS rounds, seed 0).
# Usage: bash experiments/gaa_mnist.sh [ROUNDS] [LOG_DIR]   (about 1 minute per run on one core)
set -euo pipefail
ROUNDS=${1:-2000}
LOG=${2:-runs/gaa_mnist}
PY=${PYTHON:-python}
run() {  # name algo env-kwargs... [-- hyperparams...]
  local name=$1 algo=$2; shift 2
  local env=() hyp=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do env+=("$1"); shift; done
  [ $# -gt 0 ] && shift && hyp=("$@")
  [ -f "$LOG/$name/summary.json" ] && return 0
  rm -rf "${LOG:?}/$name"
  $PY train_agent.py --algo "$algo" --env-kwargs "${env[@]}" ${hyp:+--hyperparams "${hyp[@]}"} \
    --rounds "$ROUNDS" --log-dir "$LOG" --run-name "$name" --no-progress --no-tensorboard > /dev/null
}
run mean_none            mean   beta:0.0 attack:none
run mean_static50        mean   beta:0.5 attack:static tampering:rf
run gaa_none             gaa    beta:0.0 attack:none grad_clip:none
run gaa_static50         gaa    beta:0.5 attack:static tampering:rf grad_clip:none
run gaa_clip_none        gaa    beta:0.0 attack:none grad_clip:quasi_norm
run gaa_clip_static50    gaa    beta:0.5 attack:static tampering:rf grad_clip:quasi_norm
run gaa_clip_static70    gaa    beta:0.7 attack:static tampering:rf grad_clip:quasi_norm
run gaa_clip_static90    gaa    beta:0.9 attack:static tampering:rf grad_clip:quasi_norm
run gaa_clip_pretense50  gaa    beta:0.5 attack:pretense tampering:rf grad_clip:quasi_norm
run gaa_clip_random50    gaa    beta:0.5 attack:randomized tampering:rf grad_clip:quasi_norm
run gaa_eqv_clip_random50 gaa   beta:0.5 attack:randomized tampering:rf grad_clip:quasi_norm -- policy:equivariant
run mean_clip_static50   mean   beta:0.5 attack:static tampering:rf grad_clip:quasi_norm
$PY - "$LOG" <<'PYEOF'
import json, pathlib, sys
print(f"| run | final test accuracy | credit on Byzantine (last 100 rounds) |")
print("|---|---|---|")
for d in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    s = json.loads((d / "summary.json").read_text())
    byz = s["byzantine_credit_last100"]
    print(f"| {d.name} | {100 * s['test_accuracy']:.2f}% | {'-' if byz is None else f'{byz:.4f}'} |")
PYEOF

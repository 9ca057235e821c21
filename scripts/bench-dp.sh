#!/usr/bin/env bash
# Accuracy versus ε on digits for both DP modes (docs/BENCHMARKS.md).
# Usage: scripts/bench-dp.sh [REPS]   (needs a release build: cargo build --release -p tensorguard)
# Prints one Markdown row per (mode, ε): mean final accuracy over REPS runs, min–max, and σ.
set -euo pipefail
reps=${1:-3}
bin=${TENSORGUARD_BIN:-target/release/tensorguard}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

# Central: 500 users, one simulated client each (--population under DP, --clients without).
central=(--fraction 0.2 --partition iid --server-lr 3 --min-clients 1)
local_sgd=(--batch-size 64 --lr 1.0)

run() { # mode eps args...
  local mode=$1 eps=$2; shift 2
  local dp=()
  if [ "$eps" != "inf" ]; then dp=(--dp "$mode" --target-epsilon "$eps" --delta 1e-5); fi
  if [ "$mode" = central ]; then
    if [ "$eps" = inf ]; then dp+=(--clients 500); else dp+=(--population 500); fi
  fi
  local accs=() sigma="-"
  for _ in $(seq "$reps"); do
    out=$("$bin" --data-dir "$data" demo --no-baseline --json "$@" "${dp[@]}")
    accs+=("$(jq -r .final_accuracy <<<"$out")")
    if [ "$eps" != "inf" ]; then
      sigma=$(jq -r '.privacy.mode | to_entries[0].value.noise_multiplier' <<<"$out")
    fi
  done
  printf '%s\n' "${accs[@]}" | awk -v m="$mode" -v e="$eps" -v s="$sigma" '
    { a[NR]=$1; t+=$1; if (NR==1||$1<lo) lo=$1; if (NR==1||$1>hi) hi=$1 }
    END { printf "| %s | %s | %s | %.3f | %.3f–%.3f |\n", m, e, (s=="-"?"-":sprintf("%.3f", s)), t/NR, lo, hi }'
}

echo "| mode | ε | σ | mean accuracy | min–max |"
echo "|---|---|---|---|---|"
only=${ONLY:-central local-sgd}
for mode in $only; do
  for eps in ${EPSILONS:-1 3 8 inf}; do
    if [ "$mode" = central ]; then run central "$eps" "${central[@]}"; else run local-sgd "$eps" "${local_sgd[@]}"; fi
  done
done

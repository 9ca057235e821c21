#!/usr/bin/env bash
# Rounds to 90 % held-out accuracy for each strategy on Dirichlet(0.3) digits,
# over several seeds. Prints a Markdown table. Usage: scripts/bench-strategies.sh [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tensorguard
bin=target/release/tensorguard
seeds=("${@:-1 2 3 4 5}")
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
echo "| strategy | rounds to 90 % (per seed ${seeds[*]}) | median | final accuracy (mean) | centralized (mean) | wall time per run (mean) |"
echo "|---|---|---|---|---|---|"
for s in fedavg fedprox scaffold fedadam; do
  for seed in ${seeds[*]}; do
    "$bin" demo --data-dir "$data" --strategy "$s" --partition dirichlet:0.3 --seed "$seed" --json
  done | python3 -c "
import json, sys, statistics
runs = [json.loads(l) for l in sys.stdin.read().replace('}\n{', '}\x00{').split('\x00')]
r90 = [r['rounds_to_90'] for r in runs]
fmt = lambda v: '–' if v is None else str(v)
med = statistics.median([v if v is not None else 10**9 for v in r90])
print(f\"| $s | {', '.join(fmt(v) for v in r90)} | {fmt(med) if med < 10**9 else '–'} | {statistics.mean(r['final_accuracy'] for r in runs):.4f} | {statistics.mean(r['centralized_accuracy'] for r in runs):.4f} | {statistics.mean(r['elapsed_s'] for r in runs):.2f} s |\")
"
done

#!/usr/bin/env bash
# Reputation's false positives and detections, measured with the in-process
# demo (real agents; SIMULATED attacks): 4 aggregators x 4 partitions x 3
# seeds x {no attack, scaling, noise}, 10 clients, 50 rounds, default policy
# (flag_z 8, 3 flags in 10 screened rounds). One line per run, then totals.
# Usage: scripts/robust/reputation_sweep.sh [path/to/tensorguard] > sweep.txt
set -euo pipefail
tg=${1:-target/release/tensorguard}
for agg in outlier-3sigma multi-krum median trimmed-mean; do
  for part in iid dirichlet:0.5 dirichlet:0.1 shards:2; do
    for seed in 1 2 3; do
      for atk in none scaling noise; do
        extra=()
        [ "$atk" != none ] && extra=(--attack "$atk" --attackers 0.1)
        "$tg" demo --clients 10 --aggregator "$agg" --byzantine 1 --partition "$part" \
          --seed "$seed" --no-baseline --json --rounds 50 --reputation "${extra[@]}" 2>/dev/null |
          python3 -c '
import json, sys
d = json.load(sys.stdin)
att = set((d.get("attack") or {}).get("attackers", []))
hist = d["history"]
ex = [(c["agent"], r["round"]) for r in hist for c in (r.get("reputation") or []) if c["to"] == "excluded"]
screened = [s for r in hist for s in (r.get("screened") or []) if s["agent"] not in att]
flags = sum(1 for s in screened if s.get("flagged"))
print(json.dumps({"aggregator": sys.argv[1], "partition": sys.argv[2], "seed": int(sys.argv[3]), "attack": sys.argv[4],
  "honest_screened": len(screened), "honest_flags": flags,
  "honest_excluded": [e for e in ex if e[0] not in att],
  "attacker_excluded_in": [e[1] for e in ex if e[0] in att],
  "final_accuracy": d["final_accuracy"]}))' "$agg" "$part" "$seed" "$atk"
      done
    done
  done
done

#!/usr/bin/env python3
"""How often honest agents and attackers would be flagged at each outlier
threshold, from real demo runs (SIMULATED attackers), without reputation.

Runs `tensorguard demo --json` for 4 rules x 4 partitions x 3 seeds x
{none, scaling, noise, sign-flip, label-flip} (10 clients, 50 rounds) into
DIR (skipping runs already there), then prints, for thresholds 3, 5, 8 and
12 on the outlier z-score reputation uses (`outlier_z` of each screened
update): the runs in which some honest agent had >= 3 flags within 10
rounds (it would be excluded), and the attacker's mean flag rate.

Usage: scripts/robust/flag_threshold.py [TENSORGUARD] [DIR]
"""
import itertools
import json
import os
import statistics
import subprocess
import sys

TG = sys.argv[1] if len(sys.argv) > 1 else "target/release/tensorguard"
DIR = sys.argv[2] if len(sys.argv) > 2 else "target/flag-threshold"
RULES = ["outlier-3sigma", "multi-krum", "median", "trimmed-mean"]
PARTS = ["iid", "dirichlet:0.5", "dirichlet:0.1", "shards:2"]
ATTACKS = ["none", "scaling", "noise", "sign-flip", "label-flip"]
THRESHOLDS = [3, 5, 8, 12]

os.makedirs(DIR, exist_ok=True)
runs = []
for rule, part, seed, attack in itertools.product(RULES, PARTS, [1, 2, 3], ATTACKS):
    path = os.path.join(DIR, f"{rule}_{part.replace(':', '-')}_{seed}_{attack}.json")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        cmd = [TG, "demo", "--clients", "10", "--rounds", "50", "--aggregator", rule,
               "--byzantine", "1", "--partition", part, "--seed", str(seed),
               "--no-baseline", "--json"]
        if attack != "none":
            cmd += ["--attack", attack, "--attackers", "0.1"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        with open(path, "w") as f:
            f.write(out)
    with open(path) as f:
        runs.append((rule, attack, json.load(f)))

print("rule            attack      " + " ".join(f"| z>{t}: honest runs>=3/10, attacker rate" for t in THRESHOLDS))
for rule, attack in itertools.product(RULES, ATTACKS):
    cells = []
    for t in THRESHOLDS:
        bad_runs, rates = 0, []
        for r, a, d in runs:
            if (r, a) != (rule, attack):
                continue
            attackers = set((d.get("attack") or {}).get("attackers", []))
            flags = {}
            for rnd in d["history"]:
                for s in rnd.get("screened") or []:
                    flags.setdefault(s["agent"], []).append((s.get("outlier_z") or 0.0) > t)
            worst = 0
            for agent, f in flags.items():
                if agent in attackers:
                    rates.append(sum(f) / len(f))
                else:
                    worst = max([worst] + [sum(f[i:i + 10]) for i in range(max(1, len(f) - 9))])
            bad_runs += worst >= 3
        rate = f"{statistics.mean(rates):.2f}" if rates else "  - "
        cells.append(f"| {bad_runs:2d}/12, {rate}")
    print(f"{rule:15} {attack:11} " + " ".join(cells))

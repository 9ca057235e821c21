#!/usr/bin/env python3
"""The poisoning attack suite: every attack against every aggregator.

Runs `tensorguard demo --attack KIND --attackers F --aggregator A --json`
(and each aggregator without an attack) over seeds, and prints one JSON
line per run and a Markdown table of mean final accuracy (and backdoor
success) per attack and aggregator.

    python3 scripts/attack/suite.py --fractions 0.2 --seeds 1 2 3 \
        --dataset digits --clients 20 > target/attack-suite.jsonl

Every run is a SIMULATED ATTACK (the demo labels it so); the defences are
the production aggregators.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile

ATTACKS = ["sign-flip", "scaling", "noise", "label-flip", "alie", "backdoor"]
AGGREGATORS = ["fedavg", "norm-bound", "median", "trimmed-mean", "krum",
               "multi-krum", "bulyan", "outlier-3sigma"]
TAKES_F = {"median", "trimmed-mean", "krum", "multi-krum", "bulyan", "outlier-3sigma"}


def run(args, agg, attack, fraction, seed):
    with tempfile.TemporaryDirectory() as d:
        cmd = [args.tensorguard, "--data-dir", d, "demo", "--json", "--no-baseline",
               "--clients", str(args.clients), "--rounds", str(args.rounds),
               "--dataset", args.dataset, "--seed", str(seed), "--aggregator", agg]
        if attack:
            cmd += ["--attack", attack, "--attackers", str(fraction)]
            if fraction == 0.0 and agg in TAKES_F:
                cmd += ["--byzantine", "4"]
        elif agg in TAKES_F:
            cmd += ["--byzantine", str(int(fraction * args.clients + 0.5))]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            return {"aggregator": agg, "attack": attack, "fraction": fraction, "seed": seed,
                    "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}
        out = json.loads(p.stdout)
        a = out.get("attack") or {}
        return {"aggregator": agg, "attack": attack or "none", "fraction": fraction, "seed": seed,
                "accuracy": out.get("final_accuracy"),
                "backdoor_success": a.get("backdoor_success"),
                "committed": out.get("rounds_committed"), "elapsed_s": out.get("elapsed_s")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensorguard", default="tensorguard")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--attacks", nargs="+", default=ATTACKS)
    ap.add_argument("--aggregators", nargs="+", default=AGGREGATORS)
    ap.add_argument("--trigger-baseline-only", action="store_true",
                    help="only measure how often the trigger alone moves a clean model "
                         "(--attack backdoor --attackers 0)")
    args = ap.parse_args()
    if args.trigger_baseline_only:
        for agg in args.aggregators:
            for seed in args.seeds:
                r = run(args, agg, "backdoor", 0.0, seed)
                r["attack"] = "trigger-baseline"
                print(json.dumps(r), flush=True)
        return
    rows = []
    for fraction in args.fractions:
        for attack in [None] + args.attacks:
            for agg in args.aggregators:
                for seed in args.seeds:
                    r = run(args, agg, attack, fraction, seed)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    table = {}
    for r in rows:
        if "error" in r:
            table[(r["fraction"], r["attack"] or "none", r["aggregator"])] = "refused"
            continue
        table.setdefault((r["fraction"], r["attack"], r["aggregator"]), []).append(r)
    for fraction in args.fractions:
        print(f"\nF = {fraction}, {args.dataset}, {args.clients} clients, {args.rounds} rounds, "
              f"seeds {args.seeds}: mean final accuracy % (backdoor success %)", file=sys.stderr)
        print("| attack | " + " | ".join(args.aggregators) + " |", file=sys.stderr)
        print("|---" * (len(args.aggregators) + 1) + "|", file=sys.stderr)
        for attack in ["none"] + args.attacks:
            cells = []
            for agg in args.aggregators:
                v = table.get((fraction, attack, agg))
                if v is None or v == "refused":
                    cells.append("refused" if v else "–")
                    continue
                acc = statistics.mean(x["accuracy"] for x in v) * 100
                cell = f"{acc:.1f}"
                if attack == "backdoor":
                    bd = statistics.mean(x["backdoor_success"] for x in v) * 100
                    cell += f" ({bd:.0f})"
                cells.append(cell)
            print(f"| {attack} | " + " | ".join(cells) + " |", file=sys.stderr)


if __name__ == "__main__":
    main()

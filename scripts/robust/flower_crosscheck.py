#!/usr/bin/env python3
"""Cross-check TensorGuard's robust aggregators against Flower's.

With --from DIR, the update set is one saved from a real round
(`save_round.py DIR`, each agent-NNN.safetensors an update with its
example count). Otherwise it builds update sets shaped like one round of the default demo's MLP
(64x64, 64, 64x10, 10: the same four tensors), with honest updates around a
common direction and f attackers sending -5x theirs, saves each agent's
update as safetensors (example count in the metadata), then runs

    tensorguard bench robust --aggregator A --byzantine F --json FILES...

and Flower's own functions on the very same arrays:
aggregate_krum (Krum, and Multi-Krum with to_keep = n - f),
aggregate_median, aggregate_trimmed_avg (proportiontocut cutting f per
side), aggregate_bulyan (with aggregate_krum). Prints one JSON line per
(set, rule) with the largest difference, and exits non-zero if any differ
beyond float32 tolerance.

    target/flwr/venv/bin/python scripts/robust/flower_crosscheck.py \
        --tensorguard target/release/tensorguard --sets 5
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from flwr.server.strategy.aggregate import (
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

SHAPES = [("fc1.bias", (64,)), ("fc1.weight", (64, 64)), ("fc2.bias", (10,)), ("fc2.weight", (10, 64))]


def update_set(rng, n, f):
    direction = [rng.normal(0, 0.05, s).astype(np.float32) for _, s in SHAPES]
    results = []
    for i in range(n):
        u = [(d + rng.normal(0, 0.02, d.shape)).astype(np.float32) for d in direction]
        if i < f:
            u = [(-5.0 * x).astype(np.float32) for x in u]
        results.append((u, int(rng.integers(10, 200))))
    return results


def flower(rule, results, f):
    n = len(results)
    if rule == "krum":
        return aggregate_krum(results, num_malicious=f, to_keep=0)
    if rule == "multi-krum":
        return aggregate_krum(results, num_malicious=f, to_keep=n - f)
    if rule == "median":
        return aggregate_median(results)
    if rule == "trimmed-mean":
        return aggregate_trimmed_avg(results, proportiontocut=(f + 0.5) / n)
    if rule == "bulyan":
        return aggregate_bulyan(list(results), num_malicious=f, aggregation_rule=aggregate_krum, to_keep=0)
    raise ValueError(rule)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensorguard", default="tensorguard")
    ap.add_argument("--sets", type=int, default=5)
    ap.add_argument("--clients", type=int, default=12)
    ap.add_argument("--byzantine", type=int, default=2)
    ap.add_argument("--from", dest="saved", help="a directory of updates saved from one round")
    args = ap.parse_args()
    if args.saved:
        sys.exit(from_saved(args))
    worst, failed = 0.0, False
    for s in range(args.sets):
        rng = np.random.default_rng(1000 + s)
        results = update_set(rng, args.clients, args.byzantine)
        with tempfile.TemporaryDirectory() as d:
            files = []
            for i, (u, n) in enumerate(results):
                p = os.path.join(d, f"agent-{i:03}.safetensors")
                st.save(p, {name: a for (name, _), a in zip(SHAPES, u)}, {"num_examples": n})
                files.append(p)
            diff = compare(args, files, [n for n, _ in SHAPES], results, {"set": s})
            failed |= diff > 1e-5
            worst = max(worst, diff)
    print(json.dumps({"worst_max_rel_diff": worst, "all_same": not failed}))
    sys.exit(1 if failed else 0)


def compare(args, files, names, results, label):
    """Runs every rule on `files` with both tools; prints one line per rule
    and returns the largest relative difference."""
    worst = 0.0
    for rule in ["krum", "multi-krum", "median", "trimmed-mean", "bulyan"]:
        out = subprocess.run(
            [args.tensorguard, "bench", "robust", "--json", "--aggregator", rule,
             "--byzantine", str(args.byzantine), *files],
            capture_output=True, text=True, check=True)
        ours = {name: np.array(v, dtype=np.float32).reshape(shape)
                for name, shape, v in json.loads(out.stdout)["tensors"]}
        theirs = flower(rule, results, args.byzantine)
        diff = 0.0
        for name, t in zip(names, theirs):
            scale = max(float(np.max(np.abs(t))), 1e-12)
            diff = max(diff, float(np.max(np.abs(ours[name] - t))) / scale)
        worst = max(worst, diff)
        print(json.dumps({**label, "rule": rule, "clients": len(files), "byzantine": args.byzantine,
                          "max_rel_diff": diff, "same": diff <= 1e-5}))
    return worst


def from_saved(args):
    """Compares the rules on the saved round; 0 when all agree."""
    files = sorted(os.path.join(args.saved, f) for f in os.listdir(args.saved) if f.endswith(".safetensors"))
    loaded = [st.load(p) for p in files]
    names = sorted(loaded[0][0])
    results = [([t[n] for n in names], int(meta["num_examples"])) for t, meta in loaded]
    worst = compare(args, files, names, results, {"set": args.saved})
    print(json.dumps({"worst_max_rel_diff": worst, "all_same": worst <= 1e-5}))
    return 1 if worst > 1e-5 else 0


if __name__ == "__main__":
    main()

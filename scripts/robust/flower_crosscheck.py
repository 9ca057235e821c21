#!/usr/bin/env python3
"""Cross-check TensorGuard's robust aggregators against Flower's.

Builds update sets shaped like one round of the default demo's MLP
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
import struct
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

SHAPES = [("fc1.bias", (64,)), ("fc1.weight", (64, 64)), ("fc2.bias", (10,)), ("fc2.weight", (10, 64))]


def save_safetensors(path, arrays, num_examples):
    header, offset, blobs = {}, 0, []
    for (name, _), a in zip(SHAPES, arrays):
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    header["__metadata__"] = {"num_examples": str(num_examples)}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


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
    args = ap.parse_args()
    worst, failed = 0.0, False
    for s in range(args.sets):
        rng = np.random.default_rng(1000 + s)
        results = update_set(rng, args.clients, args.byzantine)
        with tempfile.TemporaryDirectory() as d:
            files = []
            for i, (u, n) in enumerate(results):
                p = os.path.join(d, f"agent-{i:03}.safetensors")
                save_safetensors(p, u, n)
                files.append(p)
            for rule in ["krum", "multi-krum", "median", "trimmed-mean", "bulyan"]:
                out = subprocess.run(
                    [args.tensorguard, "bench", "robust", "--json", "--aggregator", rule,
                     "--byzantine", str(args.byzantine), *files],
                    capture_output=True, text=True, check=True)
                ours = {name: np.array(v, dtype=np.float32).reshape(shape)
                        for name, shape, v in json.loads(out.stdout)["tensors"]}
                theirs = flower(rule, results, args.byzantine)
                diff = 0.0
                for (name, _), t in zip(SHAPES, theirs):
                    scale = max(float(np.max(np.abs(t))), 1e-12)
                    diff = max(diff, float(np.max(np.abs(ours[name] - t))) / scale)
                ok = diff <= 1e-5
                failed |= not ok
                worst = max(worst, diff)
                print(json.dumps({"set": s, "rule": rule, "clients": args.clients,
                                  "byzantine": args.byzantine, "max_rel_diff": diff, "same": ok}))
    print(json.dumps({"worst_max_rel_diff": worst, "all_same": not failed}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

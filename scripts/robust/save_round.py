#!/usr/bin/env python3
"""Saves every client's update from one real round of a TensorGuard
federation, for the Flower cross-check (`flower_crosscheck.py --from DIR`).

A 12-client federation (`tensorguard.simulation.run`, the engine in
process) trains a softmax regression on the digits data, split Dirichlet
0.5 across clients, for one round; each client's handler trains on its own
shard with numpy SGD and, before returning, writes its update (trained
minus received model) with its example count to DIR/agent-NNN.safetensors.
SIMULATION: the first F clients send -5x their update (attackers), so the
rules have something to reject. Needs the tensorguard Python package.

    target/ci-tools/py/bin/python scripts/robust/save_round.py DIR [--byzantine F] [--seed S]
"""
import argparse
import os
import sys

import numpy as np
import tensorguard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--clients", type=int, default=12)
ap.add_argument("--byzantine", type=int, default=2)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
os.makedirs(args.dir, exist_ok=True)

app = tensorguard.ClientApp()


@app.train()
def train(model, config, context):
    i = context.partition_id
    (x, y), _ = tensorguard.datasets.digits(i, args.clients, partition="dirichlet:0.5", seed=args.seed)
    w, b = model["w"].astype(np.float32), model["b"].astype(np.float32)
    w0, b0 = w.copy(), b.copy()
    rng = np.random.default_rng(args.seed * 1000 + i)
    for _ in range(3):  # local epochs
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // 16)):
            logits = x[idx] @ w + b
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(idx)), y[idx]] -= 1.0
            w -= 0.5 * x[idx].T @ p / len(idx)
            b -= 0.5 * p.mean(axis=0)
    dw, db = w - w0, b - b0
    if i < args.byzantine:  # SIMULATED attacker
        dw, db = -5.0 * dw, -5.0 * db
    st.save(os.path.join(args.dir, f"agent-{i:03}.safetensors"), {"w": dw, "b": db},
            {"num_examples": len(x), "simulated_attacker": str(i < args.byzantine).lower()})
    return {"w": w0 + dw, "b": b0 + db}, len(x)


summary = tensorguard.simulation.run(
    app, num_clients=args.clients, rounds=1,
    initial_model={"w": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)},
    seed=args.seed)
print(f"saved {args.clients} updates of round 1 to {args.dir} "
      f"(SIMULATED: clients 0..{args.byzantine - 1} send -5x their update); "
      f"round status {summary['history'][0]['status']}")

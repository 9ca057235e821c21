"""TensorGuard's side of the SDK benchmark (see flower_sim.py for Flower's).

usage: python tensorguard_sim.py MODE CLIENTS ROUNDS DATA.npz [SEED]
MODE: train (the CNN, plaintext FedAvg), secure (the same with SecAgg+),
noop (a client that returns the model unchanged: framework cost only),
noop-secure. Prints one JSON line.
"""

import json
import sys
import time

import torch

import tensorguard
from common import Net, TreeRss, accuracy, load, load_test, train

mode, clients, rounds, data = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
rss = TreeRss()
started = time.perf_counter()
app = tensorguard.ClientApp()
shards = {}


@app.train(format="torch")
def fit(state, config, context):
    if mode.startswith("noop"):
        return state, 1
    i = context.partition_id
    if i not in shards:
        shards[i] = load(data, i)
    x, y = shards[i]
    net = Net()
    net.load_state_dict(state)
    # The same shuffling as flower_sim.py: seeded by (seed, round, client).
    train(net, x, y, config["local_epochs"], seed * 10_000 + config["server_round"] * 100 + i)
    return net.state_dict(), len(y)


xt, yt = load_test(data)


def evaluate(model):
    net = Net()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.items()})
    acc = accuracy(net, xt, yt)
    return 1.0 - acc, {"accuracy": acc}


torch.manual_seed(seed)
summary = tensorguard.simulation.run(
    app,
    num_clients=clients,
    rounds=rounds,
    initial_model=Net().state_dict(),
    secure_aggregation={"clip": 1000.0, "weight_scale": 144.0} if mode.endswith("secure") else None,
    evaluate_fn=None if mode.startswith("noop") else evaluate,
)
wall = time.perf_counter() - started
print(json.dumps({
    "framework": "tensorguard", "version": tensorguard.__version__, "mode": mode,
    "clients": clients, "rounds": rounds, "committed": summary["rounds_committed"],
    "wall_s": wall, "peak_rss_mib": rss.stop() / 2**20,
    "accuracy": summary.get("final_accuracy"),
}))

"""Flower's side of the SDK benchmark: the same CNN, data and rounds on
Flower's Simulation Engine (Ray), as a Flower user would write it.

usage: python flower_sim.py MODE CLIENTS ROUNDS DATA.npz [SEED]
MODE: train, secure (secaggplus_mod + SecAggPlusWorkflow), noop, noop-secure.
Needs: pip install "flwr[simulation]" torch numpy. Prints one JSON line.
"""

import json
import logging
import sys
import time

import numpy as np
import torch

import flwr
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from common import Net, TreeRss, accuracy, load, load_test, train

mode, clients, rounds, data = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
logging.getLogger("flwr").setLevel(logging.WARNING)
rss = TreeRss()
started = time.perf_counter()
KEYS = list(Net().state_dict().keys())


def to_state(params):
    return {k: torch.from_numpy(np.asarray(v)) for k, v in zip(KEYS, params)}


class Client(NumPyClient):
    def __init__(self, i):
        self.i = i

    def fit(self, parameters, config):
        if mode.startswith("noop"):
            return parameters, 1, {}
        x, y = load(data, self.i)
        net = Net()
        net.load_state_dict(to_state(parameters))
        # The same shuffling as tensorguard_sim.py: seeded by (seed, round, client).
        train(net, x, y, 1, seed * 10_000 + int(config["server_round"]) * 100 + self.i)
        return [v.numpy() for v in net.state_dict().values()], len(y), {}


def client_fn(context: Context):
    return Client(int(context.node_config["partition-id"])).to_client()


client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if mode.endswith("secure") else [])
xt, yt = load_test(data)
final = {}


def evaluate(server_round, parameters, config):
    if mode.startswith("noop"):
        return None
    net = Net()
    net.load_state_dict(to_state(parameters))
    acc = accuracy(net, xt, yt)
    final["accuracy"] = acc
    return 1.0 - acc, {"accuracy": acc}


torch.manual_seed(seed)
initial = ndarrays_to_parameters([v.numpy() for v in Net().state_dict().values()])


def strategy():
    return FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=clients,
                  min_available_clients=clients, initial_parameters=initial, evaluate_fn=evaluate,
                  on_fit_config_fn=lambda r: {"server_round": r})


if mode.endswith("secure"):
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context):
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy())
        DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=0.5, reconstruction_threshold=0.5))(grid, legacy)
else:
    server_app = ServerApp(server_fn=lambda context: ServerAppComponents(
        strategy=strategy(), config=ServerConfig(num_rounds=rounds)))

run_simulation(server_app=server_app, client_app=client_app, num_supernodes=clients,
               backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
wall = time.perf_counter() - started
print(json.dumps({
    "framework": "flower", "version": flwr.__version__, "mode": mode,
    "clients": clients, "rounds": rounds, "wall_s": wall, "peak_rss_mib": rss.stop() / 2**20,
    "accuracy": final.get("accuracy"),
}))

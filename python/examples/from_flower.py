"""A Flower NumPyClient, ported by its import line.

Run:  python python/examples/from_flower.py   (a few seconds)

Everything below the import is written against Flower's API (NumPyClient,
client_fn(context), context.node_config["partition-id"]); only
`from flwr.client import NumPyClient` became `from tensorguard import
NumPyClient`. The federation then runs on TensorGuard's engine, here with
secure aggregation: the server sees only the masked sum of the updates.
"""

import numpy as np

import tensorguard
from tensorguard import NumPyClient  # was: from flwr.client import NumPyClient


def load_partition(partition_id, num_partitions):
    (x, y), (xt, yt) = tensorguard.datasets.digits(partition_id, num_partitions, partition="dirichlet:0.5", seed=7)
    return x, y, xt, yt


class LogisticClient(NumPyClient):
    def __init__(self, partition_id, num_partitions):
        self.x, self.y, self.xt, self.yt = load_partition(partition_id, num_partitions)

    def get_parameters(self, config):
        return [np.zeros((64, 10), dtype=np.float32), np.zeros(10, dtype=np.float32)]

    def fit(self, parameters, config):
        w, b = (p.copy() for p in parameters)
        for _ in range(25):
            z = self.x @ w + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(self.y)), self.y] -= 1
            w -= 0.5 * self.x.T @ p / len(self.y)
            b -= 0.5 * p.mean(0)
        return [w, b], len(self.y), {}

    def evaluate(self, parameters, config):
        w, b = parameters
        acc = float(((self.xt @ w + b).argmax(1) == self.yt).mean())
        return 1.0 - acc, len(self.yt), {"accuracy": acc}


def client_fn(context):
    return LogisticClient(context.node_config["partition-id"], context.node_config["num-partitions"]).to_client()


if __name__ == "__main__":
    def server_eval(model):
        _, _, xt, yt = load_partition(0, 1)
        acc = float(((xt @ model["0000"] + model["0001"]).argmax(1) == yt).mean())
        return 1.0 - acc, {"accuracy": acc}

    summary = tensorguard.simulation.run(
        client_fn, num_clients=10, rounds=5,
        secure_aggregation={"clip": 100.0, "weight_scale": 150.0},
        evaluate_fn=server_eval,
    )
    print(f"{summary['rounds_committed']} rounds committed; held-out accuracy {summary['final_accuracy']:.3f}")

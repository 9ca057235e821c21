"""The client of the fleet test: deterministic least squares on client i's
own synthetic data, as a ClientApp (imported by the test's simulation, and
run as a process by ``python fleet_client.py``, one real agent each)."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import tensorguard

FEATURES = 8


def data(i: int):
    rng = np.random.default_rng(1000 + i)
    x = rng.normal(size=(40 + 10 * i, FEATURES)).astype(np.float32)
    truth = np.linspace(-1.0, 1.0, FEATURES).astype(np.float32)
    y = x @ truth + 0.5 + 0.01 * rng.normal(size=len(x)).astype(np.float32)
    return x, y.astype(np.float32)


def initial_model():
    return {"w": np.zeros(FEATURES, dtype=np.float32), "b": np.zeros(1, dtype=np.float32)}


def app(stall_round: int = 0, marker: str = "", fail_from: int = 0, only: int = -1) -> tensorguard.ClientApp:
    """Client i trains two full-batch gradient steps. ``stall_round``: the
    process writes ``marker`` and hangs in that round (to be killed);
    ``fail_from``: client ``only`` declines from that round on (the
    simulation's stand-in for the killed agent)."""
    a = tensorguard.ClientApp()

    @a.train()
    def train(model, config, context):
        i = context.partition_id
        r = config["server_round"]
        if stall_round and r == stall_round:
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)
        if fail_from and i == only and r >= fail_from:
            raise RuntimeError("this client dropped out")
        x, y = data(i)
        w, b = model["w"].astype(np.float64), float(model["b"][0])
        for _ in range(config["local_epochs"]):
            err = x @ w + b - y
            w = w - config["learning_rate"] * (x.T @ err) / len(y)
            b = b - config["learning_rate"] * float(err.mean())
        return {"w": w.astype(np.float32), "b": np.array([b], dtype=np.float32)}, len(y)

    return a


if __name__ == "__main__":
    coordinator, data_dir, token, cert, root, index, stall, marker = sys.argv[1:9]
    agent = tensorguard.Agent(
        app(int(stall), marker),
        coordinator,
        enroll=token,
        model=initial_model(),
        data_dir=data_dir,
        certificate=cert,
        policy={"fleet_root": root},
        name=f"robot-{index}",
        context=tensorguard.Context(partition_id=int(index), num_partitions=5),
    )
    status = agent.run()
    for e in agent.declined:
        print(f"declined: {e}", file=sys.stderr, flush=True)
    print(status["state"], status["answered"], len(agent.declined), flush=True)

"""Reference for `tensorguard bench aggregate`: Flower's FedAvg aggregation.

Flower's `FedAvg.aggregate_fit` receives every client's result at once and
calls `flwr.server.strategy.aggregate.aggregate`, the weighted average over
the list of (ndarrays, num_examples). This script feeds it the same shape of
round (N clients, one float32 tensor of D values each, example counts in
1..1000) and reports the process's peak RSS above its RSS once the global
model is built, as `tensorguard bench aggregate` does.

usage: python flower_aggregate.py CLIENTS DIM
"""

import json
import resource
import sys
import time

import numpy as np
from flwr.server.strategy.aggregate import aggregate


def rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    clients, dim = int(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(1)
    glob = (np.arange(dim) % 97).astype(np.float32) * np.float32(1e-3)
    idle = rss_now()
    started = time.perf_counter()
    results = []
    for _ in range(clients):
        update = ((rng.random(dim, dtype=np.float32) - 0.5) * 0.02).astype(np.float32)
        results.append(([update], int(rng.integers(1, 1001))))
    mean = aggregate(results)
    nxt = glob + mean[0]
    seconds = time.perf_counter() - started
    del results
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = 4 * dim
    print(json.dumps({
        "tool": "flwr.server.strategy.aggregate.aggregate",
        "clients": clients, "dim": dim, "model_bytes": model,
        "idle_rss_bytes": idle, "peak_rss_bytes": peak,
        "above_idle_bytes": peak - idle,
        "above_idle_per_model": (peak - idle) / model,
        "seconds": seconds, "checksum": float(nxt[:8].sum()),
    }, indent=2))


if __name__ == "__main__":
    main()

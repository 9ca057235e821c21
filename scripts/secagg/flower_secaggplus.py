#!/usr/bin/env python3
"""Flower's SecAgg+ on the workload of `tensorguard bench secagg`.

The same round: n clients, d float parameters each, a fraction of the clients
vanishing after sharing their keys (before the masked vectors). Flower's own
SecAggPlusWorkflow (server) and secaggplus_mod (client) run unmodified, in
this process. Its network layer is replaced by a small in-memory Grid that
calls each node's ClientApp directly, so the timings are protocol compute
only — the same conditions as `tensorguard bench secagg`.

Usage: python3 scripts/secagg/flower_secaggplus.py [N] [D] [DROPOUT]
Needs: pip install flwr numpy  (a throwaway venv; tested with flwr 1.41).
Prints JSON: total round time, per-stage server time (excluding client
compute), client compute per stage (mean and max), and the upload size.
"""
import copy
import json
import sys
import time
from itertools import count

import numpy as np
import flwr.compat.common.recorddict_compat as compat
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import ndarrays_to_parameters
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow
from flwr.serverapp.grid import Grid
from flwr.supercore.task_identity import TaskIdentity

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
D = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
DROPOUT = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
RNG = np.random.default_rng(1)
UPDATES = {nid: RNG.random(D, dtype=np.float32) for nid in range(1, N + 1)}


class Update(NumPyClient):
    def __init__(self, nid):
        self.nid = nid

    def fit(self, parameters, config):
        return [UPDATES[self.nid]], 1, {}


def client_fn(context: Context):
    return Update(context.node_id).to_client()


APP = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def payload_bytes(content):
    """Bytes of every array and byte string in a reply (what crosses the wire)."""
    total = 0
    for rec in content.array_records.values():
        total += sum(len(a.data) for a in rec.values())
    for rec in content.config_records.values():
        for v in rec.values():
            vals = v if isinstance(v, list) else [v]
            total += sum(len(x) for x in vals if isinstance(x, bytes))
    return total


class Proxy(ClientProxy):
    """Only `node_id` is used by the workflow; the rest is never called."""

    def get_properties(self, *a, **k): raise NotImplementedError
    def get_parameters(self, *a, **k): raise NotImplementedError
    def fit(self, *a, **k): raise NotImplementedError
    def evaluate(self, *a, **k): raise NotImplementedError
    def reconnect(self, *a, **k): raise NotImplementedError


class InMemoryGrid(Grid):
    """Delivers each message to its node's ClientApp, in turn."""

    def __init__(self, dropped):
        self.contexts = {nid: Context(0, nid, {}, RecordDict(), {}) for nid in UPDATES}
        self.dropped = dropped
        self.stage = 0
        self.client_times = []  # per stage: list of seconds per client
        self.sizes = []
        self.copy_s = 0.0  # delivery copies: excluded from the server's time

    def set_run(self, run): pass
    def run(self): raise NotImplementedError
    def create_message(self, *a, **k): raise NotImplementedError
    def get_node_ids(self): return list(UPDATES)
    def push_messages(self, messages): raise NotImplementedError
    def pull_messages(self, ids): raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies, times = [], []
        for m in messages:
            nid = m.metadata.dst_node_id
            # Stage 2 (index) is "collect masked vectors": the dropped clients vanish there.
            if self.stage >= 2 and nid in self.dropped:
                continue
            # A real transport delivers each node its own copy (the workflow
            # shares one content object between messages; the mod mutates it).
            t = time.perf_counter()
            m = copy.deepcopy(m)
            self.copy_s += time.perf_counter() - t
            TaskIdentity.node_id = nid
            t = time.perf_counter()
            reply = APP(m, self.contexts[nid])
            times.append(time.perf_counter() - t)
            TaskIdentity.node_id = SERVER_NODE
            if self.stage == 2:
                self.sizes.append(payload_bytes(reply.content))
            replies.append(reply)
        self.client_times.append(times)
        self.stage += 1
        return replies


SERVER_NODE = 0


def main():
    TaskIdentity.run_id = 0
    TaskIdentity.task_id = 0
    TaskIdentity.node_id = SERVER_NODE
    dropped = set(list(UPDATES)[: int(DROPOUT * N)])
    grid = InMemoryGrid(dropped)
    manager = SimpleClientManager()
    for nid in UPDATES:
        manager.register(Proxy(str(nid)))
    for p in manager.all().values():
        p.node_id = int(p.cid)
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=N, min_available_clients=N,
                      fraction_evaluate=0.0, min_evaluate_clients=0)
    base = Context(0, 0, {}, RecordDict(), {})
    ctx = LegacyContext(base, strategy=strategy, client_manager=manager)
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: 1})
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([np.zeros(D, dtype=np.float32)]), keep_input=True)
    workflow = SecAggPlusWorkflow(num_shares=0.2, reconstruction_threshold=0.5, timeout=None)
    t = time.perf_counter()
    workflow(grid, ctx)
    total = time.perf_counter() - t
    client = [sum(s) for s in grid.client_times]
    out = {
        "flwr": __import__("flwr").__version__, "clients": N, "dim": D, "dropout": DROPOUT,
        "total_s": total,
        "server_s_excluding_clients": total - sum(client) - grid.copy_s,
        "delivery_copy_s_excluded": grid.copy_s,
        "client_stage_mean_ms": [1e3 * np.mean(s) if s else 0 for s in grid.client_times],
        "client_stage_max_ms": [1e3 * max(s) if s else 0 for s in grid.client_times],
        "upload_bytes_masked_vector": max(grid.sizes) if grid.sizes else None,
        "masked_vectors_received": len(grid.sizes),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

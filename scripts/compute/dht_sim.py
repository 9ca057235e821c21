#!/usr/bin/env python3
"""In-process simulation (Monte Carlo over lookups) of the compute network at 10,000+ nodes.

It models what the real nodes do (crates/tg-compute, tg-net's Kademlia):
iterative lookups with k = 20 and alpha = 3 over XOR-distance routing
tables, a share of nodes gone (churn) whose entries time out, provider
records for a task kind held by the 20 nodes closest to its key, and
submitters that refresh their provider list every 10 s and assign tasks by
request-response. It reports lookup hops, lookup and assignment latency, and
the tasks per hour the network sustains, with what limits it.

Inputs measured on this machine (docs/BENCHMARKS.md) are flags: inference
time per sentence on one core, the CPU cap, the distribution overhead.

    python3 scripts/compute/dht_sim.py --nodes 10000 --churn 0.2 --json
"""
import argparse, bisect, heapq, json, math, random

BITS = 64


def build_tables(ids, k, rng):
    """Ideal k-bucket tables: for every node and bucket, up to k random members."""
    srt = sorted(ids)
    tables = {}
    for x in ids:
        t = []
        for i in range(BITS):
            lo = ((x >> i) ^ 1) << i
            hi = lo + (1 << i)
            a, b = bisect.bisect_left(srt, lo), bisect.bisect_left(srt, hi)
            if a < b:
                members = srt[a:b]
                t.extend(members if len(members) <= k else rng.sample(members, k))
        tables[x] = t
    return tables


def lookup(src, key, tables, alive, k, alpha, rtt, timeout, rng):
    """Iterative Kademlia lookup. Returns (rounds, latency_s, contacted)."""
    def d(n):
        return n ^ key
    shortlist = sorted(set(tables[src]), key=d)[:k]
    queried, rounds, latency, contacted = {src}, 0, 0.0, 0
    best = d(shortlist[0]) if shortlist else None
    while True:
        todo = [n for n in shortlist if n not in queried][:alpha]
        if not todo:
            break
        rounds += 1
        waits = []
        found = []
        for n in todo:
            queried.add(n)
            contacted += 1
            if n in alive:
                waits.append(rtt(rng))
                found.extend(tables[n])
            else:
                waits.append(timeout)
        latency += min(waits) if any(w < timeout for w in waits) else timeout
        shortlist = sorted(set(shortlist) | set(f for f in found), key=d)[:k]
        nb = d(shortlist[0])
        if best is not None and nb >= best and all(n in queried for n in shortlist[:alpha]):
            break
        best = nb
    return rounds, latency, contacted


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--churn", type=float, default=0.2, help="share of nodes gone whose entries are still in tables")
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--alpha", type=int, default=3)
    ap.add_argument("--rtt-ms", type=float, default=60.0, help="median WAN round trip (log-normal, sigma 0.5)")
    ap.add_argument("--timeout-s", type=float, default=2.0, help="what a dead entry costs a lookup round")
    ap.add_argument("--infer-ms", type=float, default=12.5, help="MiniLM, one sentence, one core (bench embed, batch 1)")
    ap.add_argument("--cpu-cap", type=float, default=0.5)
    ap.add_argument("--redundancy", type=float, default=2.0)
    ap.add_argument("--overhead-ms", type=float, default=10.0, help="distribution overhead per result (bench tasks, N=20)")
    ap.add_argument("--submitters", type=int, default=1000)
    ap.add_argument("--refresh-s", type=float, default=10.0)
    ap.add_argument("--provider-bytes", type=int, default=40, help="bytes per provider in a lookup reply")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    ids = list({rng.getrandbits(BITS) for _ in range(a.nodes)})
    tables = build_tables(ids, a.k, rng)
    alive = set(rng.sample(ids, int(a.nodes * (1 - a.churn))))
    live = list(alive)
    rtt = lambda r: (a.rtt_ms / 1000) * math.exp(r.gauss(0, 0.5))
    res = [lookup(rng.choice(live), rng.getrandbits(BITS), tables, alive, a.k, a.alpha, rtt, a.timeout_s, rng) for _ in range(a.lookups)]
    hops = sorted(r[0] for r in res)
    lat = sorted(r[1] for r in res)
    q = lambda v, p: v[min(len(v) - 1, int(p * (len(v) - 1)))]
    # Assignment: a cached provider list (refreshed every refresh_s) plus one request round trip and the overhead.
    assign = sorted(rtt(rng) + a.overhead_ms / 1000 for _ in range(5000))
    # Capacity: every live node runs tasks at its cap; each task is run `redundancy` times.
    per_node = a.cpu_cap / (a.infer_ms / 1000) / a.redundancy  # tasks/s
    cpu_tph = per_node * len(live) * 3600
    # The hot key: the kind's providers live on the k nodes closest to its key; every submitter asks them every refresh.
    lookups_per_s = a.submitters / a.refresh_s
    reply_bytes = len(live) * a.provider_bytes
    hot_bw = lookups_per_s * reply_bytes / a.k  # bytes/s at each of the k holders
    out = {
        "simulation": "SIMULATION: a model of Kademlia lookups, not the real nodes",
        "nodes": a.nodes, "live": len(live), "churn": a.churn, "k": a.k, "alpha": a.alpha,
        "lookup_hops": {"p50": q(hops, .5), "p95": q(hops, .95), "max": hops[-1]},
        "lookup_latency_s": {"p50": round(q(lat, .5), 3), "p95": round(q(lat, .95), 3)},
        "assignment_latency_ms_cached": {"p50": round(q(assign, .5) * 1000, 1), "p95": round(q(assign, .95) * 1000, 1)},
        "assignment_latency_s_cold": {"p50": round(q(lat, .5) + q(assign, .5), 3), "p95": round(q(lat, .95) + q(assign, .95), 3)},
        "tasks_per_hour_cpu_bound": round(cpu_tph),
        "hot_key": {"submitters": a.submitters, "lookups_per_s": lookups_per_s, "reply_bytes": reply_bytes,
                    "bytes_per_s_per_holder": round(hot_bw)},
        "target_tasks_per_hour": 1_000_000,
    }
    if a.json:
        print(json.dumps(out, indent=1))
    else:
        for k_, v in out.items():
            print(f"{k_}: {v}")


if __name__ == "__main__":
    main()

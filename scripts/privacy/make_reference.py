#!/usr/bin/env python3
"""Known-answer vectors for tg-privacy, computed with the reference libraries.

Setup (throwaway venv; Opacus is installed without torch because only its
numpy/scipy analysis module is used, loaded straight from its file):

    python3 -m venv /tmp/venv-dp
    /tmp/venv-dp/bin/pip install dp-accounting numpy scipy
    /tmp/venv-dp/bin/pip install --no-deps opacus prv-accountant
    /tmp/venv-dp/bin/python scripts/privacy/make_reference.py 600 > crates/tg-privacy/tests/data/reference.json
    (argument: seconds allowed per PLD case; WITH_PRV=1 adds prv-accountant bounds)

Writes, per parameter set (Poisson-subsampled Gaussian, add/remove neighbours):
  - rdp: Opacus RDP at every default order, and (epsilon, optimal order) from
    Opacus's get_privacy_spent;
  - pld: dp-accounting PLDAccountant epsilon at a 1e-5 value grid;
  - prv: prv-accountant (Gopi et al. 2021) epsilon bounds, for cross-checking;
and calibration cases: the noise multiplier at which Opacus-RDP epsilon equals a
target, found by bisection to 1e-12.
"""
import importlib.util
import json
import math
import multiprocessing
import os
import site
import sys
import time

import dp_accounting
import numpy as np
from dp_accounting.pld import pld_privacy_accountant

SP = site.getsitepackages()[0]
spec = importlib.util.spec_from_file_location("opacus_rdp", f"{SP}/opacus/accountants/analysis/rdp.py")
opacus_rdp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(opacus_rdp)

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]

# (q, sigma, steps, delta): span q in [1e-3, 1], sigma in [0.5, 10], steps in [1, 1e5], delta in [1e-8, 1e-3].
CASES = [
    (256 / 60000, 1.1, 14062, 1e-5),
    (0.01, 1.0, 1000, 1e-5),
    (0.001, 0.5, 100000, 1e-6),
    (1.0, 1.0, 1, 1e-5),
    (1.0, 10.0, 100, 1e-8),
    (0.1, 2.0, 500, 1e-3),
    (0.05, 0.8, 10000, 1e-5),
    (0.5, 5.0, 50, 1e-6),
    (0.002, 1.5, 50000, 1e-7),
    (0.02, 0.7, 2000, 1e-4),
    (0.3, 3.0, 200, 1e-5),
    (0.001, 10.0, 100000, 1e-8),
    (0.8, 1.2, 10, 1e-3),
    (0.005, 0.6, 20000, 1e-5),
    (1.0, 0.5, 1, 1e-5),
    (0.2, 1.0, 1, 1e-6),
    (0.04, 4.0, 1000, 1e-5),
    (0.1, 0.9, 100, 1e-8),
    (0.003, 2.5, 100000, 1e-4),
    (0.6, 8.0, 1000, 1e-7),
    (0.01, 1.3, 5000, 1e-5),
    (0.07, 6.0, 3000, 1e-3),
]

# Heterogeneous composition: a list of (q, sigma, steps) then delta.
HETERO = [
    ([(0.01, 1.0, 500), (0.02, 1.5, 300), (0.005, 0.8, 1000)], 1e-5),
    ([(1.0, 4.0, 3), (0.1, 1.2, 100)], 1e-6),
]

CALIBRATION = [  # (target_epsilon, delta, q, steps)
    (1.0, 1e-5, 256 / 60000, 14062),
    (3.0, 1e-5, 256 / 60000, 14062),
    (8.0, 1e-5, 256 / 60000, 14062),
    (2.0, 1e-6, 0.01, 1000),
    (0.5, 1e-5, 1.0, 10),
]


def opacus_eps(q, sigma, steps, delta):
    rdp = opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=ORDERS)
    eps, order = opacus_rdp.get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
    return [float(x) for x in rdp], float(eps), float(order)


def pld_eps(parts, delta, interval=1e-5):
    acc = pld_privacy_accountant.PLDAccountant(
        dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE, value_discretization_interval=interval)
    for q, sigma, steps in parts:
        ev = dp_accounting.GaussianDpEvent(sigma)
        if q < 1.0:
            ev = dp_accounting.PoissonSampledDpEvent(q, ev)
        acc.compose(ev, steps)
    return float(acc.get_epsilon(delta))


def pld_eps_limited(parts, delta, seconds, interval=1e-5):
    """dp-accounting at `interval`, or None when it needs more than `seconds`."""
    with multiprocessing.Pool(1) as pool:
        job = pool.apply_async(pld_eps, (parts, delta, interval))
        try:
            return job.get(timeout=seconds)
        except multiprocessing.TimeoutError:
            return None


def prv_eps(q, sigma, steps, delta):
    try:
        from prv_accountant import PRVAccountant
        from prv_accountant.privacy_random_variables import PoissonSubsampledGaussianMechanism
        if q >= 1.0:
            return None
        prv = PoissonSubsampledGaussianMechanism(sampling_probability=q, noise_multiplier=sigma)
        acc = PRVAccountant(prvs=prv, max_self_compositions=steps, eps_error=1e-3, delta_error=delta / 1000)
        lo, est, hi = acc.compute_epsilon(delta=delta, num_self_compositions=[steps])
        return {"lower": float(lo), "estimate": float(est), "upper": float(hi)}
    except Exception as e:  # informational only
        return {"error": str(e)}


def calibrate(target, delta, q, steps):
    lo, hi = 1e-3, 1.0
    while opacus_eps(q, hi, steps, delta)[1] > target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if opacus_eps(q, mid, steps, delta)[1] > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return hi


def main():
    """Usage: make_reference.py [PLD_SECONDS_PER_CASE]  (default 300).

    dp-accounting at a 1e-5 grid takes from seconds to minutes per case; a case
    over the limit is written with "pld_epsilon": null and skipped by the tests.
    "pld_epsilon_1e6" is the same at a 1e-6 grid where that takes under 60 s.
    """
    limit = float(sys.argv[1]) if len(sys.argv) > 1 else 300.0
    out = {"generated_by": "scripts/privacy/make_reference.py",
           "versions": {"dp_accounting": "0.6.0", "opacus": "1.6.0 (accountants/analysis/rdp.py)",
                        "prv_accountant": "0.2.0", "numpy": np.__version__},
           "pld_interval": 1e-5, "pld_seconds_limit": limit,
           "orders": ORDERS, "cases": [], "heterogeneous": [], "calibration": []}
    for q, sigma, steps, delta in CASES:
        rdp, eps, order = opacus_eps(q, sigma, steps, delta)
        out["cases"].append({"q": q, "sigma": sigma, "steps": steps, "delta": delta,
                             "rdp": rdp, "rdp_epsilon": eps, "rdp_order": order})
    for parts, delta in HETERO:
        rdp = sum(np.array(opacus_rdp.compute_rdp(q=q, noise_multiplier=s, steps=n, orders=ORDERS)) for q, s, n in parts)
        eps, order = opacus_rdp.get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
        out["heterogeneous"].append({"parts": parts, "delta": delta, "rdp_epsilon": float(eps), "rdp_order": float(order)})
    for target, delta, q, steps in CALIBRATION:
        out["calibration"].append({"target_epsilon": target, "delta": delta, "q": q, "steps": steps,
                                   "rdp_noise_multiplier": calibrate(target, delta, q, steps)})
    for c in out["cases"]:
        t = time.time()
        c["pld_epsilon"] = pld_eps_limited([(c["q"], c["sigma"], c["steps"])], c["delta"], limit)
        # Where a 1e-5 grid is too coarse for the mechanism, a 1e-6 grid shows
        # dp-accounting's own converged value; kept when it finishes in 60 s.
        c["pld_epsilon_1e6"] = pld_eps_limited([(c["q"], c["sigma"], c["steps"])], c["delta"], 60, 1e-6)
        if os.environ.get("WITH_PRV"):  # slow (~1 min per case); informational cross-check only
            c["prv"] = prv_eps(c["q"], c["sigma"], c["steps"], c["delta"])
        print(f"case q={c['q']} sigma={c['sigma']} T={c['steps']}: rdp {c['rdp_epsilon']:.6f} "
              f"pld {c['pld_epsilon']} ({time.time()-t:.1f}s)", file=sys.stderr, flush=True)
    for h in out["heterogeneous"]:
        h["pld_epsilon"] = pld_eps_limited(h["parts"], h["delta"], limit)
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()

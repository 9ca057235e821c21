#!/usr/bin/env python3
"""Reference values for TensorGuard's Skellam accountant.

No pip-installable library implements the Skellam mechanism's accountant
(Google's distributed-DP code is not packaged), so this script evaluates the
published bounds independently, in 60-digit arithmetic with mpmath:

* Agarwal, Kairouz & Liu (NeurIPS 2021), Theorem 3.5, scaled-back form:
  eps(a) = a*D2^2/(2*mu) + min(((2a-1)*s*D2^2 + 6*D1)/(4*s^3*mu^2), 3*D1/(2*s*mu))
* Wang, Balle & Kasiviswanathan (AISTATS 2019), Theorem 9, for Poisson
  subsampling at integer orders (the smaller of it and the unsampled bound);
* conversion eps = min_a max(0, rdp + log1p(-1/a) - (log(delta) + log(a))/(a-1))
  over the orders 2..128 and 256;
* conditional randomized rounding (Kairouz et al. 2021) inflating D2 and D1.

Usage: python3 scripts/privacy/make_skellam_reference.py > crates/tg-privacy/tests/data/skellam_reference.json
Needs: mpmath (pip install mpmath).
"""
import json

import mpmath as mp

mp.mp.dps = 60
ORDERS = list(range(2, 129)) + [256]


def rounded(l2, scale, dim, beta):
    c = mp.mpf(l2) * scale
    bound = c + mp.sqrt(dim)
    if beta > 0:
        sq = c * c + mp.mpf(dim) / 4 + mp.sqrt(2 * mp.log(1 / mp.mpf(beta))) * (c + mp.sqrt(dim) / 2)
        bound = min(bound, mp.sqrt(sq))
    l1 = bound * min(mp.sqrt(dim), bound)
    return l1 / scale, bound / scale


def rdp(a, d1, d2, mu, s):
    a = mp.mpf(a)
    return a * d2**2 / (2 * mu) + min(((2 * a - 1) * s * d2**2 + 6 * d1) / (4 * s**3 * mu**2), 3 * d1 / (2 * s * mu))


def sampled(a, q, eps):
    q = mp.mpf(q)
    total = (1 - q) ** (a - 1) * (a * q - q + 1)
    total += mp.binomial(a, 2) * q**2 * (1 - q) ** (a - 2) * mp.e ** eps(2)
    for l in range(3, a + 1):
        total += 3 * mp.binomial(a, l) * (1 - q) ** (a - l) * q**l * mp.e ** ((l - 1) * eps(l))
    return mp.log(total) / (a - 1)


def epsilon(case):
    s, mu = mp.mpf(case["scale"]), mp.mpf(case["variance"])
    d2 = mp.mpf(case["l2"])
    d1 = mp.mpf(case["l1"]) if case.get("l1") else d2 * mp.sqrt(case["dim"])
    if case.get("rounding_beta") is not None:
        d1, d2 = rounded(case["l2"], s, case["dim"], mp.mpf(case["rounding_beta"]))
    eps = lambda a: rdp(a, d1, d2, mu, s)
    best = (mp.inf, None)
    for a in ORDERS:
        r = eps(a) if case["q"] == 1 else min(eps(a), sampled(a, case["q"], eps))
        r *= case["steps"]
        e = r + mp.log1p(-mp.mpf(1) / a) - (mp.log(case["delta"]) + mp.log(a)) / (a - 1)
        e = max(e, 0)
        if e < best[0]:
            best = (e, a)
    return float(best[0]), best[1]


CASES = [
    {"l2": 1.0, "l1": 3.0, "variance": 4.0, "scale": 1.0, "q": 1.0, "steps": 1, "delta": 1e-5},
    {"l2": 1.0, "l1": 3.0, "variance": 4.0, "scale": 100.0, "q": 1.0, "steps": 10, "delta": 1e-5},
    {"l2": 1.0, "dim": 1000, "variance": 1.0, "scale": 50.0, "q": 0.1, "steps": 100, "delta": 1e-5},
    {"l2": 1.0, "dim": 1000, "variance": 4.0, "scale": 50.0, "q": 0.1, "steps": 100, "delta": 1e-5},
    {"l2": 0.5, "dim": 4810, "variance": 0.25, "scale": 200.0, "q": 0.01, "steps": 1000, "delta": 1e-6},
    {"l2": 2.0, "dim": 100, "variance": 16.0, "scale": 10.0, "q": 1.0, "steps": 50, "delta": 1e-3},
    {"l2": 1.0, "dim": 65536, "variance": 1.0, "scale": 1000.0, "q": 0.05, "steps": 500, "delta": 1e-8},
    {"l2": 1.0, "dim": 1000, "variance": 1.0, "scale": 50.0, "q": 0.5, "steps": 20, "delta": 1e-5},
    {"l2": 1.0, "dim": 1000, "variance": 0.1, "scale": 50.0, "q": 0.001, "steps": 10000, "delta": 1e-5},
    {"l2": 3.0, "l1": 9.0, "variance": 9.0, "scale": 1.0, "q": 1.0, "steps": 3, "delta": 1e-5},
    {"l2": 1.0, "dim": 1024, "variance": 1.0, "scale": 64.0, "q": 1.0, "steps": 1, "delta": 1e-5, "rounding_beta": 0.0},
    {"l2": 1.0, "dim": 1024, "variance": 1.0, "scale": 64.0, "q": 0.2, "steps": 100, "delta": 1e-5, "rounding_beta": 1e-5},
    {"l2": 0.1, "dim": 4810, "variance": 0.01, "scale": 1000.0, "q": 0.1, "steps": 50, "delta": 1e-5, "rounding_beta": 0.36787944117144233},
]

if __name__ == "__main__":
    out = []
    for c in CASES:
        e, a = epsilon(c)
        out.append(dict(c, epsilon=e, optimal_order=a))
    print(json.dumps({"generator": "scripts/privacy/make_skellam_reference.py", "mpmath": mp.__version__, "cases": out}, indent=1))

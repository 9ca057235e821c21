#!/usr/bin/env python3
"""High-precision ground truth for fractional-order RDP of the subsampled
Gaussian: the Mironov-Talwar-Zhang (2019) two-sided series evaluated with
mpmath at 50 significant digits, summed until terms fall below 1e-40 of the
total. Used to check that tg-privacy's double-precision RDP is accurate where
Opacus's series cutoff (terms below e^-30) is not.

    /tmp/venv-dp/bin/pip install mpmath
    /tmp/venv-dp/bin/python scripts/privacy/make_rdp_truth.py > crates/tg-privacy/tests/data/rdp_truth.json
"""
import json
import sys

import mpmath as mp

mp.mp.dps = 50
ORDERS = [1.1, 1.3, 1.5, 2.5, 4.4, 7.7, 10.9]


def log_a_frac(q, sigma, alpha):
    q, sigma, alpha = mp.mpf(q), mp.mpf(sigma), mp.mpf(alpha)
    z0 = sigma**2 * mp.log(1 / q - 1) + mp.mpf(1) / 2
    total = mp.mpf(0)
    i = 0
    while True:
        coef = mp.binomial(alpha, i)
        j = alpha - i
        s0 = coef * q**i * (1 - q)**j * mp.exp((i * i - i) / (2 * sigma**2)) * mp.erfc((i - z0) / (mp.sqrt(2) * sigma)) / 2
        s1 = coef * q**j * (1 - q)**i * mp.exp((j * j - j) / (2 * sigma**2)) * mp.erfc((z0 - j) / (mp.sqrt(2) * sigma)) / 2
        total += s0 + s1
        i += 1
        if i > 5 and max(abs(s0), abs(s1)) < mp.mpf(10) ** -40 * abs(total):
            break
        if i > 3000:
            raise RuntimeError(f"series did not converge for q={q} sigma={sigma} alpha={alpha}")
    return mp.log(total)


def main():
    ref = json.load(open("crates/tg-privacy/tests/data/reference.json"))
    out = {"generated_by": "scripts/privacy/make_rdp_truth.py", "digits": 50, "points": []}
    for c in ref["cases"]:
        if c["q"] >= 1.0:
            continue
        for a in ORDERS:
            rdp = c["steps"] * log_a_frac(c["q"], c["sigma"], a) / (a - 1)
            out["points"].append({"q": c["q"], "sigma": c["sigma"], "steps": c["steps"], "order": a,
                                  "rdp": float(rdp)})
            print(c["q"], c["sigma"], a, mp.nstr(rdp, 20), file=sys.stderr, flush=True)
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()

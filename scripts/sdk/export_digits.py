"""Exports the bundled digits for the SDK benchmark: python export_digits.py CLIENTS OUT.npz"""

import sys

import numpy as np

import tensorguard

clients, out = int(sys.argv[1]), sys.argv[2]
arrays = {}
for i in range(clients):
    (x, y), (xt, yt) = tensorguard.datasets.digits(i, clients, partition="iid", seed=1)
    arrays[f"x{i}"], arrays[f"y{i}"] = x, y
arrays["xt"], arrays["yt"] = xt, yt
np.savez(out, **arrays)

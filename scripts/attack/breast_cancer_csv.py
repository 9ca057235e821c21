#!/usr/bin/env python3
"""Writes the Wisconsin breast-cancer set (569 x 30, 2 classes; shipped
inside scikit-learn, no download) as the CSV the demo reads: the integer
label first, then the features, each standardised to mean 0 and variance 1.

    target/flwr/venv/bin/pip install scikit-learn
    target/flwr/venv/bin/python scripts/attack/breast_cancer_csv.py target/data/breast-cancer.csv
"""
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer

out = sys.argv[1] if len(sys.argv) > 1 else "breast-cancer.csv"
d = load_breast_cancer()
x = (d.data - d.data.mean(axis=0)) / d.data.std(axis=0)
with open(out, "w") as f:
    for label, row in zip(d.target, x):
        f.write(",".join([str(int(label))] + [f"{v:.6f}" for v in row]) + "\n")
print(f"wrote {len(d.target)} rows of {x.shape[1]} features to {out}")

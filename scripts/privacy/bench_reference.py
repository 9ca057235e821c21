#!/usr/bin/env python3
"""Times the reference accountants on the workloads of `tensorguard bench accountant`.
Same venv as make_reference.py. Prints JSON (median of repeats, ms)."""
import importlib.util, json, site, statistics, time
import dp_accounting
from dp_accounting.pld import pld_privacy_accountant

SP = site.getsitepackages()[0]
spec = importlib.util.spec_from_file_location("opacus_rdp", f"{SP}/opacus/accountants/analysis/rdp.py")
rdp = importlib.util.module_from_spec(spec); spec.loader.exec_module(rdp)
ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]

def median_ms(f, repeat):
    out = []
    for _ in range(repeat):
        t = time.perf_counter(); v = f(); out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(out), v

def opacus():
    r = rdp.compute_rdp(q=0.01, noise_multiplier=1.0, steps=10000, orders=ORDERS)
    return rdp.get_privacy_spent(orders=ORDERS, rdp=r, delta=1e-5)[0]

def pld(interval):
    acc = pld_privacy_accountant.PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
                                               value_discretization_interval=interval)
    acc.compose(dp_accounting.PoissonSampledDpEvent(256 / 60000, dp_accounting.GaussianDpEvent(1.1)), 14062)
    return acc.get_epsilon(1e-5)

o_ms, o_eps = median_ms(opacus, 11)
p_ms, p_eps = median_ms(lambda: pld(1e-4), 5)
print(json.dumps({"opacus_rdp": {"median_ms": o_ms, "epsilon": float(o_eps)},
                  "dp_accounting_pld_1e-4": {"median_ms": p_ms, "epsilon": float(p_eps)}}, indent=1))

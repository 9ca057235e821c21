"""A robot fleet fine-tunes one policy together on Meta-World, and the
arms are compared on held-out goals with real MuJoCo rollouts.

    python examples/robot_fleet.py --robots 50 --tasks 8 --rounds 40 --json

Each robot gets 1–2 tasks and a different number of scripted-expert
demonstrations, which never leave it. A base MLP policy, pre-trained
centrally on public tasks no robot has, is frozen; the fleet fine-tunes
LoRA adapters (tensorguard.lora). Arms, all with the same demonstrations,
held-out goals and round/epoch budget:

- local-only: each robot alone, its own adapters;
- fedavg: one shared adapter with the task as an input, FedAvg;
- expert-wise: E adapter experts and a task router, expert-wise
  aggregation (strategy "expert-wise": each expert averaged over the robots
  that used it, each task's router and embedding rows over the robots that
  have the task);
- centralized: all demonstrations pooled, the same model and epochs (an
  optimisation upper bound, not a deployable arm: it needs the data);
- expert-wise+secagg+dp: expert-wise under SecAgg+ with distributed DP;
- full-*: the same with the whole policy fine-tuned instead of adapters.

Success per task is measured on ``--eval-episodes`` held-out configurations
per task (95% Wilson intervals), for each of ``--seeds`` seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import sys
import time
from typing import Any, Dict, List, Tuple

import numpy as np

ARMS_LORA = ["local-only", "fedavg", "expert-wise", "centralized"]
ARMS_FULL = ["full-local-only", "full-fedavg", "full-centralized"]
ARM_DP = "expert-wise+secagg+dp"
#: Each arm's share of the table's worker time, as measured (train + eval).
ARM_COST = {"full-fedavg": 10.4, "full-centralized": 8.4, "full-local-only": 6.4, "local-only": 6.2, ARM_DP: 6.0, "fedavg": 5.5, "expert-wise": 5.2, "centralized": 4.9}


def parse(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robots", type=int, default=50)
    p.add_argument("--tasks", type=int, default=8, help="how many of the fleet's task pool robots draw from")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--demos", default="3-10", help="demonstrations per robot and task, LOW-HIGH")
    p.add_argument("--public-demos", type=int, default=25, help="demonstrations per public task the base is pre-trained on")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--rank", type=int, default=2)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--depth", type=int, default=2, help="hidden layers of the base MLP")
    p.add_argument("--horizon", type=int, default=150, help="steps per evaluation episode (the scripted experts succeed within ~100)")
    p.add_argument("--tau", type=float, default=0.1, help="gate-mass threshold of expert-wise aggregation")
    p.add_argument("--batch", type=int, default=64, help="minibatch size of every arm's local training")
    p.add_argument("--fraction", type=float, default=1.0, help="share of robots sampled each round by the federated arms (the DP arm's q)")
    p.add_argument("--server-lr", type=float, default=2.0, help="server step size of the federated arms (1 is classic FedAvg)")
    p.add_argument("--router-scale", type=float, default=4.0, help="spread of the expert router's public initial logits")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of every arm's local training")
    p.add_argument("--epsilon", type=float, default=8.0, help="target ε of the DP arm")
    p.add_argument("--no-full", action="store_true", help="skip the full fine-tuning arms")
    p.add_argument("--no-dp", action="store_true", help="skip the secure-aggregation + DP arm")
    p.add_argument("--arms", default="", help="comma-separated arms to run (default: all that --no-full/--no-dp leave)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    a = p.parse_args(argv)
    if not (0.0 < a.fraction <= 1.0):
        p.error("--fraction must be in (0, 1]")
    low, _, high = a.demos.partition("-")
    a.demo_range = (int(low), int(high or low))
    for name in ("robots", "tasks", "rounds", "local_epochs", "batch", "seeds", "eval_episodes", "experts", "rank", "hidden", "depth", "public_demos"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return a


# ---------------------------------------------------------------- the model


def make_base(hidden: int, depth: int) -> Any:
    import torch

    layers: List[Any] = [torch.nn.Linear(39, hidden), torch.nn.ReLU()]
    for _ in range(depth - 1):
        layers += [torch.nn.Linear(hidden, hidden), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(hidden, 4))


class FullPolicy:
    """The whole policy trainable, with the same task input as the adapters'."""

    @staticmethod
    def build(base: Any, tasks: List[str]) -> Any:
        import torch

        class _Full(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = copy.deepcopy(base)
                for q in self.net.parameters():
                    q.requires_grad_(True)
                self.tasks = list(tasks)
                self.task_embed = torch.nn.Embedding(len(tasks), self.net[0].out_features)
                torch.nn.init.zeros_(self.task_embed.weight)

            def task_ids(self, names: List[str]) -> Any:
                index = {t: i for i, t in enumerate(self.tasks)}
                return torch.tensor([index[n] for n in names], dtype=torch.long)

            def forward(self, x: Any, ids: Any) -> Any:
                h = self.net[0](x) + self.task_embed(ids)
                for m in list(self.net)[1:]:
                    h = m(h)
                return h

        return _Full()


def build(kind: str, base: Any, tasks: List[str], a: argparse.Namespace) -> Any:
    from tensorguard.lora import MoEPolicy

    if kind == "full":
        return FullPolicy.build(base, tasks)
    experts = 1 if kind == "single" else a.experts
    return MoEPolicy(base, tasks=tasks, experts=experts, rank=a.rank, alpha=4.0 * a.rank, seed=0, task_dim=8, router_scale=a.router_scale)


def travelling(model: Any, kind: str, report: bool = True) -> Dict[str, Any]:
    from tensorguard.lora import adapter_state_dict, expert_state_dict

    if kind == "full":
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    if kind == "experts":
        # The reports (which tasks and robots trained each expert) would
        # share the DP arm's clip with the update: that arm leaves them out.
        return expert_state_dict(model, report=report)
    return adapter_state_dict(model)


def load(model: Any, kind: str, state: Dict[str, Any]) -> None:
    import torch
    from tensorguard.lora import load_adapters

    if kind == "full":
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    else:
        load_adapters(model, state, model.base_sha256)


def fit(model: Any, data: Tuple[Any, Any, Any], epochs: int, rng: np.random.Generator, lr: float = 3e-3, batch: int = 64) -> None:
    import torch

    x, y, ids = data
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=lr)
    n = len(x)
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(n))
        for s in range(0, n, batch):
            i = order[s : s + batch]
            opt.zero_grad()
            loss = ((model(x[i], ids[i]) - y[i]) ** 2).mean()
            loss.backward()
            opt.step()


# ---------------------------------------------------------------- data


def pretrain(a: argparse.Namespace) -> Tuple[Any, np.ndarray, np.ndarray]:
    """The frozen base: behaviour cloning on public tasks no robot has."""
    import torch
    from tensorguard import metaworld_fleet as mwf

    rng = np.random.default_rng(12345)
    obs, act = [], []
    for task in mwf.PUBLIC_TASKS:
        for o, y in mwf.collect(task, mwf.configurations(task, "public")[: a.public_demos], rng):
            obs.append(o)
            act.append(y)
    x, y = np.concatenate(obs), np.concatenate(act)
    mean, std = x.mean(0), x.std(0) + 1e-3
    torch.manual_seed(0)
    base = make_base(a.hidden, a.depth)
    xt, yt = torch.as_tensor((x - mean) / std), torch.as_tensor(y)
    opt = torch.optim.Adam(base.parameters(), lr=1e-3)
    for _ in range(30):
        order = torch.as_tensor(rng.permutation(len(xt)))
        for s in range(0, len(xt), 256):
            i = order[s : s + 256]
            opt.zero_grad()
            ((base(xt[i]) - yt[i]) ** 2).mean().backward()
            opt.step()
    return base, mean.astype(np.float32), std.astype(np.float32)


def fleet_data(seed: int, a: argparse.Namespace, tasks: List[str]) -> List[Dict[str, Tuple[np.ndarray, np.ndarray]]]:
    """Each robot's own demonstrations, per task."""
    from tensorguard import metaworld_fleet as mwf

    mwf.reuse_environments(True)  # this worker's rollouts run on one thread
    rng = np.random.default_rng(seed)
    counts = mwf.split_counts(rng, a.robots, tasks, *a.demo_range)
    fleet = []
    for mine in counts:
        robot = {}
        for task, n in mine.items():
            pool = mwf.configurations(task, "train")
            picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
            demos = mwf.collect(task, [pool[i] for i in picks], rng)
            # collect drops episodes the noisy expert failed; a robot keeps
            # at least one demonstration of each of its tasks.
            for _ in range(10):
                if demos:
                    break
                demos = mwf.collect(task, [pool[int(rng.integers(len(pool)))]], rng)
            if not demos:
                raise RuntimeError(f"the scripted expert failed 10 demonstrations of {task} in a row")
            robot[task] = (np.concatenate([d[0] for d in demos]), np.concatenate([d[1] for d in demos]))
        fleet.append(robot)
    return fleet


def tensors(robot: Dict[str, Tuple[np.ndarray, np.ndarray]], model: Any, mean: np.ndarray, std: np.ndarray) -> Tuple[Any, Any, Any]:
    import torch

    xs, ys, names = [], [], []
    for task, (o, y) in robot.items():
        xs.append((o - mean) / std)
        ys.append(y)
        names += [task] * len(o)
    return torch.as_tensor(np.concatenate(xs)), torch.as_tensor(np.concatenate(ys)), model.task_ids(names)


# ---------------------------------------------------------------- arms


def run_arm(job: Tuple[str, int, Dict[str, Any]]) -> Dict[str, Any]:
    arm, seed, shared = job
    import torch

    torch.set_num_threads(1)
    import tensorguard
    from tensorguard import metaworld_fleet as mwf
    from tensorguard.lora import expert_update

    mwf.reuse_environments(True)  # this worker's rollouts run on one thread

    a, tasks, fleet = shared["args"], shared["tasks"], shared["fleet"]
    base, mean, std = shared["base"], shared["mean"], shared["std"]
    kind = "full" if arm.startswith("full-") else ("single" if arm == "fedavg" else "experts")
    name = arm.removeprefix("full-")
    rng = np.random.default_rng(seed * 1000 + 7)
    torch.manual_seed(seed)
    started = time.perf_counter()
    timing = {"train_s": 0.0, "eval_s": 0.0}
    epochs = a.rounds * a.local_epochs
    bytes_per_round = None

    def act_with(model: Any, task: str) -> Any:
        def act(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                x = torch.as_tensor((obs - mean) / std, dtype=torch.float32)
                return model(x, model.task_ids([task] * len(obs))).numpy()

        return act

    wins: Dict[str, List[bool]] = {}
    if name == "local-only":
        models = []
        for robot in fleet:
            m = build(kind, base, tasks, a)
            fit(m, tensors(robot, m, mean, std), epochs, rng, a.lr, a.batch)
            models.append(m)
        timing["train_s"] = time.perf_counter() - started
        t0 = time.perf_counter()
        for task in tasks:
            holders = [i for i, r in enumerate(fleet) if task in r]
            configs = mwf.configurations(task, "eval")[: a.eval_episodes]
            wins[task] = []
            for h, i in enumerate(holders):
                mine = configs[h :: len(holders)]
                if mine:
                    wins[task] += mwf.rollout(act_with(models[i], task), task, mine, a.horizon)
        timing["eval_s"] = time.perf_counter() - t0
    else:
        model = build(kind, base, tasks, a)
        if name == "centralized":
            pooled: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
            for robot in fleet:
                for task, (o, y) in robot.items():
                    if task in pooled:
                        pooled[task] = (np.concatenate([pooled[task][0], o]), np.concatenate([pooled[task][1], y]))
                    else:
                        pooled[task] = (o, y)
            fit(model, tensors(pooled, model, mean, std), epochs, rng, a.lr, a.batch)
        else:
            strategy = "expert-wise" if name.startswith("expert-wise") else "fedavg"
            data = [tensors(r, model, mean, std) for r in fleet]
            # Under DP the weight's scale is public, not a robot's size: the
            # most demonstrations a robot holds per task times a typical
            # episode (100 steps), so weights are about 1; a larger one is
            # clipped with its update, which keeps the robot's ratios.
            scale = float(a.demo_range[1] * 100) if name == ARM_DP else 1.0
            app = tensorguard.ClientApp()

            @app.train(format="torch")
            def train(state: Dict[str, Any], config: Dict[str, Any], context: Any) -> Any:
                local = build(kind, base, tasks, a)
                load(local, kind, state)
                mine = data[context.partition_id]
                fit(local, mine, a.local_epochs, np.random.default_rng(rng.integers(1 << 63)), a.lr, a.batch)
                if strategy == "expert-wise":
                    return expert_update(local, state, len(mine[0]), local.gate_mass(mine[2]), tau=a.tau, scale=scale, task_ids=mine[2]), len(mine[0])
                return travelling(local, kind), len(mine[0])

            initial = travelling(model, "experts" if strategy == "expert-wise" else kind, report=name != ARM_DP)
            bytes_per_round = 4 * sum(int(v.numel()) for v in initial.values())
            extra: Dict[str, Any] = {}
            if name == ARM_DP:
                extra = {
                    "secure_aggregation": True,
                    "dp": {"mode": "distributed", "target_epsilon": a.epsilon, "delta": 1e-5, "clip": 1.0},
                }
            s = tensorguard.simulation.run(app, num_clients=len(fleet), rounds=a.rounds, initial_model=initial, strategy=strategy, seed=seed, server_lr=a.server_lr, fraction=a.fraction, **extra)
            load(model, kind, s.state_dict())
            shared_extra = {"rounds_committed": s["rounds_committed"], "epsilon": s.get("epsilon"), "delta": 1e-5 if name == ARM_DP else None, "q": a.fraction, "population": len(fleet)}
            if name == ARM_DP:
                # Against the coordinator, which picks the sample: no amplification.
                shared_extra["epsilon_vs_coordinator"] = s.get("epsilon_vs_coordinator")
            history = s.get("history") or []
            if history and history[-1].get("experts"):
                # Which tasks and what share of robots trained each expert,
                # in the last round (the dashboard's Experts page).
                shared_extra["experts_last_round"] = [
                    {"share": round(x["share"], 3), "client_share": x.get("client_share"), "task_share": {t: round(v, 3) for t, v in zip(tasks, x.get("task_share") or []) if v >= 0.05}}
                    for x in history[-1]["experts"]
                ]
        timing["train_s"] = time.perf_counter() - started
        t0 = time.perf_counter()
        for task in tasks:
            wins[task] = mwf.rollout(act_with(model, task), task, mwf.configurations(task, "eval")[: a.eval_episodes], a.horizon)
        timing["eval_s"] = time.perf_counter() - t0
    out = {
        "arm": arm,
        "seed": seed,
        "success": {t: [int(sum(w)), len(w)] for t, w in wins.items()},
        "mean_success": float(np.mean([np.mean(w) for w in wins.values() if w])),
        "upload_bytes_per_robot_round": bytes_per_round,
        **timing,
    }
    if name not in ("local-only", "centralized"):
        out.update(shared_extra)
    return out


def main(argv: List[str]) -> int:
    a = parse(argv)
    import torch

    torch.set_num_threads(1)
    from tensorguard import metaworld_fleet as mwf
    from tensorguard.lora import adapter_state_dict, expert_state_dict

    if a.tasks > len(mwf.FLEET_TASKS):
        print(f"error[E020]: --tasks {a.tasks} — the pool has {len(mwf.FLEET_TASKS)} tasks — pass --tasks <= {len(mwf.FLEET_TASKS)}", file=sys.stderr)
        return 2
    tasks = list(mwf.FLEET_TASKS[: a.tasks])
    arms = list(ARMS_LORA) + ([] if a.no_full else ARMS_FULL) + ([] if a.no_dp else [ARM_DP])
    if a.arms:
        chosen = [x.strip() for x in a.arms.split(",") if x.strip()]
        unknown = [x for x in chosen if x not in ARMS_LORA + ARMS_FULL + [ARM_DP]]
        if unknown:
            print(f"error[E020]: --arms {','.join(unknown)} — not an arm of this script — choose from {', '.join(ARMS_LORA + ARMS_FULL + [ARM_DP])}", file=sys.stderr)
            return 2
        arms = chosen
    ctx = mp.get_context("spawn")
    results = []
    with ctx.Pool(a.workers) as pool:
        # The workers collect the fleets' demonstrations while this process
        # pre-trains the base (neither depends on the other).
        t0 = time.perf_counter()
        collecting = pool.starmap_async(fleet_data, [(seed, a, tasks) for seed in range(a.seeds)])
        base, mean, std = pretrain(a)
        pretrain_s = time.perf_counter() - t0
        fleets = collecting.get()
        demos_s = time.perf_counter() - t0
        jobs = [(arm, seed, {"args": a, "tasks": tasks, "fleet": fleets[seed], "base": base, "mean": mean, "std": std}) for seed in range(a.seeds) for arm in arms]
        # Longest first, so the last jobs to finish are short ones and no
        # worker idles long at the end (relative costs from the measured
        # table in docs/BENCHMARKS.md; only the order matters).
        jobs.sort(key=lambda j: -ARM_COST.get(j[0], 1.0))
        t0 = time.perf_counter()
        for r in pool.imap_unordered(run_arm, jobs):
            results.append(r)
            print(f"[{time.perf_counter() - t0:7.1f}s] {r['arm']} seed {r['seed']}: {r['mean_success']:.3f} (train {r['train_s']:.0f}s, eval {r['eval_s']:.0f}s)", file=sys.stderr, flush=True)
    results.sort(key=lambda r: (arms.index(r["arm"]), r["seed"]))
    arms_s = time.perf_counter() - t0
    probe_e = build("experts", base, tasks, a)
    full_bytes = 4 * sum(int(v.numel()) for v in base.state_dict().values())
    table = summarise(results, arms, tasks)
    report = {
        "simulation": "Meta-World v3 (MuJoCo), state observations; scripted-expert demonstrations",
        "config": {k: v for k, v in vars(a).items() if k != "demo_range"},
        "tasks": tasks,
        "demonstrations": [{t: len(o) for t, (o, _) in r.items()} for r in fleets[0]],
        "bytes": {
            "full_policy_f32": full_bytes,
            "expert_adapters_f32": 4 * sum(int(v.numel()) for v in expert_state_dict(probe_e).values()),
            "single_adapter_f32": 4 * sum(int(v.numel()) for v in adapter_state_dict(build("single", base, tasks, a)).values()),
        },
        "time_s": {"pretrain": pretrain_s, "demonstrations": demos_s, "arms": arms_s, "per_arm": {r["arm"] + f"@{r['seed']}": [round(r["train_s"], 1), round(r["eval_s"], 1)] for r in results}},
        "arms": table,
        "runs": results,
    }
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)
    return 0


def summarise(results: List[Dict[str, Any]], arms: List[str], tasks: List[str]) -> Dict[str, Any]:
    from tensorguard.metaworld_fleet import wilson

    table: Dict[str, Any] = {}
    by_seed: Dict[str, Dict[int, float]] = {}
    for arm in arms:
        rows = [r for r in results if r["arm"] == arm]
        per_task = {}
        for t in tasks:
            s = sum(r["success"][t][0] for r in rows)
            n = sum(r["success"][t][1] for r in rows)
            lo, hi = wilson(s, n)
            per_task[t] = {"success": s / n if n else None, "n": n, "wilson95": [round(lo, 3), round(hi, 3)]}
        s = sum(r["success"][t][0] for r in rows for t in tasks)
        n = sum(r["success"][t][1] for r in rows for t in tasks)
        lo, hi = wilson(s, n)
        by_seed[arm] = {r["seed"]: r["mean_success"] for r in rows}
        table[arm] = {"mean_success": s / n if n else None, "wilson95": [round(lo, 3), round(hi, 3)], "per_seed": by_seed[arm], "per_task": per_task}
        eps = [r.get("epsilon") for r in rows if r.get("epsilon") is not None]
        if eps:
            table[arm]["epsilon"] = max(eps)
    # Paired across seeds: the same demonstrations and goals in each seed.
    for a, b in (("expert-wise", "fedavg"), ("expert-wise", "centralized"), (ARM_DP, "expert-wise"), ("expert-wise", "local-only")):
        if a in by_seed and b in by_seed:
            d = [by_seed[a][s] - by_seed[b][s] for s in by_seed[a] if s in by_seed[b]]
            table[f"{a} - {b}"] = {"per_seed": [round(x, 3) for x in d], "mean": round(float(np.mean(d)), 3), "min": round(min(d), 3), "max": round(max(d), 3)}
    return table


def print_table(report: Dict[str, Any]) -> None:
    tasks = report["tasks"]
    print(f"{'arm':<24}" + "".join(f"{t[:12]:>13}" for t in tasks) + f"{'mean':>8}  95% Wilson")
    for arm, row in report["arms"].items():
        if "per_task" not in row:
            print(f"{arm:<40} paired per seed {row['per_seed']} mean {row['mean']:+.3f}")
            continue
        cells = "".join(f"{(row['per_task'][t]['success'] or 0) * 100:>12.0f}%" for t in tasks)
        print(f"{arm:<24}{cells}{row['mean_success'] * 100:>7.1f}%  [{row['wilson95'][0] * 100:.1f}, {row['wilson95'][1] * 100:.1f}]")
    print(json.dumps({"bytes": report["bytes"], "time_s": {k: v for k, v in report["time_s"].items() if k != "per_arm"}}))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

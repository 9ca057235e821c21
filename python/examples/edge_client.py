"""The robot API: eight robots buffer their own demonstrations and
fine-tune one shared policy together, under secure aggregation.

The task is a toy one, so that it runs in seconds on a CPU: a point robot
on a plane must reach a goal; an observation is (position, goal) and an
action is a step of at most 0.1. Each robot knows 1–2 of four task
regions and holds a different number of its own demonstrations (a noisy
scripted expert). The demonstrations never leave a robot; only masked
updates do. At the end one robot also works offline and keeps its round
as a package.

Run: python examples/edge_client.py
"""

import numpy as np
import torch

import tensorguard
from tensorguard import Demonstration, EdgeClient

TASKS = {"reach-ne": (0.8, 0.8), "reach-nw": (-0.8, 0.8), "reach-se": (0.8, -0.8), "reach-sw": (-0.8, -0.8)}
STEPS = 30


def expert(pos, goal):
    return np.clip(goal - pos, -0.1, 0.1)


def episode(task, rng, noise=0.02):
    """One demonstration of `task` from a random start."""
    goal = np.array(TASKS[task]) + rng.normal(scale=0.1, size=2)
    pos = rng.uniform(-0.3, 0.3, size=2)
    obs, act = [], []
    for _ in range(STEPS):
        a = expert(pos, goal) + rng.normal(scale=noise, size=2)
        obs.append(np.concatenate([pos, goal]))
        act.append(a)
        pos = pos + np.clip(a, -0.1, 0.1)
    return Demonstration(np.array(obs), np.array(act), task=task)


def success_rate(policy, rng, trials=100):
    """Episodes of any task in which the policy ends within 0.1 of the goal."""
    wins = 0
    with torch.no_grad():
        for i in range(trials):
            goal = np.array(list(TASKS.values())[i % 4]) + rng.normal(scale=0.1, size=2)
            pos = rng.uniform(-0.3, 0.3, size=2)
            for _ in range(STEPS):
                a = policy(torch.tensor(np.concatenate([pos, goal]), dtype=torch.float32)).numpy()
                pos = pos + np.clip(a, -0.1, 0.1)
            wins += np.linalg.norm(pos - goal) < 0.1
    return wins / trials


def make_policy():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))


def main():
    rng = np.random.default_rng(7)
    names = list(TASKS)
    robots = []
    for r in range(8):
        robot = EdgeClient(make_policy(), learning_rate=1e-2, local_epochs=5, batch_size=64)
        # Non-IID: 1–2 tasks each, and 3–12 episodes of its own.
        tasks = [names[r % 4]] + ([names[(r + 1) % 4]] if r % 3 == 0 else [])
        for _ in range(int(rng.integers(3, 13))):
            robot.add_demonstration(episode(tasks[int(rng.integers(len(tasks)))], rng))
        robots.append(robot)
    print("robots' tasks:", [r.tasks for r in robots])

    policy = make_policy()
    before = success_rate(policy, np.random.default_rng(1))
    summary = tensorguard.simulation.run(
        lambda context: robots[context.partition_id],
        num_clients=len(robots),
        rounds=40,
        initial_model=policy.state_dict(),
        secure_aggregation={"clip": 10.0, "dropout": 0.3},
        local_epochs=5,
        batch_size=64,
        learning_rate=1e-2,
    )
    policy.load_state_dict(summary.state_dict())
    after = success_rate(policy, np.random.default_rng(1))
    print(f"rounds committed: {summary['rounds_committed']}/{summary['rounds']}")
    print(f"success rate (reaching accuracy) of the shared policy: {before:.2f} before, {after:.2f} after")

    # Offline: a robot trains on its own buffer and keeps the round.
    package = robots[0].process_round()
    p = tensorguard.edge.read_package(package)
    print(f"offline package: {len(package)} bytes, {p['examples']} steps of {p['tasks']}, masked: {p['masked']}")
    assert after > before


if __name__ == "__main__":
    main()

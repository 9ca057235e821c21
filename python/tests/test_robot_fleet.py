"""The robot fleet, small: 4 robots, 2 tasks, 3 rounds on Meta-World with
real MuJoCo, every arm end to end through the engine — adapters only on
the wire, ≥ 30× smaller than the policy and < 5 MB, secure aggregation
with distributed DP reporting its ε — and bad input refused with codes."""

import copy
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: pip install torch")
if os.environ.get("TENSORGUARD_REQUIRE_METAWORLD"):
    import metaworld  # noqa: F401  (.ci/run installs it: a missing one is a failure)
else:
    pytest.importorskip("metaworld", reason="Meta-World is not installed: pip install metaworld")

import tensorguard  # noqa: E402
from tensorguard import metaworld_fleet as mwf  # noqa: E402

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "robot_fleet.py"


def test_a_small_fleet_runs_every_arm_with_real_physics() -> None:
    args = ["--robots", "4", "--tasks", "2", "--rounds", "3", "--seeds", "1", "--eval-episodes", "6", "--public-demos", "4", "--no-full", "--workers", "2", "--json"]
    out = subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert "Meta-World" in report["simulation"]
    assert report["tasks"] == ["reach", "push"]
    arms = report["arms"]
    for arm in ("local-only", "fedavg", "expert-wise", "centralized", "expert-wise+secagg+dp"):
        assert arms[arm]["per_task"]["reach"]["n"] == 6, arm
        assert 0.0 <= arms[arm]["mean_success"] <= 1.0
    runs = {r["arm"]: r for r in report["runs"]}
    for arm in ("fedavg", "expert-wise"):
        assert runs[arm]["rounds_committed"] == 3, runs[arm]
    # With four robots, distributed DP's noise can swamp a round's weights:
    # such a round fails (nothing to average) rather than commit noise.
    assert 0 <= runs["expert-wise+secagg+dp"]["rounds_committed"] <= 3
    # Distributed DP under secure aggregation reports the ε it spent.
    assert 0.0 < arms["expert-wise+secagg+dp"]["epsilon"] <= 8.0 + 1e-9
    # Bandwidth: what a robot uploads per round is the adapters, not the policy.
    sizes = report["bytes"]
    assert sizes["full_policy_f32"] >= 30 * sizes["expert_adapters_f32"], sizes
    assert sizes["expert_adapters_f32"] < 5_000_000
    assert runs["expert-wise"]["upload_bytes_per_robot_round"] == sizes["expert_adapters_f32"]


def test_bad_fleet_input_gets_coded_errors() -> None:
    with pytest.raises(tensorguard.DataError) as e:
        mwf.configurations("fly-to-the-moon", "train")
    assert e.value.code == "E011"
    with pytest.raises(tensorguard.ConfigError) as e:
        mwf.configurations("reach", "test")
    assert e.value.code == "E020"
    with pytest.raises(tensorguard.ConfigError):
        mwf.rollout(lambda o: o[:, :4], "reach", mwf.configurations("reach", "eval")[:1], batch=0)
    assert mwf.rollout(lambda o: o[:, :4], "reach", []) == []
    with pytest.raises(tensorguard.ConfigError):
        mwf.split_counts(np.random.default_rng(0), 3, [], 1, 2)
    out = subprocess.run([sys.executable, str(EXAMPLE), "--tasks", "99"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "error[E020]" in out.stderr


def test_the_rollout_gate_rejects_a_poisoned_round_and_the_fleet_keeps_its_version() -> None:
    """Four robots fine-tune a reach policy; in round 2 one robot's
    demonstrations are shuffled actions. Every robot rolls the candidate
    and the current policy out on its own held-out goals (success counts
    only): the gate rejects the poisoned candidate with its figures, and
    the fleet stays on round 1's policy."""
    import numpy as np

    rng = np.random.default_rng(0)
    demos = mwf.collect("reach", mwf.configurations("reach", "train")[:24], rng)
    x = np.concatenate([d[0] for d in demos])
    y = np.concatenate([d[1] for d in demos])
    mean, std = x.mean(0), x.std(0) + 1e-3
    torch.manual_seed(0)
    policy = torch.nn.Sequential(torch.nn.Linear(39, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    xt, yt = torch.as_tensor((x - mean) / std, dtype=torch.float32), torch.as_tensor(y)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        ((policy(xt) - yt) ** 2).mean().backward()
        opt.step()
    shards = [(xt[i::4], yt[i::4]) for i in range(4)]
    held_out = mwf.configurations("reach", "eval")[:40]
    app = tensorguard.ClientApp()

    @app.train(format="torch")
    def train(model, config, context):
        i = context.partition_id
        local = copy.deepcopy(policy)
        local.load_state_dict(model)
        xs, ys = shards[i]
        poisoned = i == 0 and config["server_round"] == 2
        if poisoned:
            ys = ys[torch.randperm(len(ys), generator=torch.Generator().manual_seed(1))]
        o = torch.optim.Adam(local.parameters(), lr=1e-2 if poisoned else 1e-4)
        for _ in range(200 if poisoned else 2):
            o.zero_grad()
            ((local(xs) - ys) ** 2).mean().backward()
            o.step()
        return local.state_dict(), len(xs)

    @app.evaluate(format="torch")
    def evaluate(model, config, context):
        local = copy.deepcopy(policy)
        local.load_state_dict(model)

        def act(obs):
            with torch.no_grad():
                return local(torch.as_tensor((obs - mean) / std, dtype=torch.float32)).numpy()

        wins = mwf.rollout(act, "reach", held_out[context.partition_id :: 4], horizon=150)
        rate = sum(wins) / len(wins)
        # Success counts per task: summed over robots, per version.
        return 1.0 - rate, len(wins), {"accuracy": rate, "tasks": {"reach": (int(sum(wins)), len(wins))}}

    s = tensorguard.simulation.run(app, num_clients=4, rounds=2, initial_model=policy.state_dict(), gate_margin=0.0, gate_episodes=20)
    first, second = s["history"]
    assert first["status"] == "committed", first
    assert first["gate"]["passed"] and first["gate"]["candidate"]["episodes"] == 40
    assert second["status"] == "failed", second
    g = second["gate"]
    assert not g["passed"] and g["difference_high"] < 0, g
    assert g["candidate"]["successes"] < g["current"]["successes"]
    assert "rollout gate rejected the candidate" in second["reason"]
    assert f"{g['candidate']['successes']}/40" in second["reason"]
    # Each version's success per task (what the Experts page plots).
    for r in (first, second):
        assert r["gate"]["tasks"] == [{"task": "reach", "successes": r["gate"]["candidate"]["successes"], "episodes": 40}], r["gate"]
    # The fleet stays on round 1's version.
    assert s["final_model_sha256"] == first["model_sha256"]

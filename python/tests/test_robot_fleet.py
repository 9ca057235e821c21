"""The robot fleet, small: 4 robots, 2 tasks, 3 rounds on Meta-World with
real MuJoCo, every arm end to end through the engine — adapters only on
the wire, ≥ 30× smaller than the policy and < 5 MB, secure aggregation
with distributed DP reporting its ε — and bad input refused with codes."""

import json
import os
import pathlib
import subprocess
import sys

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
    for arm in ("fedavg", "expert-wise", "expert-wise+secagg+dp"):
        assert runs[arm]["rounds_committed"] == 3, runs[arm]
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
    out = subprocess.run([sys.executable, str(EXAMPLE), "--tasks", "99"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "error[E020]" in out.stderr

"""Every example in python/examples runs as a user would run it, in under a minute."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(name):
    if name == "robot_fleet.py":
        pytest.skip("the robot fleet's benchmark runs for minutes; tests/test_robot_fleet.py runs its small version")
    if "pytorch" in name or "edge" in name:
        pytest.importorskip("torch", reason="torch is not installed: pip install torch")
    out = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "accuracy" in out.stdout

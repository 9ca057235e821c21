"""A real fleet from Python: `tensorguard coordinator start` runs a secure
job on the operator's own model (a safetensors file), five
`tensorguard.Agent` processes train it, one is killed mid-round, and the
committed models equal the in-process simulation of the same job.

Why five and not three: against a malicious coordinator, SecAgg+ needs
each survivor to keep at least t neighbours with 2t > k + c. Three clients
give k = 2 and t = 2, so no dropout at all can be survived (each survivor
would keep one neighbour, and it aborts with E101/E105, as it must: else a
coordinator could declare neighbours dropped to unmask a victim). Five
clients give k = 4, t = 3: one dropout is survived."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tensorguard

sys.path.insert(0, os.path.dirname(__file__))
import fleet_client  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BIN = Path(os.environ.get("TENSORGUARD_BIN", REPO / "target" / "debug" / "tensorguard"))
PASSPHRASE = "python-fleet-test"
ENV = {**os.environ, "TENSORGUARD_KEY_PASSPHRASE": PASSPHRASE}

if not BIN.exists():
    if os.environ.get("TENSORGUARD_REQUIRE_BIN"):
        raise RuntimeError(f"TENSORGUARD_BIN={BIN} does not exist; build it with `cargo build -p tensorguard`")
    pytest.skip(f"no tensorguard binary at {BIN} (build it with `cargo build -p tensorguard`, or set TENSORGUARD_BIN)", allow_module_level=True)

N = 5

JOB = """
[job]
clients = 5
min_clients = 3
rounds = 2
local_epochs = 5
lr = 0.2
seed = 42

[secure_aggregation]
bits = 20
clip = 10.0
dropout = 0.4

[model]
initial = "initial.safetensors"

[network]
listen = ["/ip4/127.0.0.1/tcp/0"]

[deadlines]
join_secs = 120
train_secs = 15
stage_secs = 15

[admission]
enrollment = true
fleet_root = "{root}"
"""


def tg(data_dir: Path, *args: str) -> dict:
    out = subprocess.run([str(BIN), "--data-dir", str(data_dir), "--json", *args], env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip().startswith("{") else {"text": out.stdout.strip()}


def wait_for(f, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        v = f()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_three_python_agents_one_killed_end_on_the_simulation_s_model(tmp_path: Path) -> None:
    import safetensors.torch
    import torch

    ops, coord = tmp_path / "operator", tmp_path / "coordinator"
    ops.mkdir()
    # The initial model as safetensors' own writer saves a state_dict.
    state_dict = {k: torch.from_numpy(v) for k, v in fleet_client.initial_model().items()}
    safetensors.torch.save_file(state_dict, str(tmp_path / "initial.safetensors"))
    root = tg(ops, "keys", "fleet-root", "--out", str(ops / "fleet-root.key"))["fleet_root"]
    (tmp_path / "job.toml").write_text(JOB.format(root=root))
    coordinator = subprocess.Popen(
        [str(BIN), "--data-dir", str(coord), "--json", "-v", "coordinator", "start", "--job", str(tmp_path / "job.toml")],
        env=ENV, stdout=subprocess.PIPE, stderr=open(tmp_path / "coordinator.err", "w"), text=True,
    )
    agents = []
    try:
        addr = wait_for(lambda: (coord / "coordinator.addrs").exists() and (coord / "coordinator.addrs").read_text().split(), 60, "the coordinator")[0]
        for i in range(N):
            d = tmp_path / f"agent-{i}"
            d.mkdir()
            tg(d, "keys", "generate")
            key = tg(d, "keys", "export-public")["public_key"]
            cert = tg(ops, "keys", "certify", "--root", str(ops / "fleet-root.key"), "--identity", key, "--name", f"robot-{i}")["certificate"]
            (d / "fleet.cert").write_text(cert)
            token = tg(coord, "enroll", "create")["token"]
            stall = "2" if i == N - 1 else "0"
            agents.append(subprocess.Popen(
                [sys.executable, str(HERE / "fleet_client.py"), addr, str(d), token, str(d / "fleet.cert"), root, str(i), stall, str(tmp_path / "stalled")],
                env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=open(tmp_path / f"agent-{i}.err", "w"), text=True,
            ))
        # The last agent is killed while it trains round 2.
        wait_for(lambda: (tmp_path / "stalled").exists(), 180, "the last agent to reach round 2")
        agents[-1].send_signal(signal.SIGKILL)
        out, _ = coordinator.communicate(timeout=240)
        states = [a.communicate(timeout=60)[0].split() for a in agents[:-1]]
    finally:
        for p in [coordinator, *agents]:
            if p.poll() is None:
                p.kill()
    logs = "\n".join((tmp_path / f).read_text() for f in ["coordinator.err", *(f"agent-{i}.err" for i in range(N))])
    assert coordinator.returncode == 0, logs
    summary = json.loads(out[out.index("{"):])
    assert summary["status"] == "completed" and summary["rounds_committed"] == 2, (summary, logs)
    for a, state in zip(agents, states):
        # Each answered both rounds' stages and declined nothing.
        assert a.returncode == 0 and state[0] == "finished" and state[2] == "0", (state, logs)

    # The same job in process: the last client drops out in round 2.
    sim = tensorguard.simulation.run(
        fleet_client.app(fail_from=2, only=N - 1), num_clients=N, rounds=2, initial_model=fleet_client.initial_model(),
        min_clients=3, local_epochs=5, learning_rate=0.2, seed=42,
        secure_aggregation={"bits": 20, "clip": 10.0, "dropout": 0.4},
    )
    assert sim["rounds_committed"] == 2, sim
    fleet_model = tensorguard.load_model(summary["final_model_sha256"], data_dir=str(coord), format="numpy")
    for name in ("w", "b"):
        np.testing.assert_array_equal(fleet_model[name], sim.model[name])
    assert summary["final_model_sha256"] == sim["final_model_sha256"]
    assert sim.model["w"][-1] > 0.5, "the model learned the slope"


PLAIN_JOB = """
[job]
clients = 1
min_clients = 1
rounds = 1
seed = 42

[model]
initial = "initial.safetensors"

[network]
listen = ["/ip4/127.0.0.1/tcp/0"]

[deadlines]
join_secs = 60
train_secs = 15
stage_secs = 15
"""


def test_a_round_below_the_owner_s_floor_is_a_round_error_and_a_cli_agent_cannot_train_an_operator_model(tmp_path: Path) -> None:
    coord = tmp_path / "coordinator"
    tensorguard.save_model(fleet_client.initial_model(), str(tmp_path / "initial.safetensors"))
    (tmp_path / "job.toml").write_text(PLAIN_JOB)
    coordinator = subprocess.Popen(
        [str(BIN), "--data-dir", str(coord), "--json", "coordinator", "start", "--job", str(tmp_path / "job.toml")],
        env=ENV, stdout=subprocess.PIPE, stderr=open(tmp_path / "coordinator.err", "w"), text=True,
    )
    try:
        addr = wait_for(lambda: (coord / "coordinator.addrs").exists() and (coord / "coordinator.addrs").read_text().split(), 60, "the coordinator")[0]
        # The CLI's agent trains only the built-in models: it stops at the offer.
        cli = subprocess.run(
            [str(BIN), "--data-dir", str(tmp_path / "cli"), "agent", "start", "--coordinator", addr, "--once", "--allow-plaintext",
             "--enroll", tg(coord, "enroll", "create")["token"]],
            env=ENV, capture_output=True, text=True, timeout=60,
        )
        assert cli.returncode != 0 and "E012" in cli.stderr and "tensorguard.Agent" in cli.stderr, cli.stderr
        # A Python agent whose owner allows only secure rounds declines the
        # (plaintext) round: the owner gets a RoundError with E110, the
        # coordinator only the code, and the agent goes on to the job's end.
        agent = tensorguard.Agent(
            fleet_client.app(), addr, enroll=tg(coord, "enroll", "create")["token"], model=fleet_client.initial_model(),
            data_dir=str(tmp_path / "py"), passphrase=PASSPHRASE, context=tensorguard.Context(0, 1),
            policy={"fleet_root": "trust-coordinator"},
        ).start()
        status = agent.join(timeout=120)
        out, _ = coordinator.communicate(timeout=60)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
    assert status is not None and status["state"] == "finished", status
    assert status["declined"] == 1 and "round 1" in status["last_declined"], status
    assert len(agent.declined) == 1
    e = agent.declined[0]
    assert isinstance(e, tensorguard.RoundError) and e.code == "E110" and "plaintext" in str(e).lower(), e
    summary = json.loads(out[out.index("{"):])
    assert summary["rounds_committed"] == 0, summary


def test_a_connected_edge_client_takes_part_in_the_coordinator_s_rounds(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    coord = tmp_path / "coordinator"
    torch.manual_seed(0)
    policy = torch.nn.Linear(3, 2)
    tensorguard.save_model(policy.state_dict(), str(tmp_path / "initial.safetensors"))
    (tmp_path / "job.toml").write_text(PLAIN_JOB.replace("rounds = 1", "rounds = 2"))
    coordinator = subprocess.Popen(
        [str(BIN), "--data-dir", str(coord), "--json", "coordinator", "start", "--job", str(tmp_path / "job.toml")],
        env=ENV, stdout=subprocess.PIPE, stderr=open(tmp_path / "coordinator.err", "w"), text=True,
    )
    robot = tensorguard.EdgeClient(policy, learning_rate=0.1)
    robot.add_demonstration(tensorguard.Demonstration(np.ones((16, 3)), np.full((16, 2), 0.25), task="reach"))
    try:
        addr = wait_for(lambda: (coord / "coordinator.addrs").exists() and (coord / "coordinator.addrs").read_text().split(), 60, "the coordinator")[0]
        robot.connect(addr, enroll=tg(coord, "enroll", "create")["token"], data_dir=str(tmp_path / "robot"),
                      passphrase=PASSPHRASE, allow_plaintext=True)
        # Returns once the robot has answered a request of the coordinator's.
        first = robot.process_round(timeout=60)
        out, _ = coordinator.communicate(timeout=60)
        last = robot.status()
    finally:
        robot.stop()
        if coordinator.poll() is None:
            coordinator.kill()
    assert first["answered"] >= 1 and last["answered"] >= 2 and last["declined"] == 0, (first, last)
    summary = json.loads(out[out.index("{"):])
    assert summary["rounds_committed"] == 2, (summary, (tmp_path / "coordinator.err").read_text())
    # The fleet's model fits the robot's demonstrations better than the start.
    def error(m):
        return float(((torch.ones(3) @ m["weight"].T + m["bias"] - 0.25) ** 2).mean())

    start = tensorguard.load_model(str(tmp_path / "initial.safetensors"))
    model = tensorguard.load_model(summary["final_model_sha256"], data_dir=str(coord))
    assert error(model) < error(start), (start, model)

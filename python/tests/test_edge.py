"""The robot API: demonstrations stay on the robot; bad episodes are
errors with codes; offline rounds give a clipped package; EdgeClients run
in a simulation as clients."""

import numpy as np
import pytest

import tensorguard
from tensorguard import DataError, Demonstration, EdgeClient

torch = pytest.importorskip("torch")


def demo(n=6, obs=3, act=2, task="reach", value=1.0):
    return Demonstration(np.full((n, obs), value), np.full((n, act), 0.5), task=task)


def test_bad_demonstrations_are_data_errors_with_their_code() -> None:
    for obs, act, task in [
        (np.ones((4, 3)), np.ones((5, 2)), "t"),  # lengths differ
        (np.ones(4), np.ones((4, 2)), "t"),  # 1-D
        (np.ones((0, 3)), np.ones((0, 2)), "t"),  # empty
        (np.full((2, 3), np.nan), np.ones((2, 2)), "t"),  # NaN
        (np.ones((2, 3)), np.ones((2, 2)), ""),  # no task
    ]:
        with pytest.raises(DataError) as e:
            Demonstration(obs, act, task=task)
        assert e.value.code == "E011"
    robot = EdgeClient(torch.nn.Linear(3, 2))
    robot.add_demonstration(demo())
    with pytest.raises(DataError) as e:
        robot.add_demonstration(demo(obs=4))
    assert "same sensors" in str(e.value)
    with pytest.raises(tensorguard.ConfigError):
        robot.add_demonstration((np.ones((2, 3)), np.ones((2, 2))))
    with pytest.raises(tensorguard.ConfigError):
        EdgeClient(object())


def test_the_buffer_is_bounded_and_an_empty_one_trains_nothing() -> None:
    robot = EdgeClient(torch.nn.Linear(3, 2), max_demonstrations=2)
    with pytest.raises(DataError):
        robot.process_round()
    for task in ["a", "b", "c"]:
        robot.add_demonstration(demo(task=task))
    assert robot.tasks == {"b": 1, "c": 1} and robot.dropped == 1 and robot.num_steps == 12


def test_an_offline_round_is_a_clipped_labelled_package_and_the_data_stays() -> None:
    robot = EdgeClient(torch.nn.Linear(3, 2), clip=0.001, learning_rate=0.1)
    robot.add_demonstration(demo(task="push"))
    robot.add_demonstration(demo(task="reach"))
    package = robot.process_round()
    p = tensorguard.edge.read_package(package)
    norm = float(np.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in p["update"].values())))
    assert p["examples"] == 12 and p["tasks"] == {"push": 1, "reach": 1}
    assert abs(norm - 0.001) < 1e-6 < p["norm_before_clip"] - 0.001
    assert p["masked"].startswith("no") and p["noised"] == "no"
    # Only the update's tensors: no observation or action travels.
    assert sorted(p["update"]) == ["bias", "weight"]
    assert len(package) < 1000
    for junk in [b"", b"not a package", tensorguard.edge.read_package.__doc__.encode()]:
        with pytest.raises(DataError):
            tensorguard.edge.read_package(junk)
    # A plain model file is not a package either.
    plain = bytes(tensorguard._core.write_safetensors([("w", [1], np.zeros(1, np.float32).tobytes())]))
    with pytest.raises(DataError) as e:
        tensorguard.edge.read_package(plain)
    assert "format" in str(e.value)


def test_edge_clients_are_clients_of_a_simulation() -> None:
    torch.manual_seed(0)
    robots = []
    for i in range(3):
        r = EdgeClient(torch.nn.Linear(3, 2), learning_rate=0.05, local_epochs=5)
        r.add_demonstration(Demonstration(np.random.default_rng(i).normal(size=(20, 3)), np.full((20, 2), 0.5), task=f"t{i}"))
        robots.append(r)
    init = torch.nn.Linear(3, 2).state_dict()
    s = tensorguard.simulation.run(lambda c: robots[c.partition_id], num_clients=3, rounds=4, initial_model=init, learning_rate=0.05, local_epochs=5)
    assert s["rounds_committed"] == 4
    sd = s.state_dict()
    assert abs(float(sd["bias"].mean()) - 0.5) < 0.2, sd

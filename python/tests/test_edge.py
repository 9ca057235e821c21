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
    for bad in [{"batch_size": 0}, {"local_epochs": -1}, {"learning_rate": float("nan")}, {"clip": 0.0}]:
        with pytest.raises(tensorguard.ConfigError):
            EdgeClient(torch.nn.Linear(3, 2), **bad)
    # An episode cannot be changed once checked.
    obs = np.ones((2, 3), dtype=np.float32)
    d = Demonstration(obs, np.ones((2, 2)))
    obs[0, 0] = np.nan
    assert np.isfinite(d.observations).all() and not d.observations.flags.writeable


def test_the_buffer_is_bounded_and_an_empty_one_trains_nothing() -> None:
    robot = EdgeClient(torch.nn.Linear(3, 2), max_demonstrations=2)
    with pytest.raises(DataError):
        robot.process_round()
    for task in ["a", "b", "c"]:
        robot.add_demonstration(demo(task=task))
    assert robot.tasks == {"b": 1, "c": 1} and robot.dropped == 1 and robot.num_steps == 12


def test_an_offline_round_is_a_clipped_labelled_package_and_the_data_stays() -> None:
    policy = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    robot = EdgeClient(policy, clip=0.001, learning_rate=0.1)
    robot.add_demonstration(demo(task="push"))
    robot.add_demonstration(demo(task="reach"))
    own = {k: v.clone() for k, v in policy.state_dict().items()}
    package = robot.process_round()
    p = tensorguard.edge.read_package(package)
    norm = float(np.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in p["update"].values())))
    assert p["examples"] == 12 and p["tasks"] is None and p["clipped"]
    assert 0.001 * (1 - 1e-5) < norm <= 0.001
    assert p["masked"].startswith("no") and p["noised"] == "no"
    # Only the trainable parameters' update: no observation, action or
    # BatchNorm statistic of the robot's data travels, nor how far the
    # update was clipped.
    assert sorted(p["update"]) == ["0.bias", "0.weight", "1.bias", "1.weight", "2.bias", "2.weight"]
    assert b"norm" not in package and b"push" not in package and len(package) < 2000
    # The robot's own policy is untouched by the round.
    assert all(torch.equal(own[k], v) for k, v in policy.state_dict().items())
    # Tasks are named only when the robot opts in.
    named = EdgeClient(torch.nn.Linear(3, 2), package_tasks=True)
    named.add_demonstration(demo(task="push"))
    assert tensorguard.edge.read_package(named.process_round())["tasks"] == {"push": 1}
    for junk in [b"", b"not a package", tensorguard.edge.read_package.__doc__.encode()]:
        with pytest.raises(DataError):
            tensorguard.edge.read_package(junk)
    with pytest.raises(tensorguard.ConfigError):
        tensorguard.edge.read_package(10**12)  # not bytes: never allocated
    # A forged package whose update exceeds its stated clip is refused.
    forged = bytes(package).replace(b'"clip":"0.001"', b'"clip":"0.000"')
    if forged != package:
        with pytest.raises(DataError):
            tensorguard.edge.read_package(forged)
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

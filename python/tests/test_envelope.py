"""The robot's operating envelope: a throttled uplink gets its update
sparsified to fit while the fleet still learns; a robot that is not ready
sits the round out; training stops at its time limit; an update over the
byte limit never leaves; bad settings are coded errors."""

import numpy as np
import pytest

import tensorguard
from tensorguard import ConfigError, Demonstration, EdgeClient, Envelope, RoundError

torch = pytest.importorskip("torch")

OBS, ACT, HIDDEN = 39, 4, 512


def policy():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(OBS, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, ACT))


def robot(i, envelope=None, steps=64, **kw):
    r = EdgeClient(policy(), learning_rate=0.01, local_epochs=2, envelope=envelope, **kw)
    rng = np.random.default_rng(i)
    obs = rng.normal(size=(steps, OBS))
    r.add_demonstration(Demonstration(obs, np.tanh(obs[:, :ACT]), task=f"t{i % 2}"))
    return r


def fleet(envelopes, rounds=3, **job):
    robots = [robot(i, e) for i, e in enumerate(envelopes)]
    init = policy().state_dict()
    return tensorguard.simulation.run(lambda c: robots[c.partition_id], num_clients=len(robots), rounds=rounds, initial_model=init, learning_rate=0.01, local_epochs=2, **job)


def test_a_throttled_uplink_gets_a_sparsified_update_that_fits_and_the_fleet_still_learns() -> None:
    dense_bytes = 4 * sum(p.numel() for p in policy().parameters())
    free = fleet([None] * 4)
    # Robot 0's link carries 2 kB/s and an upload may take 10 s: 20 kB,
    # against its ~95 kB dense update.
    budget = 20_000
    slow = Envelope(uplink_bytes_per_s=lambda: 2_000.0, upload_seconds=10)
    assert slow.upload_budget() == budget
    throttled = fleet([slow, None, None, None])
    assert free["rounds_committed"] == throttled["rounds_committed"] == 3
    for a, b in zip(free["history"], throttled["history"]):
        assert a["participants"] == b["participants"] == 4, (a, b)
        # Four dense updates, against three dense and one within 20 kB.
        assert a["upload_bytes"] > 4 * dense_bytes
        assert b["upload_bytes"] < 3 * (a["upload_bytes"] / 4) + budget, (a["upload_bytes"], b["upload_bytes"])
        assert b["upload_bytes"] > 3 * dense_bytes
    # Sparsified with error feedback, the fleet's model still moves.
    assert throttled["history"][-1]["loss"] is None or np.isfinite(throttled["history"][-1]["loss"])
    before = policy().state_dict()
    after = throttled.state_dict()
    assert any(float((after[k] - before[k]).abs().max()) > 0 for k in before)


def test_a_robot_that_is_not_ready_sits_the_round_out() -> None:
    why = "battery at 9%"
    s = fleet([Envelope(ready=lambda: why), None, None], rounds=2, min_clients=2)
    assert s["rounds_committed"] == 2
    assert all(h["participants"] == 2 for h in s["history"]), s["history"]
    offline = robot(0, Envelope(ready=lambda: why))
    assert offline.process_round() is None
    assert offline.last_skipped == why
    assert robot(0, Envelope(ready=lambda: False)).process_round() is None
    assert robot(0, Envelope(ready=lambda: True)).process_round() is not None


def test_training_stops_at_the_envelope_time_limit() -> None:
    r = robot(0, Envelope(max_train_seconds=0.01), steps=20_000, batch_size=1)
    package = tensorguard.edge.read_package(r.process_round())
    assert 1 <= r.last_round_examples < r.num_steps
    assert package["examples"] == r.last_round_examples


def test_an_update_over_max_update_bytes_never_leaves() -> None:
    r = robot(0, Envelope(max_update_bytes=2_000))
    with pytest.raises(RoundError) as e:
        r.process_round()
    assert e.value.code == "E110" and "2000 bytes" in str(e.value)
    assert "above the envelope" in r.last_skipped


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_update_bytes": 0},
        {"max_update_bytes": 1.5},
        {"max_update_bytes": True},
        {"upload_seconds": float("nan")},
        {"max_train_seconds": -1},
        {"ready": "yes"},
        {"uplink_bytes_per_s": 1000},
    ],
)
def test_bad_envelopes_are_coded_errors(kwargs) -> None:
    with pytest.raises(ConfigError) as e:
        Envelope(**kwargs)
    assert e.value.code == "E020"


def test_a_lying_uplink_measurement_is_a_coded_error() -> None:
    with pytest.raises(ConfigError):
        Envelope(uplink_bytes_per_s=lambda: float("nan")).upload_budget()
    with pytest.raises(ConfigError):
        EdgeClient(policy(), envelope={"max_update_bytes": 10})

"""The SDK against the real engine: exact sums, secure sums, real learning, and bad input."""

import os
import tempfile

import numpy as np
import pytest

import tensorguard
from tensorguard import ClientApp, ConfigError, NumPyClient


def adder_app():
    """Client i moves every weight by i + 1 and reports (i + 1) * 10 examples."""
    app = ClientApp()

    @app.train()
    def train(model, config, context):
        step = context.partition_id + 1
        context.state["rounds"] = context.state.get("rounds", 0) + 1
        return {k: v + step for k, v in model.items()}, 10 * step, {"loss": 1.0 / step}

    return app


def test_fedavg_is_the_example_weighted_mean_exactly():
    s = tensorguard.simulation.run(adder_app(), num_clients=3, rounds=2, initial_model={"w": np.zeros(5), "b": np.ones(2)})
    assert s["status"] == "completed" and s["rounds_committed"] == 2
    # Σ nᵢ·stepᵢ / Σ nᵢ = (10·1 + 20·2 + 30·3) / 60 = 140/60 per round.
    expect = 2 * 140 / 60
    np.testing.assert_allclose(s.model["w"], expect, rtol=1e-6)
    np.testing.assert_allclose(s.model["b"], 1 + expect, rtol=1e-6)
    assert [h["participants"] for h in s["history"]] == [3, 3]
    assert len(s["final_model_sha256"]) == 64


def test_secure_aggregation_matches_the_plain_sum_within_quantization():
    init = {"w": np.linspace(-1, 1, 50)}
    plain = tensorguard.simulation.run(adder_app(), num_clients=5, rounds=2, initial_model=init)
    # Secure rounds clip each weighted update to `clip` (L2) before
    # encoding; these updates (norm ≤ 35, weight n / weight_scale ≤ 1.7)
    # stay below it, so the masked sum is the plain one up to quantization.
    secure = tensorguard.simulation.run(adder_app(), num_clients=5, rounds=2, initial_model=init,
                                        secure_aggregation={"clip": 100.0, "weight_scale": 30.0})
    assert secure["status"] == "completed" and secure["secure_aggregation"]
    np.testing.assert_allclose(secure.model["w"], plain.model["w"], atol=1e-3)


class Flowerish(NumPyClient):
    """A Flower NumPyClient, written against Flower's API."""

    def __init__(self, cid):
        self.cid = cid

    def get_parameters(self, config):
        return [np.zeros((2, 3), dtype=np.float32), np.zeros(3, dtype=np.float32)]

    def fit(self, parameters, config):
        return [p + self.cid for p in parameters], 1, {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {"accuracy": 1.0}


def test_a_flower_numpy_client_runs_with_its_client_fn():
    def client_fn(context):
        return Flowerish(context.node_config["partition-id"]).to_client()

    s = tensorguard.simulation.run(client_fn, num_clients=4, rounds=1)
    assert s["rounds_committed"] == 1
    # Equal weights: the mean of 0, 1, 2, 3.
    np.testing.assert_allclose(s.model["0000"], np.full((2, 3), 1.5))
    np.testing.assert_allclose(s.model["0001"], np.full(3, 1.5))


def softmax_regression_app():
    app = ClientApp()

    @app.train()
    def train(model, config, context):
        (x, y), _ = tensorguard.datasets.digits(context.partition_id, context.num_partitions, seed=1)
        w, b = model["w"].copy(), model["b"].copy()
        for _ in range(config["local_epochs"] * 20):
            z = x @ w + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(y)), y] -= 1
            w -= config["learning_rate"] * x.T @ p / len(y)
            b -= config["learning_rate"] * p.mean(0)
        return {"w": w, "b": b}, len(y)

    return app


def held_out(model):
    _, (xt, yt) = tensorguard.datasets.digits(0, 1)
    z = xt @ model["w"] + model["b"]
    acc = float((z.argmax(1) == yt).mean())
    return 1.0 - acc, {"accuracy": acc}


@pytest.mark.parametrize("secure", [False, True])
def test_a_real_model_learns_the_digits(secure):
    init = {"w": np.zeros((64, 10), dtype=np.float32), "b": np.zeros(10, dtype=np.float32)}
    s = tensorguard.simulation.run(
        softmax_regression_app(), num_clients=5, rounds=5, initial_model=init,
        learning_rate=0.5, evaluate_fn=held_out, secure_aggregation=secure or None,
    )
    assert s["status"] == "completed"
    assert s["final_accuracy"] > 0.85, s["history"]
    assert s["history"][-1]["accuracy"] == s["final_accuracy"]


def test_distributed_dp_reports_epsilon():
    init = {"w": np.zeros(20)}
    s = tensorguard.simulation.run(
        adder_app(), num_clients=6, rounds=2, initial_model=init,
        dp={"mode": "distributed", "target_epsilon": 50.0, "delta": 1e-5, "clip": 1.0},
    )
    assert s["status"] == "completed"
    assert s["dp"] == "distributed"
    assert 0 < s["epsilon"] <= 50.0
    assert s["epsilon_vs_coordinator"] >= s["epsilon"]


def test_bad_settings_raise_the_job_files_codes():
    init = {"w": np.zeros(3)}
    with pytest.raises(ConfigError) as e:
        tensorguard.simulation.run(adder_app(), num_clients=3, rounds=1, initial_model=init, strategy="krum9")
    assert e.value.code == "E020" and "strategy" in str(e.value)
    with pytest.raises(ConfigError) as e:
        tensorguard.simulation.run(adder_app(), num_clients=3, rounds=1, initial_model=init, colour="blue")
    assert e.value.code == "E003" and "colour" in str(e.value)
    with pytest.raises(ConfigError) as e:
        tensorguard.simulation.run(adder_app(), num_clients=3, rounds=1, initial_model=init, min_clients=5)
    assert e.value.code == "E021"
    with pytest.raises(tensorguard.PrivacyError) as e:
        tensorguard.simulation.run(adder_app(), num_clients=3, rounds=1, initial_model=init,
                                   dp={"mode": "central", "target_epsilon": -1.0, "delta": 1e-5, "clip": 1.0})
    assert e.value.code == "E060"
    with pytest.raises(ConfigError) as e:
        tensorguard.simulation.run(adder_app(), num_clients=0, rounds=1, initial_model=init)
    assert e.value.code == "E020"


def test_scaffold_from_python_is_refused_with_the_reason():
    with pytest.raises(ConfigError) as e:
        tensorguard.simulation.run(adder_app(), num_clients=3, rounds=1, initial_model={"w": np.zeros(3)}, strategy="scaffold")
    assert "SCAFFOLD" in str(e.value)


def test_fedprox_runs_only_on_clients_that_add_the_proximal_term():
    with pytest.raises(ConfigError) as e:
        tensorguard.simulation.run(adder_app(), num_clients=2, rounds=1, initial_model={"w": np.zeros(3)}, strategy="fedprox")
    assert "FedProx" in str(e.value)
    seen = []
    app = ClientApp(fedprox=True)

    @app.train()
    def train(model, config, context):
        seen.append(config["proximal_mu"])
        return model, 1

    s = tensorguard.simulation.run(app, num_clients=2, rounds=1, initial_model={"w": np.zeros(3)}, strategy="fedprox", mu=0.3)
    assert s["rounds_committed"] == 1
    assert seen and all(abs(m - 0.3) < 1e-6 for m in seen)


def test_nan_and_wrong_shapes_from_a_client_are_errors_with_codes():
    app = ClientApp()

    @app.train()
    def nan(model, config, context):
        return {"w": np.full(3, np.nan)}, 1

    with pytest.raises(ConfigError) as e:
        tensorguard.simulation.run(app, num_clients=2, rounds=1, initial_model={"w": np.zeros(3)})
    assert e.value.code == "E020" and "non-finite" in str(e.value)
    assert e.value.summary["rounds_committed"] == 0

    app = ClientApp()

    @app.train()
    def wrong(model, config, context):
        return {"w": np.zeros(4)}, 1

    with pytest.raises(ConfigError) as e:
        tensorguard.simulation.run(app, num_clients=2, rounds=1, initial_model={"w": np.zeros(3)})
    assert "layout" in str(e.value) and "[4]" in str(e.value)

    with pytest.raises(ConfigError) as e:
        tensorguard.simulation.run(adder_app(), num_clients=2, rounds=1, initial_model={"w": np.array([1.0, np.inf])})
    assert "non-finite" in str(e.value)


def test_one_failing_client_sits_out_and_is_reported():
    app = ClientApp()

    @app.train()
    def train(model, config, context):
        if context.partition_id == 1:
            raise RuntimeError("sensor offline")
        return {k: v + 1 for k, v in model.items()}, 5

    s = tensorguard.simulation.run(app, num_clients=3, rounds=1, initial_model={"w": np.zeros(2)})
    assert s["rounds_committed"] == 1
    assert s["history"][0]["participants"] == 2
    assert any("sensor offline" in str(e) for e in s.client_errors)


def test_models_round_trip_through_safetensors_and_the_store():
    d = tempfile.mkdtemp()
    s = tensorguard.simulation.run(adder_app(), num_clients=2, rounds=1, initial_model={"w": np.zeros(3)}, data_dir=d)
    stored = tensorguard.load_model(s["final_model_sha256"], data_dir=d, format="numpy")
    np.testing.assert_array_equal(stored["w"], s.model["w"])
    path = os.path.join(d, "m.safetensors")
    tensorguard.save_model(s.model, path)
    np.testing.assert_array_equal(tensorguard.load_model(path, format="numpy")["w"], s.model["w"])
    with pytest.raises(ConfigError):
        tensorguard.load_model(s["final_model_sha256"], format="numpy")


def test_torch_state_dicts_round_trip():
    torch = pytest.importorskip("torch", reason="torch is not installed: pip install torch")
    net = torch.nn.Linear(4, 2)
    app = ClientApp()

    @app.train(format="torch")
    def train(state, config, context):
        net.load_state_dict(state)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        return net.state_dict(), 3

    s = tensorguard.simulation.run(app, num_clients=2, rounds=1, initial_model=net.state_dict())
    d = tempfile.mkdtemp()
    path = os.path.join(d, "m.safetensors")
    tensorguard.save_model(s.model, path)
    fresh = torch.nn.Linear(4, 2)
    fresh.load_state_dict(tensorguard.load_model(path))
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, torch.from_numpy(s.model[k]))


def test_digits_partitions_cover_the_training_set():
    sizes = [len(tensorguard.datasets.digits(i, 4)[0][1]) for i in range(4)]
    assert sum(sizes) > 1000
    with pytest.raises(ConfigError):
        tensorguard.datasets.digits(4, 4)
    with pytest.raises(ConfigError):
        tensorguard.datasets.digits(0, 4, partition="zipf")


def test_ctrl_c_stops_the_run_before_its_next_round_and_raises():
    import signal
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import time, numpy as np, tensorguard
        app = tensorguard.ClientApp()
        @app.train()
        def train(model, config, context):
            if config["server_round"] == 2 and context.partition_id == 0:
                print("round 2", flush=True)
            time.sleep(0.02)
            return model, 1
        try:
            tensorguard.simulation.run(app, num_clients=2, rounds=100000, initial_model={"w": np.zeros(2)})
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    assert p.stdout.readline().strip() == "round 2"
    p.send_signal(signal.SIGINT)
    # Liveness, not speed: 100,000 rounds would take more than an hour.
    out, _ = p.communicate(timeout=60)
    assert "interrupted" in out
    assert p.returncode == 0


def test_federated_evaluation_calls_every_clients_evaluate_handler():
    app = ClientApp()

    @app.train()
    def train(model, config, context):
        return {k: v + 1 for k, v in model.items()}, 5

    @app.evaluate()
    def evaluate(model, config, context):
        return float(model["w"][0]), 5, {"accuracy": 0.5 + 0.1 * context.partition_id}

    s = tensorguard.simulation.run(app, num_clients=3, rounds=2, initial_model={"w": np.zeros(2)}, evaluate_every=1)
    fed = [h["federated"] for h in s["history"]]
    assert [f["answered"] for f in fed] == [3, 3]
    # Example-weighted means over the clients: loss is the model's w, accuracy 0.6.
    assert [f["loss"] for f in fed] == [1.0, 2.0]
    assert all(abs(f["accuracy"] - 0.6) < 1e-9 for f in fed)


def test_federated_evaluation_sums_success_per_task_and_refuses_counts_that_do_not_add_up():
    app = ClientApp()

    @app.train()
    def train(model, config, context):
        return {k: v + 1 for k, v in model.items()}, 5

    @app.evaluate()
    def evaluate(model, config, context):
        # Client i: task "a" on 3 episodes (i successes); client 2 also "b".
        i = context.partition_id
        tasks = {"a": (i, 3)} if i < 2 else {"a": (2, 3), "b": (1, 2)}
        n = sum(e for _, e in tasks.values())
        return 0.0, n, {"accuracy": sum(s for s, _ in tasks.values()) / n, "tasks": tasks}

    s = tensorguard.simulation.run(app, num_clients=3, rounds=1, initial_model={"w": np.zeros(2)}, evaluate_every=1)
    assert s["history"][0]["federated"]["tasks"] == [{"task": "a", "successes": 3, "episodes": 9}, {"task": "b", "successes": 1, "episodes": 2}]
    from tensorguard.app import task_counts

    # Counts the coordinator would drop are dropped with a warning (the
    # robot's totals still count: it keeps its vote in the rollout gate).
    for bad, n, acc in (
        ({"a": (4, 3)}, 3, 1.0),
        ({"a": (1, 3)}, 4, 0.25),
        ({"a": (1.0, 3)}, 3, 1 / 3),
        ({"a": 3}, 3, 0.0),
        ([("a", 1, 3)], 3, 1 / 3),
        ({"a": (0, 0)}, 0, 0.0),
        ({"a": (3, 3)}, 3, 0.0),
        ({"rm -rf /": (1, 3)}, 3, 1 / 3),
    ):
        with pytest.warns(RuntimeWarning, match="left out"):
            assert task_counts(bad, n, acc) == []
    assert task_counts(None, 3, 0.0) == []
    assert task_counts({"a": (np.int64(2), np.int64(3))}, 3, 2 / 3) == [("a", 2, 3)]


def test_on_round_sees_each_round_and_can_stop_the_run():
    seen = []
    s = tensorguard.simulation.run(adder_app(), num_clients=2, rounds=3, initial_model={"w": np.zeros(2)}, on_round=seen.append)
    assert [r["round"] for r in seen] == [1, 2, 3]
    assert seen == s["history"]

    class EnoughError(Exception):
        pass

    def stop_after_two(r):
        if r["round"] == 2:
            raise EnoughError("enough")

    with pytest.raises(EnoughError):
        tensorguard.simulation.run(adder_app(), num_clients=2, rounds=50, initial_model={"w": np.zeros(2)}, on_round=stop_after_two)


def test_an_agent_refuses_bad_settings_with_the_cli_s_codes(tmp_path) -> None:
    import numpy as np

    app = tensorguard.ClientApp()

    @app.train()
    def train(model, config, context):
        return model, 1

    model = {"w": np.zeros(2)}
    with pytest.raises(tensorguard.ConfigError) as e:
        tensorguard.Agent(app, "/ip4/1.2.3.4/tcp/notaport", model=model, data_dir=str(tmp_path), passphrase="p")
    assert e.value.code == "E020" and "multiaddr" in str(e.value)
    with pytest.raises(tensorguard.ConfigError) as e:
        tensorguard.Agent(app, None, model=model, data_dir=str(tmp_path), passphrase="p")
    assert e.value.code == "E002"
    with pytest.raises(tensorguard.ConfigError) as e:
        tensorguard.Agent(app, "/ip4/127.0.0.1/tcp/7700", model=model, data_dir=str(tmp_path), passphrase="p",
                          policy={"max_round_epsilon": "lots"})
    assert e.value.code == "E020"
    with pytest.raises(tensorguard.ConfigError):
        tensorguard.Agent(app, "/ip4/127.0.0.1/tcp/7700", data_dir=str(tmp_path), passphrase="p")
    # A key that would smuggle a second setting into the policy's TOML.
    with pytest.raises(tensorguard.ConfigError) as e:
        tensorguard.Agent(app, "/ip4/127.0.0.1/tcp/7700", model=model, data_dir=str(tmp_path), passphrase="p",
                          policy={"allow_evaluation = true\nallow_plaintext": True})
    assert "bare words" in str(e.value)
    with pytest.raises(tensorguard.ConfigError):
        tensorguard.Agent(app, "/ip4/127.0.0.1/tcp/7700", model=model, data_dir=str(tmp_path), passphrase="p",
                          seed=-1, allow_plaintext=True)
    # An owner policy that would refuse every round is refused up front.
    with pytest.raises(tensorguard.ConfigError) as e:
        tensorguard.Agent(app, "/ip4/127.0.0.1/tcp/7700", model=model, data_dir=str(tmp_path), passphrase="p")
    assert "refuse every round" in str(e.value)
    # The key is sealed with the first passphrase; another one is refused.
    a = tensorguard.Agent(app, "/ip4/127.0.0.1/tcp/7700", model=model, data_dir=str(tmp_path), passphrase="p",
                          allow_plaintext=True)
    assert a.peer_id.startswith("12D3KooW")
    assert a.status()["state"] == ""
    with pytest.raises(tensorguard.TrustError) as e:
        tensorguard.Agent(app, "/ip4/127.0.0.1/tcp/7700", model=model, data_dir=str(tmp_path), passphrase="q",
                          allow_plaintext=True)
    assert e.value.code == "E044"


def test_half_precision_state_dicts_saved_by_safetensors_load_in_their_dtype(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    import safetensors.torch

    net = torch.nn.Linear(3, 2)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        sd = {k: v.detach().to(dtype) for k, v in net.state_dict().items()}
        path = str(tmp_path / f"m-{dtype}.safetensors")
        safetensors.torch.save_file(sd, path)
        back = tensorguard.load_model(path)
        assert list(back) == sorted(sd)
        for k in sd:
            assert back[k].dtype == dtype and torch.equal(back[k], sd[k]), (k, dtype)
        net2 = torch.nn.Linear(3, 2).to(dtype)
        net2.load_state_dict(back)
        # And back out through save_model, in the same dtype.
        again = str(tmp_path / f"again-{dtype}.safetensors")
        tensorguard.save_model(sd, again)
        reread = safetensors.torch.load_file(again)
        for k in sd:
            assert reread[k].dtype == dtype and torch.equal(reread[k], sd[k]), (k, dtype)
    # Integer tensors are not a model TensorGuard trains.
    bad = str(tmp_path / "int.safetensors")
    safetensors.torch.save_file({"i": torch.zeros(2, dtype=torch.int64)}, bad)
    with pytest.raises(tensorguard.ConfigError) as e:
        tensorguard.load_model(bad)
    assert "I64" in str(e.value)


def test_a_custom_strategy_aggregates_plaintext_rounds_and_is_refused_where_it_would_leak() -> None:
    import numpy as np

    app = tensorguard.ClientApp()

    @app.train()
    def train(model, config, context):
        # Client 2 is a poisoner: its model is far off.
        shift = 1000.0 if context.partition_id == 2 else float(context.partition_id)
        return {k: v + shift for k, v in model.items()}, 10

    init = {"w": np.zeros(3)}
    s = tensorguard.simulation.run(app, num_clients=5, rounds=1, initial_model=init, strategy=tensorguard.FedMedian())
    assert s["rounds_committed"] == 1
    # The median of 0, 1, 1000, 3, 4 is 3: the poisoner moved nothing.
    assert s.model["w"].tolist() == [3.0, 3.0, 3.0]
    avg = tensorguard.simulation.run(app, num_clients=5, rounds=1, initial_model=init)
    assert avg.model["w"][0] > 100

    seen = []

    class Recording(tensorguard.Strategy):
        def aggregate_fit(self, server_round, results, global_model):
            seen.append((server_round, sorted(n for _, n in results)))
            return [np.full(3, 7.0)]  # a list, in the global model's order

    s = tensorguard.simulation.run(app, num_clients=2, rounds=2, initial_model=init, strategy=Recording())
    assert seen == [(1, [10, 10]), (2, [10, 10])] and s.model["w"].tolist() == [7.0] * 3

    class Bad(tensorguard.Strategy):
        def aggregate_fit(self, server_round, results, global_model):
            return {"w": np.zeros(4)}  # another shape

    # Its round fails, with the reason; the job goes on.
    s = tensorguard.simulation.run(app, num_clients=2, rounds=2, initial_model=init, strategy=Bad())
    assert s["rounds_committed"] == 0 and len(s["history"]) == 2, s
    assert "other tensors" in s["history"][0]["reason"], s["history"][0]

    for kwargs, word in [({"secure_aggregation": True}, "sum"), ({"dp": {"mode": "central", "target_epsilon": 8.0, "clip": 1.0}}, "noise")]:
        with pytest.raises(ConfigError) as e:
            tensorguard.simulation.run(app, num_clients=4, rounds=1, initial_model=init, strategy=tensorguard.FedMedian(), **kwargs)
        assert e.value.code == "E020" and word in str(e.value), e.value
    with pytest.raises(ConfigError):
        tensorguard.simulation.run(app, num_clients=2, rounds=1, initial_model=init, strategy=object())

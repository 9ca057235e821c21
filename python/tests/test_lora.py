"""LoRA experts: frozen public A, only B and the router travel, averaging B
is averaging ΔW, and adapters for another base or task set are refused."""

import numpy as np
import pytest

import tensorguard

torch = pytest.importorskip("torch")
from tensorguard.lora import EXPERT_CLIENTS, EXPERT_TASK_MASS, SHARED_WEIGHT, TASK_WEIGHT, LoRALinear, MoEPolicy, adapter_state_dict, base_hash, expert_state_dict, expert_update, load_adapters  # noqa: E402


def base():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def test_a_fresh_adapter_changes_nothing_and_only_b_and_the_router_train() -> None:
    b = base()
    x = torch.randn(5, 4)
    expected = b(x)
    p = MoEPolicy(b, tasks=["reach", "push"], experts=3, rank=2)
    assert torch.allclose(p(x, p.task_ids(["push"] * 5)), expected)
    trainable = sorted(n for n, q in p.named_parameters() if q.requires_grad)
    assert trainable == ["layers.0.lora_B", "layers.2.lora_B", "router.logits"]
    assert sorted(adapter_state_dict(p)) == trainable
    # The base's weights are frozen and unchanged by building adapters.
    assert all(not q.requires_grad for q in b.parameters())


def test_a_is_public_the_same_on_every_robot_and_averaging_b_averages_delta_w() -> None:
    one, two = LoRALinear(torch.nn.Linear(4, 3), rank=2, experts=2, seed=5), LoRALinear(torch.nn.Linear(4, 3), rank=2, experts=2, seed=5)
    assert torch.equal(one.lora_A, two.lora_A)
    assert not torch.equal(one.lora_A, LoRALinear(torch.nn.Linear(4, 3), rank=2, experts=2, seed=6).lora_A)
    b1, b2 = torch.randn(2, 3, 2), torch.randn(2, 3, 2)
    dw = lambda b: torch.einsum("eor,eri->eoi", b, one.lora_A)  # noqa: E731
    assert torch.allclose((dw(b1) + dw(b2)) / 2, dw((b1 + b2) / 2), atol=1e-6)


def test_adapters_for_another_base_or_task_set_and_unknown_tasks_are_refused() -> None:
    p = MoEPolicy(base(), tasks=["reach", "push"], experts=2)
    other = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    assert base_hash(other) != p.base_sha256
    with pytest.raises(tensorguard.DataError) as e:
        load_adapters(p, adapter_state_dict(p), base_hash(other))
    assert e.value.code == "E012"
    three = MoEPolicy(base(), tasks=["reach", "push", "pick"], experts=2)
    with pytest.raises(tensorguard.DataError) as e:
        load_adapters(p, adapter_state_dict(three), p.base_sha256)
    assert e.value.code == "E012"
    with pytest.raises(tensorguard.DataError) as e:
        p.task_ids(["fly"])
    assert e.value.code == "E011"
    with pytest.raises(tensorguard.ConfigError):
        MoEPolicy(base(), tasks=["a", "a"])


def _two_task_federation(strategy: str, rounds: int = 8):
    """Four robots, two tasks in one scene told apart only by the task: the
    same observation must map to opposite actions."""
    rng = np.random.default_rng(0)
    obs = torch.tensor(rng.normal(size=(64, 4)), dtype=torch.float32)
    target = {"left": torch.tensor([-0.5, 0.0]), "right": torch.tensor([0.5, 0.0])}
    frozen = base()
    make = lambda: MoEPolicy(frozen, tasks=list(target), experts=2, rank=4, alpha=16.0)  # noqa: E731
    policy = make()
    app = tensorguard.ClientApp()
    sent, rounds_seen = [], []

    @app.train(format="torch")
    def train(model, config, context):
        task = list(target)[context.partition_id % 2]
        local = make()
        load_adapters(local, model, policy.base_sha256)
        opt = torch.optim.Adam([q for q in local.parameters() if q.requires_grad], lr=0.02)
        ids = local.task_ids([task] * len(obs))
        for _ in range(20):
            opt.zero_grad()
            loss = ((local(obs, ids) - target[task]) ** 2).mean()
            loss.backward()
            opt.step()
        if strategy == "expert-wise":
            u = expert_update(local, model, len(obs), local.gate_mass(ids), tau=0.2, task_ids=ids)
            sent.append(u)
            return u, len(obs)
        return adapter_state_dict(local), len(obs)

    def error(p):
        with torch.no_grad():
            return sum(float(((p(obs, p.task_ids([t] * len(obs))) - y) ** 2).mean()) for t, y in target.items())

    before = error(policy)
    initial = expert_state_dict(policy) if strategy == "expert-wise" else adapter_state_dict(policy)
    s = tensorguard.simulation.run(app, num_clients=4, rounds=rounds, initial_model=initial, strategy=strategy, on_round=rounds_seen.append)
    assert s["rounds_committed"] == rounds
    load_adapters(policy, s.state_dict(), policy.base_sha256)
    if strategy == "expert-wise":
        _check_expert_reports(sent, rounds_seen)
    return policy, frozen, before, error(policy)


def _check_expert_reports(sent, rounds_seen) -> None:
    """Each round records, per expert, which tasks and what share of the
    robots trained it: exactly what the robots' reports sum to."""
    assert len(sent) == 4 * len(rounds_seen)
    for i, r in enumerate(rounds_seen):
        mine = sent[4 * i : 4 * i + 4]
        mass = sum(u[EXPERT_TASK_MASS] for u in mine)
        used = sum(u[EXPERT_CLIENTS] for u in mine) / 4
        for e, x in enumerate(r["experts"]):
            total = float(mass[e].sum())
            want = (mass[e] / total).tolist() if total > 0 else [0.0, 0.0]
            assert x["task_share"] == pytest.approx(want, abs=1e-5), (r["round"], e, x)
            assert x["client_share"] == pytest.approx(float(used[e]), abs=1e-6), (r["round"], e, x)
            # An expert's weight splits exactly by task.
            assert total == pytest.approx(x["weight"] * 4, rel=1e-5), (r["round"], e, x, total)


def test_experts_fine_tune_a_frozen_policy_in_a_federation_sending_only_adapters() -> None:
    policy, frozen, before, after = _two_task_federation("expert-wise")
    _, _, _, fedavg = _two_task_federation("fedavg")
    # Each expert is averaged over the robots that used it: the conflicting
    # tasks stop cancelling each other, as they do under plain FedAvg.
    assert after < before / 10, (before, after)
    assert after < fedavg / 3, (after, fedavg)
    # What traveled is the adapters and their weights, never the base.
    sent = expert_state_dict(policy)
    assert all(k.endswith("lora_B") or k.startswith(("router.", "tg.")) for k in sent), sorted(sent)
    assert not any(".base." in k for k in sent)


def test_expert_wise_needs_expert_weights_and_checks_the_gate_mass() -> None:
    p = MoEPolicy(base(), tasks=["a", "b"], experts=2)
    app = tensorguard.ClientApp()

    @app.train(format="torch")
    def train(model, config, context):
        return model, 1

    with pytest.raises(tensorguard.TensorGuardError) as e:
        tensorguard.simulation.run(app, num_clients=3, rounds=1, initial_model=adapter_state_dict(p), strategy="expert-wise")
    assert "tg.expert_weight" in str(e.value)
    wrong = expert_state_dict(p)
    wrong[TASK_WEIGHT] = torch.zeros(1, 2)
    with pytest.raises(tensorguard.TensorGuardError) as e:
        tensorguard.simulation.run(app, num_clients=3, rounds=1, initial_model=wrong, strategy="expert-wise")
    assert "tg.task_weight" in str(e.value)
    # The report tensors would share a DP clip with the update: refused.
    dp = {"mode": "distributed", "target_epsilon": 8.0, "delta": 1e-5, "clip": 1.0}
    with pytest.raises(tensorguard.TensorGuardError) as e:
        tensorguard.simulation.run(app, num_clients=3, rounds=1, initial_model=expert_state_dict(p), strategy="expert-wise", secure_aggregation=True, dp=dp)
    assert "report=False" in str(e.value)
    assert EXPERT_CLIENTS not in expert_state_dict(p, per_task=False) and EXPERT_TASK_MASS in expert_state_dict(p)
    g = expert_state_dict(p)
    ids = p.task_ids(["a"] * 10)
    for bad in (torch.tensor([0.5]), torch.tensor([float("nan"), 0.5]), torch.tensor([-0.1, 1.1]), torch.tensor([0.9, 0.9])):
        with pytest.raises(tensorguard.ConfigError):
            expert_update(p, g, 10, bad, task_ids=ids)
    for n in (-1, float("nan"), True):
        with pytest.raises(tensorguard.ConfigError):
            expert_update(p, g, n, torch.tensor([0.5, 0.5]), task_ids=ids)
    # A per-task model needs the task ids, in this policy's range.
    for bad_ids in (None, torch.tensor([0, 2]), torch.tensor([-1]), ["a", "b"], torch.tensor([0.5]), torch.tensor([], dtype=torch.long)):
        with pytest.raises(tensorguard.ConfigError) as e:
            expert_update(p, g, 10, torch.tensor([0.5, 0.5]), task_ids=bad_ids)
        assert e.value.code == "E020"
    with pytest.raises(tensorguard.ConfigError) as e:
        expert_update(p, adapter_state_dict(p), 10, torch.tensor([0.5, 0.5]))
    assert "expert_state_dict" in str(e.value)
    # Each task's rows are weighted by that task's examples only.
    u = expert_update(p, g, 4, torch.tensor([0.5, 0.5]), task_ids=p.task_ids(["a", "a", "a", "b"]))
    assert u[TASK_WEIGHT].tolist() == [3.0, 1.0] and float(u[SHARED_WEIGHT][0]) == 4.0
    nan = {k: v.clone() for k, v in adapter_state_dict(p).items()}
    nan["layers.0.lora_B"][0, 0, 0] = float("nan")
    with pytest.raises(tensorguard.DataError) as e:
        load_adapters(p, nan, p.base_sha256)
    assert e.value.code == "E011"
    # The architecture is part of the base's identity.
    relu = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    relu.load_state_dict(base().state_dict())
    assert base_hash(relu) != base_hash(base())

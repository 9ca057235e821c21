"""Hot-swapped adapters: a policy acting in a loop never sees a half-loaded
adapter, a bad adapter set never goes live, and versions are content
addresses."""

import threading

import pytest

import tensorguard

torch = pytest.importorskip("torch", reason="torch is not installed: pip install torch")
from tensorguard.adapters import HotSwapPolicy, adapter_version  # noqa: E402
from tensorguard.lora import MoEPolicy, adapter_state_dict, base_hash  # noqa: E402


def policy() -> MoEPolicy:
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))
    return MoEPolicy(base, tasks=["reach", "push"], experts=3, rank=2)


def version_with(p: MoEPolicy, value: float):
    return {k: torch.full_like(v, value) if k.endswith("lora_B") else v for k, v in adapter_state_dict(p).items()}


def test_a_policy_acting_in_a_loop_never_sees_a_half_loaded_adapter() -> None:
    p = policy()
    live = HotSwapPolicy(p)
    one, two = version_with(p, 0.5), version_with(p, -0.5)
    obs, ids = torch.randn(8, 6), p.task_ids(["reach", "push"] * 4)
    expected = []
    for v in (one, two):
        live.swap(v)
        expected.append(live.act(obs, ids))
    assert not torch.allclose(expected[0], expected[1])
    seen, stop = [], threading.Event()

    def robot() -> None:
        while not stop.is_set():
            seen.append(live.act(obs, ids))

    threads = [threading.Thread(target=robot) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(300):
        live.swap(one if i % 2 else two)
    stop.set()
    for t in threads:
        t.join()
    assert len(seen) > 10
    # Every action came wholly from one version or the other.
    for out in seen:
        assert torch.equal(out, expected[0]) or torch.equal(out, expected[1])


def test_a_bad_adapter_set_never_goes_live_and_versions_are_content_addresses() -> None:
    p = policy()
    live = HotSwapPolicy(p)
    first = live.version
    good = version_with(p, 0.25)
    assert live.swap(good) == adapter_version(good, p.base_sha256) != first
    other_base = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    for bad, base, code in (
        (good, base_hash(other_base), "E012"),
        ({k: v for k, v in good.items() if k != "router.logits"}, None, "E012"),
        (version_with(p, float("nan")), None, "E011"),
    ):
        with pytest.raises(tensorguard.DataError) as e:
            live.swap(bad, base)
        assert e.value.code == code
        assert live.version == adapter_version(good, p.base_sha256)
    assert live.rollback() == first
    with pytest.raises(tensorguard.ConfigError):
        live.rollback()

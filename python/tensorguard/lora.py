"""LoRA adapters as a mixture of experts, for federated fine-tuning of a
frozen policy.

The base policy is frozen; each ``nn.Linear`` in it gets ``experts``
low-rank adapters ``ΔW_e = (α / r) · B_e A_e``, mixed per example by a
router conditioned on the task. Following FFA-LoRA, every ``A_e`` is drawn
once from a public seed and frozen, so only the ``B_e`` (and the router)
train and travel — and since the update is linear in ``B``, averaging
clients' ``B`` is averaging their ``ΔW`` exactly. A robot and the
coordinator that build adapters with the same seed on the same base get
the same ``A``; an adapter set carries the base's hash, so one made for
another base is refused.

No PEFT dependency: this is about a hundred lines of torch.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, Iterable, Optional

from .errors import DataError, invalid

__all__ = [
    "LoRALinear",
    "TaskRouter",
    "MoEPolicy",
    "base_hash",
    "adapter_state_dict",
    "expert_state_dict",
    "expert_update",
    "load_adapters",
    "EXPERT_WEIGHT",
    "SHARED_WEIGHT",
    "TASK_WEIGHT",
    "EXPERT_TASK_MASS",
    "EXPERT_CLIENTS",
]

#: The tensor in which a client sends each expert's weight (the engine's
#: ``tg_strategy::EXPERT_WEIGHT``).
EXPERT_WEIGHT = "tg.expert_weight"
#: The tensor in which a client sends the shared tensors' weight.
SHARED_WEIGHT = "tg.shared_weight"
#: The tensor in which a client sends each task's weight, for the
#: task-indexed tensors (the router's rows, the task embedding): each row is
#: averaged over the robots that have its task (the engine's
#: ``tg_strategy::TASK_WEIGHT``).
TASK_WEIGHT = "tg.task_weight"
#: A report tensor ``[experts, tasks]``, never applied: how much of each
#: expert's weight came from each task's examples, so the dashboard's
#: Experts page shows which tasks trained each expert (from the round's sum
#: alone; the engine's ``tg_strategy::EXPERT_TASK_MASS``).
EXPERT_TASK_MASS = "tg.expert_task_mass"
#: A report tensor ``[experts]``, never applied: 1 for each expert whose
#: gate mass passed the client's threshold, so the round records the share
#: of its robots that trained each expert (``tg_strategy::EXPERT_CLIENTS``).
EXPERT_CLIENTS = "tg.expert_clients"
_NOT_ADAPTERS = (EXPERT_WEIGHT, SHARED_WEIGHT, TASK_WEIGHT, EXPERT_TASK_MASS, EXPERT_CLIENTS)


def _torch() -> Any:
    import torch

    return torch


def base_hash(module: Any) -> str:
    """SHA-256 of a module's frozen (non-adapter) weights, names and shapes:
    what an adapter set was made for.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> len(base_hash(torch.nn.Linear(2, 2)))
        64
    """
    h = hashlib.sha256(b"tensorguard-lora-base\0")
    # The architecture too (activations have no weights), then every tensor.
    h.update(repr(module).encode() + b"\0")
    for name, t in sorted(module.state_dict().items()):
        if ".lora_" in name or name.startswith(("router.", "task_embed.", "task_proj")):
            continue
        h.update(name.encode() + b"\0" + str(tuple(t.shape)).encode() + b"\0" + str(t.dtype).encode() + b"\0")
        h.update(t.detach().to("cpu").float().contiguous().numpy().tobytes())
    return h.hexdigest()


class LoRALinear(_torch().nn.Module):  # type: ignore[misc]
    """A frozen ``nn.Linear`` plus ``experts`` LoRA adapters of rank ``rank``.

    ``forward(x, gates)`` adds ``Σ_e gates[:, e] · (α/r) · B_e A_e x``;
    without ``gates`` the experts are mixed equally. ``A`` is a buffer
    drawn from ``seed`` (public, the same on every robot); ``B`` starts at
    zero, so a fresh adapter leaves the base unchanged.

    Example:
        >>> import torch
        >>> layer = LoRALinear(torch.nn.Linear(4, 3), rank=2, experts=2, seed=7)
        >>> x = torch.ones(5, 4)
        >>> torch.equal(layer(x), layer.base(x))
        True
        >>> sorted(n for n, p in layer.named_parameters() if p.requires_grad)
        ['lora_B']
    """

    def __init__(self, base: Any, rank: int = 4, experts: int = 1, alpha: float = 8.0, seed: int = 0) -> None:
        torch = _torch()
        super().__init__()
        if not isinstance(base, torch.nn.Linear):
            raise invalid(f"a {type(base).__name__}", "LoRA adapts nn.Linear layers", "wrap an nn.Linear")
        for name, v in (("rank", rank), ("experts", experts)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise invalid(f"{name} = {v!r}", "it must be a positive integer", f"pass {name} >= 1")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank, self.experts, self.scale = rank, experts, alpha / rank
        g = torch.Generator().manual_seed(int(seed) % (2**63))
        a = torch.randn(experts, rank, base.in_features, generator=g) / base.in_features**0.5
        self.register_buffer("lora_A", a)
        self.lora_B = torch.nn.Parameter(torch.zeros(experts, base.out_features, rank))

    def forward(self, x: Any, gates: Optional[Any] = None) -> Any:
        torch = _torch()
        low = torch.einsum("bi,eri->ber", x, self.lora_A)  # (batch, experts, rank)
        delta = torch.einsum("ber,eor->beo", low, self.lora_B)  # (batch, experts, out)
        if gates is None:
            gates = x.new_full((x.shape[0], self.experts), 1.0 / self.experts)
        return self.base(x) + self.scale * torch.einsum("be,beo->bo", gates, delta)


class TaskRouter(_torch().nn.Module):  # type: ignore[misc]
    """Gate weights over ``experts`` from a task index: a softmax of a
    learned per-task logit table (temperature ``temperature``).

    The table starts from public random logits (``seed``, scale
    ``init_scale``), the same on every robot: with all-equal logits every
    task would start on the same mixture, the experts' gradients would be
    the same for every task, and averaging across tasks would cancel them
    before the router ever learned to tell tasks apart.

    Example:
        >>> import torch
        >>> r = TaskRouter(num_tasks=3, experts=2)
        >>> [round(s, 6) for s in r(torch.tensor([0, 2])).sum(dim=1).tolist()]
        [1.0, 1.0]
        >>> torch.equal(r.logits, TaskRouter(num_tasks=3, experts=2).logits)
        True
    """

    def __init__(self, num_tasks: int, experts: int, temperature: float = 1.0, seed: int = 0, init_scale: float = 1.0) -> None:
        torch = _torch()
        super().__init__()
        g = torch.Generator().manual_seed(int(seed) % (2**63) + 1)
        self.logits = torch.nn.Parameter(init_scale * torch.randn(num_tasks, experts, generator=g))
        self.temperature = temperature

    def forward(self, task: Any) -> Any:
        torch = _torch()
        return torch.softmax(self.logits[task] / self.temperature, dim=-1)


class MoEPolicy(_torch().nn.Module):  # type: ignore[misc]
    """A frozen MLP policy (an ``nn.Sequential`` of ``nn.Linear`` and
    activations) whose linear layers carry expert LoRA adapters, mixed by a
    task router. ``forward(observations, task_ids)``.

    Args:
        base: the pre-trained policy; it is frozen (and kept by reference).
        tasks: the task names, in a fixed order (the router's rows).
        experts, rank, alpha: the adapters.
        seed: the public seed of every ``A`` (the same on every robot).
        task_dim: if positive, the task is also an input: a learned
            ``task_dim``-wide embedding, through a public frozen projection,
            is added to the first layer's output (what a one-expert,
            FedAvg baseline needs to tell tasks apart).
        router_scale: the spread of the router's public initial logits
            (``TaskRouter``'s ``init_scale``): larger starts each task on
            fewer experts, so experts specialise from the first round.

    Example:
        >>> import torch
        >>> base = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        >>> policy = MoEPolicy(base, tasks=["reach", "push"], experts=2)
        >>> policy(torch.ones(3, 4), policy.task_ids(["push"] * 3)).shape
        torch.Size([3, 2])
        >>> sorted(adapter_state_dict(policy))[:2]
        ['layers.0.lora_B', 'layers.2.lora_B']
    """

    def __init__(
        self,
        base: Any,
        tasks: Iterable[str],
        experts: int = 4,
        rank: int = 4,
        alpha: float = 8.0,
        seed: int = 0,
        task_dim: int = 0,
        router_scale: float = 1.0,
    ) -> None:
        torch = _torch()
        super().__init__()
        if not isinstance(base, torch.nn.Sequential):
            raise invalid(f"a {type(base).__name__} base", "MoEPolicy adapts an nn.Sequential MLP", "build the policy as nn.Sequential(Linear, activation, …)")
        self.tasks = list(tasks)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise invalid(f"tasks = {self.tasks!r}", "the router needs distinct task names", "pass each task once")
        self.base_sha256 = base_hash(base)
        layers = []
        for i, m in enumerate(base):
            layers.append(LoRALinear(m, rank, experts, alpha, seed=seed * 1000 + i) if isinstance(m, torch.nn.Linear) else m)
        for p in base.parameters():
            p.requires_grad_(False)
        self.layers = torch.nn.ModuleList(layers)
        if not (isinstance(router_scale, (int, float)) and 0.0 <= float(router_scale) < float("inf")):
            raise invalid(f"router_scale = {router_scale!r}", "it is the spread of the router's initial logits", "pass a finite router_scale >= 0")
        self.router = TaskRouter(len(self.tasks), experts, seed=seed, init_scale=float(router_scale))
        self.task_embed: Optional[Any] = None
        if task_dim:
            first = next(m for m in base if isinstance(m, torch.nn.Linear))
            g = torch.Generator().manual_seed(int(seed) % (2**63) + 2)
            self.task_embed = torch.nn.Embedding(len(self.tasks), task_dim)
            torch.nn.init.zeros_(self.task_embed.weight)
            self.register_buffer("task_proj", torch.randn(task_dim, first.out_features, generator=g) / task_dim**0.5)

    def task_ids(self, names: Iterable[str]) -> Any:
        """Task names as router indices.

        Raises:
            DataError: a task this policy was not built with (E011).

        Example:
            >>> import torch
            >>> p = MoEPolicy(torch.nn.Sequential(torch.nn.Linear(2, 2)), tasks=["a", "b"])
            >>> p.task_ids(["b", "a"]).tolist()
            [1, 0]
        """
        torch = _torch()
        index = {t: i for i, t in enumerate(self.tasks)}
        try:
            return torch.tensor([index[n] for n in names], dtype=torch.long)
        except KeyError as e:
            raise DataError(
                f"error[E011]: unknown task {e.args[0]!r} — this policy's router knows {self.tasks} — use one of them, or build the policy with the task",
                "E011",
                f"unknown task {e.args[0]!r}",
                f"this policy's router knows {self.tasks}",
                "use one of them, or build the policy with the task",
            ) from None

    def gates(self, task_ids: Any) -> Any:
        """The router's expert weights for each example.

        Example:
            >>> import torch
            >>> p = MoEPolicy(torch.nn.Sequential(torch.nn.Linear(2, 2)), tasks=["a"], experts=4)
            >>> p.gates(torch.tensor([0])).shape
            torch.Size([1, 4])
        """
        return self.router(task_ids)

    def gate_mass(self, task_ids: Any) -> Any:
        """The mean gate weight on each expert over ``task_ids`` (shape
        ``[experts]``, summing to 1): how much a robot's data used each
        expert, which expert-wise aggregation weights by.

        Example:
            >>> import torch
            >>> p = MoEPolicy(torch.nn.Sequential(torch.nn.Linear(2, 2)), tasks=["a", "b"], experts=3)
            >>> round(float(p.gate_mass(p.task_ids(["a", "b", "b"])).sum()), 5)
            1.0
        """
        torch = _torch()
        with torch.no_grad():
            return self.router(task_ids).mean(dim=0)

    def forward(self, observations: Any, task_ids: Any) -> Any:
        gates = self.router(task_ids)
        x = observations
        first = True
        for m in self.layers:
            x = m(x, gates) if isinstance(m, LoRALinear) else m(x)
            if first and isinstance(m, LoRALinear):
                first = False
                if self.task_embed is not None:
                    x = x + self.task_embed(task_ids) @ self.task_proj
        return x


def adapter_state_dict(module: Any) -> Dict[str, Any]:
    """Only what trains and travels: the adapters' ``B`` and the router,
    as copies (later training does not change them).

    Example:
        >>> import torch
        >>> sorted(adapter_state_dict(LoRALinear(torch.nn.Linear(2, 2))))
        ['lora_B']
    """
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k.endswith("lora_B") or k.startswith(("router.", "task_embed."))}


def load_adapters(module: Any, adapters: Dict[str, Any], base_sha256: Optional[str] = None) -> None:
    """Loads an adapter set into ``module``; refuses one made for another base.

    Raises:
        DataError: ``base_sha256`` is not this module's base (E012), or the
            adapter set has other tensors than this module's (E012).

    Example:
        >>> import torch
        >>> p = MoEPolicy(torch.nn.Sequential(torch.nn.Linear(2, 2)), tasks=["a"])
        >>> load_adapters(p, adapter_state_dict(p), p.base_sha256)
        >>> try:
        ...     load_adapters(p, adapter_state_dict(p), "0" * 64)
        ... except DataError as e:
        ...     print(e.code)
        E012
    """
    own = getattr(module, "base_sha256", None)
    if base_sha256 is not None and own is not None and base_sha256 != own:
        raise DataError(
            f"error[E012]: an adapter set for base {base_sha256[:12]}… — this policy's base is {own[:12]}… — load adapters trained on this base model",
            "E012",
            f"an adapter set for base {base_sha256[:12]}…",
            f"this policy's base is {own[:12]}…",
            "load adapters trained on this base model",
        )
    adapters = {k: v for k, v in adapters.items() if k not in _NOT_ADAPTERS}
    expected = adapter_state_dict(module)
    if set(adapters) != set(expected) or any(tuple(adapters[k].shape) != tuple(expected[k].shape) for k in expected):
        raise DataError(
            "error[E012]: the adapter set has other tensors than this policy's — it was made with other experts, rank or tasks — build the policy as the adapters were built",
            "E012",
            "the adapter set has other tensors than this policy's",
            "it was made with other experts, rank or tasks",
            "build the policy as the adapters were built",
        )
    torch = _torch()
    tensors = {k: torch.as_tensor(v) for k, v in adapters.items()}
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise DataError(
            "error[E011]: an adapter set with NaN or infinite values — a policy cannot act on them — load a committed adapter set",
            "E011",
            "an adapter set with NaN or infinite values",
            "a policy cannot act on them",
            "load a committed adapter set",
        )
    module.load_state_dict(tensors, strict=False)


def __getattr__(name: str) -> Any:
    """The expert-wise helpers (``expert_state_dict``, ``expert_update``)
    live in ``tensorguard.experts`` and are part of this module's API,
    loaded on first use (each module imports the other).

    Example:
        >>> from tensorguard.lora import expert_update
        >>> expert_update.__module__
        'tensorguard.experts'
    """
    if name in ("expert_state_dict", "expert_update"):
        from . import experts

        return getattr(experts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

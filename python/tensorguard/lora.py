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


def expert_state_dict(module: Any, per_task: bool = True) -> Dict[str, Any]:
    """The adapters plus the (zero) weight tensors expert-wise aggregation
    needs: the initial model of a ``strategy="expert-wise"`` federation.

    With ``per_task`` (the default) and a policy that knows its tasks (a
    ``MoEPolicy``), it also carries ``TASK_WEIGHT``: the router's and the
    task embedding's rows are then each averaged over the robots that have
    that task, rather than shrunk by the share of robots that do not.

    Example:
        >>> import torch
        >>> p = MoEPolicy(torch.nn.Sequential(torch.nn.Linear(2, 2)), tasks=["a", "b"], experts=3)
        >>> sd = expert_state_dict(p)
        >>> sd[EXPERT_WEIGHT].tolist(), sd[SHARED_WEIGHT].tolist(), sd[TASK_WEIGHT].tolist()
        ([0.0, 0.0, 0.0], [0.0], [0.0, 0.0])
    """
    torch = _torch()
    experts = _experts(module)
    out = dict(adapter_state_dict(module))
    out[EXPERT_WEIGHT] = torch.zeros(experts)
    out[SHARED_WEIGHT] = torch.zeros(1)
    tasks = getattr(module, "tasks", None)
    if per_task and tasks:
        out[TASK_WEIGHT] = torch.zeros(len(tasks))
    return out


def _per_task(name: str, shape: Any, tasks: int) -> bool:
    """The engine's rule (``tg_strategy::is_per_task``)."""
    return tasks > 0 and (name.startswith(("router.", "task_embed.")) or "tasks" in name.split(".")) and len(shape) > 0 and int(shape[0]) == tasks


def _experts(module: Any) -> int:
    for m in module.modules():
        if isinstance(m, LoRALinear):
            return int(m.experts)
    raise invalid("a module without LoRA layers", "expert-wise aggregation averages expert adapters", "build it as a MoEPolicy or with LoRALinear layers")


def expert_update(
    module: Any,
    global_model: Dict[str, Any],
    num_examples: int,
    gate_mass: Any,
    tau: float = 0.05,
    scale: float = 1.0,
    task_ids: Optional[Any] = None,
) -> Dict[str, Any]:
    """What a client returns from ``train`` in an expert-wise federation:
    its adapters after local training, with each expert's change weighted
    by ``w_e = num_examples / scale × gate_mass[e]`` (zero where
    ``gate_mass[e] <= tau``), shared tensors' by ``w = num_examples /
    scale``, and the weights themselves — Σ-able pairs, so the engine can
    average each expert over the robots that used it from the sum alone,
    under secure aggregation and distributed DP too.

    Under DP, pass a public ``scale`` (e.g. the most examples a robot may
    use) so that every weight is at most 1 and the clip bounds it.

    If the round's model carries ``TASK_WEIGHT`` (``expert_state_dict``'s
    default), pass the ``task_ids`` of the examples you trained on: row
    ``t`` of the router and the task embedding is weighted by
    ``examples of task t / scale``, so each row is averaged over the robots
    that have its task.

    Raises:
        ConfigError: ``gate_mass`` is not one finite non-negative value per
            expert, ``tau``/``scale`` is out of range, or the model is
            per-task and ``task_ids`` is missing or out of range (E020).

    Example:
        >>> import torch
        >>> p = MoEPolicy(torch.nn.Sequential(torch.nn.Linear(2, 2)), tasks=["a"], experts=2)
        >>> g = expert_state_dict(p)
        >>> with torch.no_grad():
        ...     p.layers[0].lora_B += 1.0
        >>> u = expert_update(p, g, num_examples=4, gate_mass=torch.tensor([0.75, 0.25]), tau=0.3,
        ...                   task_ids=p.task_ids(["a"] * 4))
        >>> u[EXPERT_WEIGHT].tolist(), float(u["layers.0.lora_B"][0].mean()), float(u["layers.0.lora_B"][1].mean())
        ([3.0, 0.0], 3.0, 0.0)
        >>> u[TASK_WEIGHT].tolist()
        [4.0]
    """
    import math

    torch = _torch()
    experts = _experts(module)
    mass = torch.as_tensor(gate_mass, dtype=torch.float32).detach().reshape(-1)
    if mass.numel() != experts or not bool(torch.isfinite(mass).all()) or bool((mass < 0).any()) or float(mass.sum()) > 1.0 + 1e-4:
        raise invalid(f"gate_mass of {mass.numel()} values summing to {float(mass.sum()):.4g}", f"it must be {experts} finite non-negative values, one per expert, summing to at most 1", "pass policy.gate_mass(task_ids) of the examples you trained on")
    if isinstance(num_examples, bool) or not isinstance(num_examples, (int, float)) or not (num_examples >= 0 and math.isfinite(num_examples)):
        raise invalid(f"num_examples = {num_examples!r}", "a weight is a count of examples", "pass the number of examples this round trained on")
    if not (0.0 <= float(tau) < 1.0):
        raise invalid(f"tau = {tau!r}", "the gate threshold is a share of the gate mass", "pass 0 <= tau < 1")
    if not (float(scale) > 0.0 and float(scale) < float("inf")):
        raise invalid(f"scale = {scale!r}", "weights are examples divided by a positive scale", "pass scale > 0")
    w = float(num_examples) / float(scale)
    per_expert = torch.where(mass > float(tau), mass * w, torch.zeros_like(mass))
    local = adapter_state_dict(module)
    out: Dict[str, Any] = {}
    missing = sorted(set(local) - set(global_model)) + [k for k in (EXPERT_WEIGHT, SHARED_WEIGHT) if k not in global_model]
    if missing:
        raise invalid(f"the round's model lacks {missing[:3]}", "an expert-wise model carries every adapter and both weight tensors", "start the federation from expert_state_dict(policy)")
    tasks = 0
    per_task = None
    if TASK_WEIGHT in global_model:
        tasks = int(torch.as_tensor(global_model[TASK_WEIGHT]).numel())
        if task_ids is None:
            raise invalid("no task_ids", "the round's model averages each task's rows over the robots that have the task", "pass task_ids= of the examples you trained on (policy.task_ids(names))")
        try:
            ids = torch.as_tensor(task_ids).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            ids = None
        if ids is None or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise invalid(f"task_ids of type {type(task_ids).__name__}", "they must be integer task indices", "pass policy.task_ids(names), not the names")
        ids = ids.long()
        if ids.numel() == 0 and w > 0:
            raise invalid("empty task_ids", f"num_examples is {num_examples}: every example has a task", "pass the task_ids of the examples you trained on")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= tasks):
            raise invalid(f"task_ids in [{int(ids.min())}, {int(ids.max())}]", f"the model has {tasks} tasks", "pass policy.task_ids(names) of this policy")
        per_task = torch.bincount(ids, minlength=tasks).to(torch.float32) * (w / max(int(ids.numel()), 1)) if ids.numel() else torch.zeros(tasks)
    for name, value in local.items():
        g = torch.as_tensor(global_model[name], dtype=value.dtype)
        delta = value.detach() - g
        split = name.endswith("lora_B") or "experts" in name.split(".")
        if split and delta.dim() > 0 and delta.shape[0] == experts:
            shape = (experts,) + (1,) * (delta.dim() - 1)
            out[name] = g + per_expert.reshape(shape).to(delta.dtype) * delta
        elif per_task is not None and _per_task(name, tuple(delta.shape), tasks):
            shape = (tasks,) + (1,) * (delta.dim() - 1)
            out[name] = g + per_task.reshape(shape).to(delta.dtype) * delta
        else:
            out[name] = g + w * delta
    out[EXPERT_WEIGHT] = torch.as_tensor(global_model[EXPERT_WEIGHT], dtype=torch.float32) + per_expert
    out[SHARED_WEIGHT] = torch.as_tensor(global_model[SHARED_WEIGHT], dtype=torch.float32) + w
    if per_task is not None:
        out[TASK_WEIGHT] = torch.as_tensor(global_model[TASK_WEIGHT], dtype=torch.float32) + per_task
    return out


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
    adapters = {k: v for k, v in adapters.items() if k not in (EXPERT_WEIGHT, SHARED_WEIGHT, TASK_WEIGHT)}
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

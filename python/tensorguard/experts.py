"""What a robot sends in an expert-wise federation: its expert adapters'
changes weighted by how much its data used each expert, the weights
themselves and, optionally, reports of which tasks trained which expert.

Design decision: everything a client sends is a Σ-able pair (weight·Δ,
weight), so the engine's ``strategy = "expert-wise"`` averages each
expert, and each task's router rows, over the robots that used them from
the round's sum alone: it runs unchanged under secure aggregation and
distributed DP. Import these from ``tensorguard.lora``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .errors import invalid
from .lora import EXPERT_CLIENTS, EXPERT_TASK_MASS, EXPERT_WEIGHT, SHARED_WEIGHT, TASK_WEIGHT, LoRALinear, MoEPolicy, _torch, adapter_state_dict

__all__ = ["expert_state_dict", "expert_update"]


def expert_state_dict(module: Any, per_task: bool = True, report: Optional[bool] = None) -> Dict[str, Any]:
    """The adapters plus the (zero) weight tensors expert-wise aggregation
    needs: the initial model of a ``strategy="expert-wise"`` federation.

    With ``per_task`` (the default) and a policy that knows its tasks (a
    ``MoEPolicy``), it also carries ``TASK_WEIGHT``: the router's and the
    task embedding's rows are then each averaged over the robots that have
    that task, rather than shrunk by the share of robots that do not.

    With ``report`` (by default, as ``per_task``) it also carries the report tensors
    ``EXPERT_CLIENTS`` and, for a ``MoEPolicy``, ``EXPERT_TASK_MASS``: each
    round then records, per expert, the share of its robots that trained
    it and which tasks' examples did (the dashboard's Experts page). They
    move nothing, and the coordinator sees only their sum (in plaintext
    rounds, each robot's). Robots self-report them, so a lying robot can
    skew the page, never the model. A DP job refuses them (pass
    ``report=False``): they would share the clip with the update.

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
    if per_task if report is None else report:
        out[EXPERT_CLIENTS] = torch.zeros(experts)
        if tasks and hasattr(module, "gates"):
            out[EXPERT_TASK_MASS] = torch.zeros(experts, len(tasks))
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

    If it carries the report tensors, they are filled in too: a 1 in
    ``EXPERT_CLIENTS`` for each expert above ``tau``, and in row ``e`` of
    ``EXPERT_TASK_MASS`` expert ``e``'s weight split by task, in proportion
    to the router's gates on each task's examples (``task_ids`` needed).

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
        ids = _task_ids(task_ids, tasks, w > 0, num_examples, "the round's model averages each task's rows over the robots that have the task")
        per_task = torch.bincount(ids, minlength=tasks).to(torch.float32) * (w / max(int(ids.numel()), 1)) if ids.numel() else torch.zeros(tasks)
    reports: Dict[str, Any] = {}
    if EXPERT_CLIENTS in global_model:
        if tuple(torch.as_tensor(global_model[EXPERT_CLIENTS]).shape) != (experts,):
            raise invalid(f"{EXPERT_CLIENTS} of shape {tuple(torch.as_tensor(global_model[EXPERT_CLIENTS]).shape)}", f"it has one value per expert ({experts})", "start the federation from expert_state_dict(policy)")
        reports[EXPERT_CLIENTS] = (per_expert > 0).to(torch.float32)
    if EXPERT_TASK_MASS in global_model:
        shape = tuple(torch.as_tensor(global_model[EXPERT_TASK_MASS]).shape)
        if len(shape) != 2 or shape[0] != experts or shape[1] < 1:
            raise invalid(f"{EXPERT_TASK_MASS} of shape {shape}", f"it has one row per expert ({experts}) and one column per task", "start the federation from expert_state_dict(policy)")
        if not hasattr(module, "gates"):
            raise invalid(f"a {type(module).__name__} without a task router", f"{EXPERT_TASK_MASS} splits each expert's weight by task", "use a MoEPolicy, or start from expert_state_dict(policy, report=False)")
        ids = _task_ids(task_ids, shape[1], w > 0, num_examples, f"{EXPERT_TASK_MASS} splits each expert's weight by task")
        mass_by_task = torch.zeros(experts, shape[1])
        if ids.numel():
            with torch.no_grad():
                gates = torch.as_tensor(module.gates(ids), dtype=torch.float32).reshape(len(ids), experts)
            mass_by_task.index_add_(1, ids, gates.T)
            totals = mass_by_task.sum(dim=1, keepdim=True)
            # Each row is the expert's weight (zero below tau), split by task.
            mass_by_task = torch.where(totals > 0, mass_by_task / totals.clamp_min(1e-30), torch.zeros_like(mass_by_task)) * per_expert.reshape(experts, 1)
        reports[EXPERT_TASK_MASS] = mass_by_task
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
    for name, value in reports.items():
        out[name] = torch.as_tensor(global_model[name], dtype=torch.float32) + value
    return out


def _task_ids(task_ids: Any, tasks: int, needed: bool, num_examples: Any, why: str) -> Any:
    """``task_ids`` as a flat long tensor of indices below ``tasks``, or a
    coded error (E020)."""
    torch = _torch()
    if task_ids is None:
        raise invalid("no task_ids", why, "pass task_ids= of the examples you trained on (policy.task_ids(names))")
    try:
        ids = torch.as_tensor(task_ids).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        ids = None
    if ids is None or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise invalid(f"task_ids of type {type(task_ids).__name__}", "they must be integer task indices", "pass policy.task_ids(names), not the names")
    ids = ids.long()
    if ids.numel() == 0 and needed:
        raise invalid("empty task_ids", f"num_examples is {num_examples}: every example has a task", "pass the task_ids of the examples you trained on")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= tasks):
        raise invalid(f"task_ids in [{int(ids.min())}, {int(ids.max())}]", f"the model has {tasks} tasks", "pass policy.task_ids(names) of this policy")
    return ids

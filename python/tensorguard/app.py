"""The client side of a federation: your training code, called by the engine.

``ClientApp`` is what a Flower user knows as a ``ClientApp``: register a
train handler (and optionally an evaluate handler); TensorGuard calls them
each round with the global model, the round's config and a per-client
``Context``. Everything around your handler — the owner's checks, clipping,
compression, noise, masking, aggregation and accounting — runs in Rust.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from . import _arrays
from ._arrays import Wire

__all__ = ["Context", "ClientApp"]


@dataclass
class Context:
    """What one client keeps across rounds.

    Attributes:
        partition_id: this client's index (0 … num_partitions − 1): which
            shard of the data it holds in a simulation.
        num_partitions: how many clients the federation has.
        state: a dict the client may fill; the same dict comes back next round.

    Example:
        >>> ctx = Context(partition_id=3, num_partitions=10)
        >>> ctx.state["rounds_seen"] = ctx.state.get("rounds_seen", 0) + 1
        >>> ctx.state
        {'rounds_seen': 1}
    """

    partition_id: int
    num_partitions: int
    state: Dict[str, Any] = field(default_factory=dict)

    @property
    def node_config(self) -> Dict[str, Any]:
        """Flower's spelling: ``{"partition-id": …, "num-partitions": …}``.

        Example:
            >>> Context(2, 5).node_config["partition-id"]
            2
        """
        return {"partition-id": self.partition_id, "num-partitions": self.num_partitions}


Handler = Callable[[Any, Dict[str, Any], Context], Any]


def task_counts(tasks: Any, num_examples: int, accuracy: float) -> List[Tuple[str, int, int]]:
    """An evaluate handler's optional ``metrics["tasks"]``, a mapping from
    task name to ``(successes, episodes)``, as the engine's per-task counts
    (the dashboard's success per task over versions). The coordinator keeps
    them only if they add up to the handler's ``num_examples`` and
    ``accuracy``; counts it would drop are dropped here with a warning,
    and the evaluation's totals still count.

    Example:
        >>> task_counts({"reach": (3, 4), "push": (0, 2)}, 6, 0.5)
        [('push', 0, 2), ('reach', 3, 4)]
    """
    import numbers
    import re
    import warnings

    if tasks is None:
        return []

    def drop(why: str) -> List[Tuple[str, int, int]]:
        warnings.warn(f'metrics["tasks"] left out: {why}; the evaluation\'s totals still count', RuntimeWarning, stacklevel=3)
        return []

    if not isinstance(tasks, Mapping):
        return drop(f"it must map task names to (successes, episodes), got {type(tasks).__name__}")
    if len(tasks) > 64:
        return drop(f"{len(tasks)} tasks (at most 64)")
    out = []
    for name, counts in sorted(tasks.items(), key=lambda kv: str(kv[0])):
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
            return drop(f"task name {name!r} is not 1-64 characters of [A-Za-z0-9._-]")
        try:
            successes, episodes = counts
        except (TypeError, ValueError):
            return drop(f"{name!r}: {counts!r} is not (successes, episodes)")
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in (successes, episodes)) or successes > episodes or episodes == 0:
            return drop(f"{name!r}: {counts!r} needs integers with 0 <= successes <= episodes and episodes >= 1")
        out.append((name, int(successes), int(episodes)))
    if out and sum(e for _, _, e in out) != num_examples:
        return drop(f"episodes add up to {sum(e for _, _, e in out)}, not the {num_examples} evaluated")
    if out and abs(sum(s for _, s, _ in out) - accuracy * num_examples) > max(1.0, num_examples * 1e-12):
        return drop(f"successes add up to {sum(s for _, s, _ in out)}, not accuracy {accuracy} x {num_examples}")
    return out


def _unpack(result: Any, what: str) -> Tuple[Any, int, Dict[str, Any]]:
    """A handler's ``(model, num_examples[, metrics])``."""
    if not isinstance(result, tuple) or len(result) not in (2, 3):
        raise TypeError(f"{what} must return (model, num_examples) or (model, num_examples, metrics), got {type(result).__name__}")
    model, n = result[0], result[1]
    metrics = dict(result[2]) if len(result) == 3 and result[2] is not None else {}
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what}: num_examples must be a positive int, got {n!r}")
    return model, n, metrics


class ClientApp:
    """A client defined by handlers, as in Flower's ``ClientApp``.

    The train handler gets ``(model, config, context)`` and returns
    ``(new_model, num_examples)`` or ``(new_model, num_examples, metrics)``.
    ``model`` is a dict of NumPy arrays (``format="numpy"``, the default), a
    torch ``state_dict`` (``format="torch"``) or an ordered list
    (``format="list"``). ``config`` holds ``server_round``,
    ``local_epochs``, ``batch_size``, ``learning_rate``, ``seed`` and, for
    FedProx, ``proximal_mu``: a FedProx job runs only on an app made with
    ``ClientApp(fedprox=True)``, whose handler adds ``μ/2‖w − w_global‖²``
    to its loss.

    Example:
        >>> import numpy as np
        >>> app = ClientApp()
        >>> @app.train()
        ... def train(model, config, context):
        ...     return {k: v + 0.1 for k, v in model.items()}, 10, {"loss": 0.5}
        >>> app.has_train
        True
    """

    def __init__(self, fedprox: bool = False) -> None:
        self.fedprox = fedprox
        self._train: Optional[Handler] = None
        self._train_format = "numpy"
        self._evaluate: Optional[Handler] = None
        self._evaluate_format = "numpy"
        self._like: Optional[Mapping[str, Any]] = None

    @property
    def has_train(self) -> bool:
        """Whether a train handler is registered.

        Example:
            >>> ClientApp().has_train
            False
        """
        return self._train is not None

    def train(self, format: str = "numpy") -> Callable[[Handler], Handler]:
        """Registers the train handler (a decorator).

        Example:
            >>> app = ClientApp()
            >>> @app.train(format="list")
            ... def train(model, config, context):
            ...     return model, 1
        """
        _arrays.as_format({}, format)

        def register(f: Handler) -> Handler:
            self._train, self._train_format = f, format
            return f

        return register

    def evaluate(self, format: str = "numpy") -> Callable[[Handler], Handler]:
        """Registers the evaluate handler (a decorator): it returns
        ``(loss, num_examples)`` or ``(loss, num_examples, metrics)``, with
        ``metrics["accuracy"]`` reported when present. A rollout evaluation
        may add ``metrics["tasks"] = {task: (successes, episodes)}``
        (episodes adding up to ``num_examples``): the coordinator sums them
        over robots into success per task for each version (the
        dashboard's Experts page). They tell the coordinator which tasks
        this robot evaluated.

        Example:
            >>> app = ClientApp()
            >>> @app.evaluate()
            ... def evaluate(model, config, context):
            ...     return 0.3, 50, {"accuracy": 0.9}
        """
        _arrays.as_format({}, format)

        def register(f: Handler) -> Handler:
            self._evaluate, self._evaluate_format = f, format
            return f

        return register

    def _dtypes_like(self, model: Mapping[str, Any]) -> None:
        """Remembers the initial state_dict, so torch handlers get its dtypes back."""
        self._like = model

    def _client(self, context: Context) -> "_AppClient":
        return _AppClient(self, context)


class _AppClient:
    """The object the engine calls for one client of a ``ClientApp``."""

    def __init__(self, app: ClientApp, context: Context) -> None:
        self.app = app
        self.context = context
        self._tg_proximal = app.fedprox

    def _tg_train(self, tensors: List[Wire], config: Dict[str, Any]) -> Tuple[List[Wire], int, Optional[float]]:
        if self.app._train is None:
            raise RuntimeError("this ClientApp has no @app.train() handler")
        model = _arrays.as_format(_arrays.from_wire(tensors), self.app._train_format, self.app._like)
        out, n, metrics = _unpack(self.app._train(model, dict(config), self.context), "the train handler")
        loss = metrics.get("loss", metrics.get("train_loss"))
        return _arrays.to_wire(out), n, None if loss is None else float(loss)

    def _tg_evaluate(self, tensors: List[Wire], config: Dict[str, Any]) -> Tuple[float, int, Optional[float], List[Tuple[str, int, int]]]:
        if self.app._evaluate is None:
            raise RuntimeError("this ClientApp has no @app.evaluate() handler")
        model = _arrays.as_format(_arrays.from_wire(tensors), self.app._evaluate_format, self.app._like)
        loss, n, metrics = _unpack(self.app._evaluate(model, dict(config), self.context), "the evaluate handler")
        if "accuracy" not in metrics:
            raise ValueError('the evaluate handler must report metrics["accuracy"]')
        return float(loss), n, float(metrics["accuracy"]), task_counts(metrics.get("tasks"), n, float(metrics["accuracy"]))

"""Run N clients against the engine in this process.

``run`` is TensorGuard's ``flwr.simulation``: the same Rust engine as
``tensorguard demo`` and a fleet (sampling, secure aggregation, DP noise and
accounting, the store), with your Python clients doing the training. Clients
train at most one per CPU core at a time; there is no Ray and no actor.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from . import _arrays, _core
from .app import ClientApp, Context
from .errors import TensorGuardError, invalid
from .strategy import Strategy

__all__ = ["Summary", "run"]


class Summary(dict):
    """The run's summary, with the same keys as ``tensorguard demo --json``.

    Keys include ``status``, ``rounds_committed``, ``final_model_sha256``,
    ``epsilon``, ``epsilon_vs_coordinator`` and ``history`` (one dict per
    round). ``model`` holds the final global model as a dict of float32
    arrays; ``client_errors`` what any client raised (that client sat the
    round out).

    Example:
        >>> s = Summary({"status": "completed", "history": []}, model={})
        >>> s["status"], s.model
        ('completed', {})
    """

    def __init__(self, data: Dict[str, Any], model: Dict[str, Any]):
        super().__init__(data)
        self.model = model
        self.client_errors: List[BaseException] = []

    def state_dict(self) -> Dict[str, Any]:
        """The final model as a torch ``state_dict`` (float32 tensors), for
        ``module.load_state_dict``.

        Example:
            >>> import numpy as np
            >>> Summary({}, model={"w": np.ones(2, dtype=np.float32)}).state_dict()["w"].tolist()
            [1.0, 1.0]
        """
        return dict(_arrays.as_format(self.model, "torch"))


def _toml_value(key: str, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise invalid(f"{key} = {v}", "settings must be finite numbers", "use a finite value")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    raise invalid(f"{key} has a value of type {type(v).__name__}", "settings are numbers, strings or booleans", "pass one of those")


def _toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """Flat sections as a job file's TOML (keys and values checked by the engine)."""
    lines: List[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        for k, v in table.items():
            if v is not None:
                lines.append(f"{k} = {_toml_value(f'{name}.{k}', v)}")
    return "\n".join(lines) + "\n"


ClientFn = Callable[[Context], Any]


class _Recorder:
    """Calls one client for the engine, and keeps what it raised.

    A client that raises, or returns a model of another layout, sits the
    round out (the engine declines for it); the error is kept so that the
    caller is told, never silently dropped.
    """

    def __init__(self, index: int, client: Any, errors: List[BaseException]):
        self.index, self.client, self.errors = index, client, errors
        self._tg_proximal = bool(getattr(client, "_tg_proximal", False))

    def _check(self, given: List[Any], returned: List[Any]) -> None:
        want = {name: list(shape) for name, shape, _ in given}
        got = {name: list(shape) for name, shape, _ in returned}
        if want != got:
            detail = ", ".join(
                f"`{k}` {got.get(k)} (the model's: {want.get(k)})"
                for k in sorted(set(want) | set(got))
                if want.get(k) != got.get(k)
            )
            what = f"client {self.index} returned tensors of another layout: {detail}"
            raise invalid(what, "an update must have the global model's names and shapes", "return the model you trained, not a new one")

    def _tg_train(self, tensors: Any, config: Any) -> Any:
        try:
            out = self.client._tg_train(tensors, config)
            self._check(tensors, out[0])
            return out
        except Exception as e:
            self.errors.append(e)
            raise

    def _tg_upload_budget(self, seconds_left: Any = None) -> Any:
        # A client with an operating envelope (EdgeClient) bounds its upload.
        budget = getattr(self.client, "_tg_upload_budget", None)
        if budget is None:
            return None
        try:
            return budget(seconds_left)
        except Exception as e:
            self.errors.append(e)
            raise

    def _tg_ready(self) -> Any:
        ready = getattr(self.client, "_tg_ready", None)
        if ready is None:
            return None
        try:
            return ready()
        except Exception as e:
            self.errors.append(e)
            raise

    def _tg_evaluate(self, tensors: Any, config: Any) -> Any:
        try:
            return self.client._tg_evaluate(tensors, config)
        except Exception as e:
            self.errors.append(e)
            raise


def run(
    client: Union[ClientApp, ClientFn],
    num_clients: int,
    rounds: int,
    *,
    initial_model: Any = None,
    strategy: Union[str, Strategy] = "fedavg",
    secure_aggregation: Union[None, bool, Mapping[str, Any]] = None,
    dp: Optional[Mapping[str, Any]] = None,
    evaluate_fn: Optional[Callable[[Dict[str, Any]], Any]] = None,
    fraction: float = 1.0,
    min_clients: Optional[int] = None,
    local_epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 0.1,
    seed: int = 0,
    data_dir: Optional[str] = None,
    on_round: Optional[Callable[[Dict[str, Any]], None]] = None,
    **job: Any,
) -> Summary:
    """Runs a federation of ``num_clients`` Python clients for ``rounds`` rounds.

    Args:
        client: a ``ClientApp``, or ``client_fn(context)`` returning a
            ``NumPyClient`` (Flower's signature: ``context.node_config
            ["partition-id"]`` is the client's index).
        initial_model: a torch ``state_dict``, a dict of arrays or a list of
            arrays. Defaults to client 0's ``get_parameters({})``.
        strategy: ``"fedavg"``, ``"fedprox"`` or ``"fedadam"`` (the job
            file's names; SCAFFOLD and DP-SGD need the engine's own models),
            or your own ``tensorguard.Strategy`` (plaintext rounds without
            DP only: it sees each client's model).
        secure_aggregation: ``True`` or a dict of the job file's
            ``[secure_aggregation]`` keys: updates reach the server only as a
            SecAgg+ sum.
        dp: the job file's ``[privacy]`` keys, e.g. ``{"mode": "central",
            "target_epsilon": 8.0, "delta": 1e-5, "clip": 1.0}``.
        evaluate_fn: the server's own evaluation, from the model's arrays
            to ``(loss, {"accuracy": ...})``.
        data_dir: where the run's store (rounds, models, ledger) is kept;
            a temporary directory, removed after the run, by default.
        on_round: called with each round's record (the ``history`` entry)
            as it is recorded; if it raises, the run stops before its next
            round and the exception propagates.
        job: any other ``[job]`` key of a job file (``mu``, ``server_lr``,
            ``compress``, ``dropout``, ``optimizer``, ``evaluate_every``).

    Returns:
        the summary ``tensorguard demo --json`` prints, with ``.model``.

    Raises:
        ConfigError: a setting is invalid, with the same code (E020, E003…)
            as the same key in a job file.

    Example:
        >>> import numpy as np, tensorguard
        >>> app = tensorguard.ClientApp()
        >>> @app.train()
        ... def train(model, config, context):
        ...     return {k: v + 1.0 for k, v in model.items()}, 10
        >>> s = tensorguard.simulation.run(app, num_clients=3, rounds=2,
        ...                                initial_model={"w": np.zeros(4)})
        >>> s["rounds_committed"], float(s.model["w"][0])
        (2, 2.0)
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise invalid(f"num_clients = {num_clients!r}", "a federation needs at least one client", "pass num_clients >= 1")
    contexts = [Context(partition_id=i, num_partitions=num_clients) for i in range(num_clients)]
    if isinstance(client, ClientApp):
        if not client.has_train:
            raise invalid("the ClientApp has no train handler", "every round trains", "decorate one function with @app.train()")
        if isinstance(initial_model, Mapping):
            client._dtypes_like(initial_model)
        clients = [client._client(c) for c in contexts]
    elif callable(client):
        clients = [client(c) for c in contexts]
        for i, c in enumerate(clients):
            if not hasattr(c, "_tg_train"):
                raise invalid(f"client_fn returned {type(c).__name__}", "the engine runs NumPyClient subclasses", "return a tensorguard.NumPyClient")
    else:
        raise invalid("client is neither a ClientApp nor a callable", "nothing to train with", "pass a ClientApp or a client_fn")
    if initial_model is None:
        if isinstance(client, ClientApp):
            raise invalid("no initial_model", "a ClientApp does not say what the model is", "pass initial_model=model.state_dict()")
        initial_model = clients[0].get_parameters({})
    custom = None
    if isinstance(strategy, Strategy):
        custom, strategy = strategy, "fedavg"
    elif not isinstance(strategy, str):
        raise invalid(f"strategy = {strategy!r}", "a strategy is a job file's name or a tensorguard.Strategy", 'pass "fedavg", "fedprox", "fedadam", or an instance of a tensorguard.Strategy subclass')
    sections: Dict[str, Dict[str, Any]] = {
        "job": {
            "clients": num_clients,
            "rounds": rounds,
            "strategy": strategy,
            "fraction": fraction,
            "min_clients": min_clients,
            "local_epochs": local_epochs,
            "batch_size": batch_size,
            "lr": learning_rate,
            "seed": seed,
            **job,
        }
    }
    if dp is not None:
        sections["privacy"] = dict(dp)
    if secure_aggregation is True:
        sections["secure_aggregation"] = {}
    elif isinstance(secure_aggregation, Mapping):
        sections["secure_aggregation"] = dict(secure_aggregation)
    evaluate = None
    if evaluate_fn is not None:
        user_fn = evaluate_fn

        def evaluate(tensors: Any) -> Any:
            out = user_fn(_arrays.from_wire(tensors))
            if out is None:
                raise ValueError("evaluate_fn returned None; return (loss, metrics)")
            loss, metrics = out
            acc = (metrics or {}).get("accuracy")
            return float(loss), None if acc is None else float(acc)

    errors: List[BaseException] = []
    recorded = [_Recorder(i, c, errors) for i, c in enumerate(clients)]
    report = None
    if on_round is not None:
        user_report = on_round

        def report(text: str) -> None:
            user_report(json.loads(text))

    summary, model = _core.simulate(
        _toml(sections), _arrays.to_wire(initial_model), recorded, evaluate, data_dir, report, custom
    )
    result = Summary(json.loads(summary), _arrays.from_wire(model))
    result.client_errors = errors
    if errors and not result.get("rounds_committed"):
        # Nothing committed because the clients failed: say why, with the
        # summary attached (nothing is lost).
        first = errors[0]
        if not isinstance(first, TensorGuardError):
            what = f"every round failed; a client raised {type(first).__name__}: {first}"
            first = invalid(what, "the clients' train handlers failed", "fix the handler (the traceback is chained)")
            first.__cause__ = errors[0]
        first.summary = result  # type: ignore[attr-defined]
        raise first
    return result

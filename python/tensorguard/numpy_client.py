"""Flower's ``NumPyClient``, unchanged but for its import line.

A Flower client subclasses ``NumPyClient`` and implements
``get_parameters``, ``fit`` and ``evaluate`` over lists of NumPy arrays.
Change ``from flwr.client import NumPyClient`` to
``from tensorguard import NumPyClient`` and the same class runs on
TensorGuard's engine (with secure aggregation and DP if the job asks).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _arrays
from ._arrays import Wire

__all__ = ["NumPyClient"]

NDArrays = List[np.ndarray]
Config = Dict[str, Any]


class NumPyClient:
    """A client over lists of NumPy arrays, as in Flower.

    Example:
        >>> import numpy as np
        >>> class Client(NumPyClient):
        ...     def __init__(self):
        ...         self.w = [np.zeros(3, dtype=np.float32)]
        ...     def get_parameters(self, config):
        ...         return self.w
        ...     def fit(self, parameters, config):
        ...         self.w = [p + 1.0 for p in parameters]
        ...         return self.w, 5, {}
        >>> Client().fit([np.zeros(3)], {})[1]
        5
    """

    #: Set to True in a subclass whose ``fit`` adds FedProx's proximal term
    #: (``config["proximal_mu"]``); FedProx jobs run only on such clients.
    fedprox: bool = False

    @property
    def _tg_proximal(self) -> bool:
        return self.fedprox

    def get_parameters(self, config: Config) -> NDArrays:
        """The client's current model (used for the initial model if none is given).

        Example:
            >>> NumPyClient().get_parameters({})
            Traceback (most recent call last):
            ...
            NotImplementedError: implement get_parameters(config) in your NumPyClient
        """
        raise NotImplementedError("implement get_parameters(config) in your NumPyClient")

    def fit(self, parameters: NDArrays, config: Config) -> Tuple[NDArrays, int, Dict[str, Any]]:
        """Trains from ``parameters``; returns ``(new_parameters, num_examples, metrics)``.

        Example:
            >>> NumPyClient().fit([], {})
            Traceback (most recent call last):
            ...
            NotImplementedError: implement fit(parameters, config) in your NumPyClient
        """
        raise NotImplementedError("implement fit(parameters, config) in your NumPyClient")

    def evaluate(self, parameters: NDArrays, config: Config) -> Tuple[float, int, Dict[str, Any]]:
        """Evaluates ``parameters``; returns ``(loss, num_examples, metrics)``.

        Example:
            >>> NumPyClient().evaluate([], {})
            Traceback (most recent call last):
            ...
            NotImplementedError: implement evaluate(parameters, config) in your NumPyClient
        """
        raise NotImplementedError("implement evaluate(parameters, config) in your NumPyClient")

    def to_client(self) -> "NumPyClient":
        """Flower's adapter call; here the client is already what the engine runs.

        Example:
            >>> c = NumPyClient()
            >>> c.to_client() is c
            True
        """
        return self

    # What the engine calls.
    def _tg_train(self, tensors: List[Wire], config: Config) -> Tuple[List[Wire], int, Optional[float]]:
        params = _arrays.as_format(_arrays.from_wire(tensors), "list")
        result = self.fit(params, dict(config))
        if not isinstance(result, tuple) or len(result) != 3:
            raise TypeError("fit must return (parameters, num_examples, metrics)")
        new, n, metrics = result
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"fit: num_examples must be a positive int, got {n!r}")
        loss = (metrics or {}).get("loss", (metrics or {}).get("train_loss"))
        return _arrays.to_wire(list(new)), n, None if loss is None else float(loss)

    def _tg_evaluate(self, tensors: List[Wire], config: Config) -> Tuple[float, int, Optional[float], List[Tuple[str, int, int]]]:
        from .app import task_counts

        params = _arrays.as_format(_arrays.from_wire(tensors), "list")
        loss, n, metrics = self.evaluate(params, dict(config))
        if "accuracy" not in (metrics or {}):
            raise ValueError('evaluate must report metrics["accuracy"]')
        return float(loss), int(n), float(metrics["accuracy"]), task_counts(metrics.get("tasks"), int(n), float(metrics["accuracy"]))

"""Your own aggregation, for plaintext rounds.

The engine still samples the clients, checks every update (layout, NaN,
size) and folds it; a ``Strategy`` subclass turns the round's accepted
client models into the next global model, as Flower's
``Strategy.aggregate_fit`` does. It sees each client's model, so it runs
only where the coordinator may see them: never under secure aggregation
(the coordinator sees only the sum) or DP (the engine's noise would be
bypassed). Both are refused with the reason.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from . import _arrays
from ._arrays import Wire

__all__ = ["Strategy", "FedMedian"]

Results = List[Tuple[Dict[str, np.ndarray], int]]


class Strategy:
    """Base class of a custom strategy: override ``aggregate_fit``.

    Pass an instance as ``simulation.run(..., strategy=MyStrategy())``.
    Clients are sampled as ``fedavg`` samples them (``fraction=``), and
    train with the plain local objective.

    Example:
        >>> import numpy as np
        >>> class Mean(Strategy):
        ...     def aggregate_fit(self, server_round, results, global_model):
        ...         return {k: np.mean([m[k] for m, _ in results], axis=0) for k in global_model}
        >>> out = Mean().aggregate_fit(1, [({"w": np.ones(2)}, 3), ({"w": np.zeros(2)}, 1)], {"w": np.zeros(2)})
        >>> out["w"].tolist()
        [0.5, 0.5]
    """

    def aggregate_fit(self, server_round: int, results: Results, global_model: Dict[str, np.ndarray]) -> Any:
        """The next global model from ``results``: each accepted client's
        ``(model, num_examples)``, in a fixed client order. Return a dict
        with the global model's names and shapes (or a list in its order).

        Example:
            >>> Strategy().aggregate_fit(1, [], {})
            Traceback (most recent call last):
            ...
            NotImplementedError: override aggregate_fit(server_round, results, global_model)
        """
        raise NotImplementedError("override aggregate_fit(server_round, results, global_model)")

    def _tg_aggregate(self, server_round: int, results: Sequence[Tuple[List[Wire], int]], global_wire: List[Wire]) -> List[Wire]:
        global_model = _arrays.from_wire(global_wire)
        out = self.aggregate_fit(server_round, [(_arrays.from_wire(m), int(n)) for m, n in results], global_model)
        if isinstance(out, (list, tuple)):
            out = dict(zip(global_model, out))
        return _arrays.to_wire(out)


class FedMedian(Strategy):
    """The coordinate-wise median of the clients' models (Yin et al., 2018):
    one client's outlandish update cannot drag the model far. Plaintext
    rounds only.

    Example:
        >>> import numpy as np
        >>> r = [({"w": np.array([1.0])}, 1), ({"w": np.array([2.0])}, 1), ({"w": np.array([100.0])}, 1)]
        >>> FedMedian().aggregate_fit(1, r, {"w": np.zeros(1)})["w"].tolist()
        [2.0]
    """

    def aggregate_fit(self, server_round: int, results: Results, global_model: Dict[str, np.ndarray]) -> Any:
        """The coordinate-wise median (see the class).

        Example:
            >>> import numpy as np
            >>> FedMedian().aggregate_fit(1, [({"b": np.ones(2)}, 5)], {"b": np.zeros(2)})["b"].tolist()
            [1.0, 1.0]
        """
        return {k: np.median(np.stack([m[k] for m, _ in results]), axis=0) for k in global_model}

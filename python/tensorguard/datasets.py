"""The bundled UCI digits, partitioned as a job partitions them.

Example:
    >>> import tensorguard
    >>> (x, y), (xt, yt) = tensorguard.datasets.digits(0, 10)
    >>> x.shape[1], xt.shape[1]
    (64, 64)
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from . import _core

__all__ = ["digits"]


def digits(
    partition_id: int, num_partitions: int, partition: str = "iid", seed: int = 0
) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """``((x_train, y_train), (x_test, y_test))`` for one client.

    ``x`` is float32 ``[n, 64]`` in [0, 1]; ``y`` is int64 in 0…9. The
    held-out split is the same for every client. ``partition`` is
    ``"iid"``, ``"dirichlet:ALPHA"`` or ``"shards:K"``.

    Example:
        >>> (x, y), _ = digits(1, 4, partition="dirichlet:0.5", seed=3)
        >>> len(x) == len(y)
        True
    """
    (_, shape, data), labels, (_, tshape, tdata), tlabels = _core.digits(
        partition_id, num_partitions, partition, seed
    )
    x = np.frombuffer(data, dtype=np.float32).reshape(shape).copy()
    xt = np.frombuffer(tdata, dtype=np.float32).reshape(tshape).copy()
    return (x, np.asarray(labels, dtype=np.int64)), (xt, np.asarray(tlabels, dtype=np.int64))

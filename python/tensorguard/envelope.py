"""A robot's operating envelope: how large an update may be, how long
training may take, and when the robot may take part at all.

An :class:`Envelope` is checked before anything is charged or sent; the
:class:`~tensorguard.EdgeClient` asks it each round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from .errors import invalid

__all__ = ["Envelope"]


@dataclass(frozen=True)
class Envelope:
    """What a robot lets a round cost it: the operating envelope.

    Args:
        max_update_bytes: the most bytes one round's update may take on the
            wire (default 5 MB). The engine measures the encoded update
            before it leaves and, in a plaintext round that allows it,
            sends it top-k sparsified (with error feedback: what is not
            sent is carried into the next round) to fit; a round it cannot
            fit is declined and nothing is sent.
        max_train_seconds: local training stops after this long (after at
            least one step); the update then covers the batches trained.
        ready: called before each round; ``False`` (or a string, the reason)
            sits the round out — a battery, idle or thermal condition.
        uplink_bytes_per_s: called before each upload; the robot's measured
            uplink. With ``upload_seconds`` it lowers the byte budget to what
            the link carries in that time (adaptive sparsity on a slow link).
        upload_seconds: how long an upload may take (default 30 s).

    Raises:
        ConfigError: a limit is not positive and finite, or a condition is
            not callable (E020).

    Example:
        >>> e = Envelope(max_update_bytes=1_000_000, uplink_bytes_per_s=lambda: 10_000, upload_seconds=5)
        >>> e.upload_budget()
        50000
    """

    max_update_bytes: int = 5_000_000
    max_train_seconds: Optional[float] = None
    ready: Optional[Callable[[], Any]] = None
    uplink_bytes_per_s: Optional[Callable[[], float]] = None
    upload_seconds: float = 30.0

    def __post_init__(self) -> None:
        import math

        def positive(name: str, value: Any, integer: bool = False) -> None:
            ok = isinstance(value, int) if integer else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok or not (value > 0 and math.isfinite(value)):
                raise invalid(f"{name} = {value!r}", "an envelope limit must be a positive, finite number", f"pass e.g. {name}={5_000_000 if integer else 30}")

        positive("max_update_bytes", self.max_update_bytes, integer=True)
        if self.max_update_bytes > 2**63 - 1:
            raise invalid(f"max_update_bytes = {self.max_update_bytes!r}", "it is beyond any link", "pass at most 2**63 - 1")
        positive("upload_seconds", self.upload_seconds)
        if self.max_train_seconds is not None:
            positive("max_train_seconds", self.max_train_seconds)
        for name in ("ready", "uplink_bytes_per_s"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise invalid(f"{name} = {value!r}", "it is a condition the robot evaluates before each round", f"pass a function, e.g. {name}=lambda: ...")

    def not_ready(self) -> Optional[str]:
        """Why the robot sits this round out, or ``None`` when it may train.

        Example:
            >>> Envelope(ready=lambda: "battery at 12%").not_ready()
            'battery at 12%'
            >>> Envelope(ready=lambda: True).not_ready() is None
            True
        """
        if self.ready is None:
            return None
        verdict = self.ready()
        if verdict is True or verdict is None:
            return None
        if isinstance(verdict, str):
            return verdict or "the robot's ready() condition said no"
        return None if verdict else "the robot's ready() condition said no"

    def upload_budget(self, seconds_left: Optional[float] = None) -> int:
        """The bytes the next upload may take: ``max_update_bytes``, or less
        when the measured uplink carries less in ``upload_seconds`` (or in
        ``seconds_left`` of the coordinator's round deadline, if sooner).

        Example:
            >>> e = Envelope(uplink_bytes_per_s=lambda: 2_000, upload_seconds=30)
            >>> e.upload_budget(), e.upload_budget(seconds_left=5)
            (60000, 10000)
        """
        budget = self.max_update_bytes
        if self.uplink_bytes_per_s is not None:
            rate = float(self.uplink_bytes_per_s())
            window = self.upload_seconds if seconds_left is None else max(0.0, min(self.upload_seconds, float(seconds_left)))
            carried = rate * window
            if not (rate >= 0 and np.isfinite(carried)):
                raise invalid(f"uplink_bytes_per_s() = {rate!r}", "a measured uplink is a non-negative, finite rate", "return bytes per second from the robot's link statistics")
            budget = min(budget, int(carried))
        return max(0, budget)

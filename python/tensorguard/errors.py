"""Errors raised by TensorGuard, with the same codes and words as the CLI.

Every exception carries ``code`` (``"E020"``…, see docs/ERRORS.md), and
``what``, ``why`` and ``fix``: what happened, why, and what to do.

Example:
    >>> import tensorguard
    >>> try:
    ...     tensorguard.simulation.run(lambda i: None, num_clients=0, rounds=1,
    ...                                initial_model={"w": [0.0]})
    ... except tensorguard.ConfigError as e:
    ...     print(e.code)
    E020
"""

from __future__ import annotations

__all__ = [
    "invalid",
    "TensorGuardError",
    "ConfigError",
    "DataError",
    "StoreError",
    "TrustError",
    "PrivacyError",
    "NetworkError",
    "AttestationError",
    "RoundError",
    "ComputeError",
    "InternalError",
]


class TensorGuardError(Exception):
    """Base of every TensorGuard error: ``error[E0xx]: what — why — what to do``.

    Attributes:
        code: the stable code, as the CLI prints it (``"E020"``).
        what: what happened.
        why: why it is refused or failed.
        fix: what to do about it.

    Example:
        >>> e = TensorGuardError("error[E020]: x — y — z", "E020", "x", "y", "z")
        >>> (e.code, e.fix)
        ('E020', 'z')
    """

    def __init__(self, message: str, code: str = "E099", what: str = "", why: str = "", fix: str = ""):
        super().__init__(message)
        self.code = code
        self.what = what or message
        self.why = why
        self.fix = fix


class ConfigError(TensorGuardError, ValueError):
    """A job setting is invalid or contradicts another (E001–E003, E020, E021).

    Example:
        >>> issubclass(ConfigError, ValueError)
        True
    """


def invalid(what: str, why: str, fix: str, code: str = "E020") -> "ConfigError":
    """A ``ConfigError`` worded as the CLI words it.

    Example:
        >>> str(invalid("rounds = 0", "a job runs at least one round", "pass rounds >= 1"))
        'error[E020]: rounds = 0 — a job runs at least one round — pass rounds >= 1'
    """
    return ConfigError(f"error[{code}]: {what} — {why} — {fix}", code, what, why, fix)


class DataError(TensorGuardError, ValueError):
    """Data or a model does not fit the job (E010–E013).

    Example:
        >>> ConfigError.__mro__[1] is TensorGuardError
        True
    """


class StoreError(TensorGuardError, OSError):
    """The run's store cannot be written or read (E030–E034, E071).

    Example:
        >>> issubclass(StoreError, OSError)
        True
    """


class TrustError(TensorGuardError):
    """Keys, keyring or audit log refused an operation (E040–E048).

    Example:
        >>> issubclass(TrustError, TensorGuardError)
        True
    """


class PrivacyError(TensorGuardError, ValueError):
    """A privacy parameter is out of range, no noise reaches the target ε, or a
    round would overspend the data owner's budget (E060–E062).

    Example:
        >>> issubclass(PrivacyError, ValueError)
        True
    """


class NetworkError(TensorGuardError, ConnectionError):
    """The network, admission or a coordinator refused or failed (E070–E080).

    Example:
        >>> issubclass(NetworkError, ConnectionError)
        True
    """


class AttestationError(TensorGuardError):
    """TEE evidence is missing, unreadable or untrusted, here or at the coordinator's aggregator (E090–E094).

    Example:
        >>> issubclass(AttestationError, TensorGuardError)
        True
    """


class RoundError(TensorGuardError):
    """An agent declined a round (E100–E112): below its owner's floors
    (E110), a secure-aggregation check failed (E100–E111), or its learner
    failed (E112). Nothing but the decline's code was sent.

    An :class:`tensorguard.Agent` keeps going after a declined round; it
    passes each one to ``on_declined`` (by default, appended to
    ``Agent.declined``).

    Example:
        >>> issubclass(RoundError, TensorGuardError)
        True
    """


class ComputeError(TensorGuardError):
    """The compute network refused or failed a task (E120–E127): a model
    artifact that does not match its pin (E120), a malformed, oversize or
    unknown task (E121–E123), a result or receipt whose signature does not
    hold (E124), a worker over its caps (E125), a task that timed out or
    whose workers disagreed (E126), or a task store another process holds
    (E127).

    Example:
        >>> issubclass(ComputeError, TensorGuardError)
        True
    """


class InternalError(TensorGuardError, RuntimeError):
    """Something failed that the caller cannot fix (E099): please report it.

    Example:
        >>> issubclass(InternalError, RuntimeError)
        True
    """

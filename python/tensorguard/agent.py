"""A real agent: your training code joins a coordinator over the network.

``Agent`` runs the same runtime as ``tensorguard agent start`` — libp2p,
signed frames, admission (enrollment tokens, certificates), attestation,
the data owner's floors and privacy budget, secure aggregation — with your
``ClientApp`` or ``NumPyClient`` as the learner. Only your handlers run in
Python; the GIL is released everywhere else.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import re
import socket
import threading
from typing import Any, Callable, Deque, Dict, Mapping, Optional, Sequence, Union

from . import _arrays, _core
from .app import ClientApp, Context
from .errors import TensorGuardError, invalid

__all__ = ["Agent", "default_data_dir"]

PathLike = Union[str, "os.PathLike[str]"]


def default_data_dir() -> str:
    """Where the CLI keeps an agent's keys and ledger, so both share them.

    ``$TENSORGUARD_DATA_DIR``, else ``$XDG_DATA_HOME/tensorguard``, else
    ``~/.local/share/tensorguard``.

    Example:
        >>> default_data_dir().endswith("tensorguard") or "TENSORGUARD_DATA_DIR" in os.environ
        True
    """
    if os.environ.get("TENSORGUARD_DATA_DIR"):
        return os.environ["TENSORGUARD_DATA_DIR"]
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "tensorguard")


def _read(what: str, path: PathLike) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise invalid(f"{what} = {os.fspath(path)!r}", str(e), f"point {what} at a readable file") from None


_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(k: Any) -> str:
    if not isinstance(k, str) or not _KEY.match(k):
        raise invalid(f"policy key {k!r}", "policy keys are bare words (letters, digits, _ and -)", "use the policy file's key names, e.g. allow_plaintext or max_round_epsilon")
    return k


def _toml_value(v: Any) -> str:
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return "true" if v else "false"
    if isinstance(v, int) or type(v).__name__.startswith(("int", "uint")):
        return str(int(v))
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        return repr(float(v))
    if isinstance(v, str):
        # A JSON string without non-ASCII escapes is a valid TOML basic string.
        return json.dumps(v, ensure_ascii=False)
    raise invalid(f"policy value {v!r}", "a policy value is a bool, a number or a string", "fix the policy dict")


def _policy_toml(policy: Mapping[str, Any]) -> str:
    top = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in policy.items() if not isinstance(v, Mapping)]
    tables = [
        f"[{_toml_key(k)}]\n" + "\n".join(f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items())
        for k, v in policy.items()
        if isinstance(v, Mapping)
    ]
    return "\n".join(top) + "\n" + "\n\n".join(tables) + "\n"


class Agent:
    """Joins a coordinator's job and trains with your code, as a real agent.

    Args:
        client: a ``ClientApp`` or a ``NumPyClient``.
        coordinator: the address ``tensorguard coordinator start`` prints
            (``/ip4/HOST/tcp/7700/p2p/PEER_ID``); the ``/p2p/`` part pins
            that coordinator.
        enroll: an enrollment token from ``tensorguard enroll create``.
        model: your model (a torch ``state_dict``, a dict or a list of
            arrays): only global models with exactly its names and shapes
            are trained. Defaults to a ``NumPyClient``'s
            ``get_parameters({})``.
        data_dir: the agent's keys and privacy ledger (the CLI's default
            data directory unless given). One agent per directory.
        key_file: an identity key file instead of the keyring's.
        passphrase: the key passphrase; by default
            ``TENSORGUARD_KEY_PASSPHRASE(_FILE)``, as for the CLI.
        name: shown to the coordinator (default: the host name).
        once: return when the job finishes (the default), or wait for the
            next job.
        policy: the data owner's policy: a TOML file's path, or a dict of
            its keys (``{"fleet_root": "<hex>", "budget": {"epsilon": 8.0,
            "delta": 1e-5}}``).
        allow_plaintext: let rounds without secure aggregation run.
        certificate: the path of this agent's fleet certificate.
        insecure: testing only: send simulated (UNTRUSTED) attestation if a
            job requires a TEE.
        listen: addresses to listen on (by default the agent only dials out).
        discover: find the coordinator on the LAN (mDNS).
        dataset: names this data in the owner's ledger when the policy's
            ``budget_scope`` is ``"dataset"``. The budget follows the name,
            not the data's content: give one dataset one name. The default
            scope, one budget for everything the data directory serves,
            needs no name.
        context: the ``Context`` a ``ClientApp``'s handlers get. Given,
            its ``partition_id`` also seeds this agent's shuffling and
            encoding as client ``partition_id`` of a simulation is seeded,
            so that a fleet reproduces a simulation of the same job.
        on_declined: called with a ``RoundError`` or ``PrivacyError`` for
            each round the agent declines (below the owner's floors, over
            budget, the handler failed); by default they are appended to
            ``Agent.declined`` (the last 1,000). It runs on the agent's
            network thread: it must return quickly.

    ``config["seed"]`` in a handler is for reproducible shuffling only: the
    coordinator can predict it, so never draw privacy noise from it.

    Raises:
        ConfigError: an address does not parse (E020), no coordinator is
            given (E002), or the policy or certificate is invalid.
        TrustError: no passphrase (E043), or it does not open the key (E044).

    Example:
        >>> import numpy as np, tempfile, tensorguard
        >>> app = tensorguard.ClientApp()
        >>> @app.train()
        ... def train(model, config, context):
        ...     return model, 1
        >>> try:
        ...     tensorguard.Agent(app, "not-an-address", model={"w": np.zeros(2)},
        ...                       data_dir=tempfile.mkdtemp(), passphrase="example")
        ... except tensorguard.ConfigError as e:
        ...     print(e.code)
        E020
    """

    def __init__(
        self,
        client: Any,
        coordinator: Optional[str] = None,
        *,
        enroll: Optional[str] = None,
        model: Any = None,
        data_dir: Optional[PathLike] = None,
        key_file: Optional[PathLike] = None,
        passphrase: Optional[str] = None,
        name: Optional[str] = None,
        once: bool = True,
        seed: int = 42,
        policy: Union[None, PathLike, Mapping[str, Any]] = None,
        allow_plaintext: bool = False,
        certificate: Optional[PathLike] = None,
        insecure: bool = False,
        listen: Sequence[str] = (),
        discover: bool = False,
        dataset: str = "python",
        context: Optional[Context] = None,
        on_declined: Optional[Callable[[TensorGuardError], None]] = None,
    ) -> None:
        if isinstance(client, ClientApp):
            if not client.has_train:
                raise invalid("the ClientApp has no train handler", "every round trains", "decorate one function with @app.train()")
            if model is None:
                raise invalid("no model", "a ClientApp does not say what the model is", "pass model=net.state_dict()")
            if isinstance(model, Mapping):
                client._dtypes_like(model)
            learner = client._client(context or Context(partition_id=0, num_partitions=1))
        elif context is not None:
            raise invalid("context= with a NumPyClient", "only a ClientApp's handlers get a Context", "drop context=, or wrap the code in a ClientApp")
        elif hasattr(client, "_tg_train"):
            learner = client
            if model is None:
                model = client.get_parameters({})
        else:
            raise invalid(f"client is a {type(client).__name__}", "an agent trains with a ClientApp or a NumPyClient", "pass a tensorguard.ClientApp or a tensorguard.NumPyClient")
        for what, v in (("seed", seed),) + ((("context.partition_id", context.partition_id),) if context is not None else ()):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
                raise invalid(f"{what} = {v!r}", "it must be a non-negative integer", f"pass a {what} between 0 and 2**63 - 1")
        #: The last 1,000 rounds this agent declined, as exceptions with
        #: their codes (when no ``on_declined`` is given); ``status()
        #: ["declined"]`` counts them all.
        self.declined: Deque[TensorGuardError] = collections.deque(maxlen=1000)
        policy_text = None
        if isinstance(policy, Mapping):
            policy_text = _policy_toml(policy)
        elif policy is not None:
            policy_text = _read("policy", policy)
        self._native = _core.NativeAgent(
            learner,
            _arrays.to_wire(model),
            coordinator=coordinator,
            discover=discover,
            enroll=enroll,
            data_dir=os.fspath(data_dir) if data_dir is not None else default_data_dir(),
            key_file=os.fspath(key_file) if key_file is not None else None,
            passphrase=passphrase,
            name=name or socket.gethostname(),
            once=once,
            seed=seed,
            policy=policy_text,
            allow_plaintext=allow_plaintext,
            certificate=_read("certificate", certificate) if certificate is not None else None,
            insecure=insecure,
            listen=list(listen),
            dataset=dataset,
            on_declined=on_declined if on_declined is not None else self.declined.append,
            partition_id=None if context is None else context.partition_id,
        )
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._result: Optional[Dict[str, Any]] = None

    @property
    def peer_id(self) -> str:
        """This agent's peer id: what an operator lists in ``allowed_peers``.

        Example:
            >>> Agent.peer_id.__doc__.startswith("This agent's peer id")
            True
        """
        return str(self._native.peer_id)

    def status(self) -> Dict[str, Any]:
        """The agent's status: state, job, round, answered, declined, ε spent.

        Example:
            >>> sorted(Agent.status.__annotations__)
            ['return']
        """
        return dict(json.loads(self._native.status()))

    def run(self) -> Dict[str, Any]:
        """Joins and answers rounds until the job ends (``once``), ``stop()``
        or Ctrl-C; returns the final status.

        Raises:
            NetworkError: the coordinator refused this agent (E070) or the
                network failed (E080).
            DataError: the job's model or data schema is not this agent's (E012, E013).
            AttestationError: the job requires a TEE this machine lacks (E092).

        Example:
            >>> callable(Agent.run)
            True
        """
        return dict(json.loads(self._native.run()))

    def start(self) -> "Agent":
        """Runs the agent in a background thread; ``join()`` waits for it.

        Example:
            >>> callable(Agent.start)
            True
        """
        if self._thread is not None:
            raise invalid("Agent.start() called twice", "an agent runs once", "create a new Agent")

        def body() -> None:
            try:
                self._result = self.run()
            except BaseException as e:  # handed to join()
                self._error = e

        self._thread = threading.Thread(target=body, name="tensorguard-agent", daemon=True)
        # Stopped and joined before the interpreter goes away.
        atexit.register(self._shutdown)
        self._thread.start()
        return self

    def _shutdown(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def stop(self) -> None:
        """Stops the agent (from any thread): within 100 ms, or once a
        handler that is running returns.

        Example:
            >>> callable(Agent.stop)
            True
        """
        self._native.stop()

    def join(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """Waits for a started agent; returns its final status, or ``None``
        if it is still running after ``timeout`` seconds. Re-raises the
        error that stopped it.

        Example:
            >>> callable(Agent.join)
            True
        """
        if self._thread is None:
            raise invalid("Agent.join() before start()", "nothing runs in the background", "call start() first")
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None
        if self._error is not None:
            raise self._error
        return self._result


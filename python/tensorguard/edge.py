"""The robot API: demonstrations buffered on the robot, a policy fine-tuned
from them each round, and the update — never the demonstrations — leaving.

A robot keeps an ``EdgeClient``. While it works it adds each
``Demonstration`` (observations and actions of one episode, for one task);
at the round interval ``process_round()`` trains on the buffer. Connected
(``connect(coordinator, …)``), the robot takes part in the coordinator's
rounds as a real ``tensorguard.Agent``, with secure aggregation and the
owner's floors and budget. Offline, ``process_round()`` returns a package:
the round's update clipped by the engine, as bytes, to keep or forward.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from . import _arrays, _core
from .agent import Agent
from .app import ClientApp, Context
from .envelope import Envelope
from .errors import DataError, RoundError, invalid

__all__ = ["Demonstration", "EdgeClient", "Envelope", "read_package"]


def _data_error(what: str, why: str, fix: str) -> DataError:
    return DataError(f"error[E011]: {what} — {why} — {fix}", "E011", what, why, fix)


@dataclass
class Demonstration:
    """One episode: ``observations`` (T × obs_dim) and the ``actions``
    (T × act_dim) an expert or operator took, for one ``task``.

    Raises:
        DataError: the arrays are not 2-D, differ in length, are empty or
            hold NaN (E011).

    Example:
        >>> import numpy as np
        >>> d = Demonstration(np.zeros((5, 39)), np.zeros((5, 4)), task="reach")
        >>> len(d), d.task
        (5, 'reach')
    """

    observations: Any
    actions: Any
    task: str = "default"
    metadata: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        obs = np.asarray(self.observations, dtype=np.float32)
        act = np.asarray(self.actions, dtype=np.float32)
        if obs.ndim != 2 or act.ndim != 2:
            raise _data_error(f"a demonstration of shapes {obs.shape} and {act.shape}", "observations and actions are (steps × features)", "pass 2-D arrays, one row per step")
        if len(obs) != len(act) or len(obs) == 0:
            raise _data_error(f"a demonstration of {len(obs)} observations and {len(act)} actions", "each step pairs one observation with one action", "pass as many actions as observations (at least one)")
        if not (np.isfinite(obs).all() and np.isfinite(act).all()):
            raise _data_error("a demonstration with NaN or infinite values", "it cannot be trained on", "drop the episode or fix the sensor reading")
        if not isinstance(self.task, str) or not self.task:
            raise _data_error(f"task = {self.task!r}", "a demonstration names its task", 'pass task="pick-place" (any non-empty name)')
        # Copies, read-only: the caller cannot change an episode once checked.
        obs, act = obs.copy(), act.copy()
        obs.setflags(write=False)
        act.setflags(write=False)
        self.observations, self.actions = obs, act

    def __len__(self) -> int:
        return len(self.observations)


def _mse(policy: Any, observations: Any, actions: Any, tasks: List[str]) -> Any:
    import torch

    return torch.nn.functional.mse_loss(policy(observations), actions)


class EdgeClient:
    """A robot's side of the federation: a demonstration buffer and a torch
    policy fine-tuned on it by behaviour cloning.

    Args:
        policy: a ``torch.nn.Module`` from observations to actions. Rounds
            train a copy: the robot's own policy changes only when you call
            ``adopt``. A round's model is its ``state_dict`` (parameters and
            buffers, such as BatchNorm statistics); an offline package holds
            only the trainable parameters' update.
        learning_rate, local_epochs, batch_size: the robot's own training.
            A coordinator may ask for fewer epochs or a lower learning rate,
            never for more work: the robot's values are upper bounds, and
            its batch size is its own.
        max_demonstrations: the buffer's size; the oldest episodes go first.
        loss_fn: ``loss_fn(policy, observations, actions, tasks)`` for a
            batch; mean squared error of the actions by default.
        clip: the L2 norm an offline package's update is clipped to.
        package_tasks: name the tasks (and their episode counts) in offline
            packages; off by default, since they describe the robot's data.
        envelope: the robot's operating envelope (``Envelope``): the most
            bytes an update may take (5 MB by default, enforced by the engine
            before anything leaves), the longest training, a ready condition
            (battery, idle) and the measured uplink.

    Example:
        >>> import numpy as np, torch
        >>> robot = EdgeClient(torch.nn.Linear(3, 2))
        >>> robot.add_demonstration(Demonstration(np.ones((8, 3)), np.zeros((8, 2)), task="reach"))
        >>> package = robot.process_round()
        >>> read_package(package)["examples"]
        8
    """

    def __init__(
        self,
        policy: Any,
        *,
        learning_rate: float = 1e-2,
        local_epochs: int = 1,
        batch_size: int = 64,
        max_demonstrations: int = 10_000,
        loss_fn: Optional[Callable[..., Any]] = None,
        clip: float = 10.0,
        package_tasks: bool = False,
        envelope: Optional[Envelope] = None,
    ) -> None:
        import math

        import torch

        if not isinstance(policy, torch.nn.Module):
            raise invalid(f"policy is a {type(policy).__name__}", "the EdgeClient trains a torch policy", "pass a torch.nn.Module")
        for name, value in (("max_demonstrations", max_demonstrations), ("local_epochs", local_epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise invalid(f"{name} = {value!r}", "it counts something and must be at least 1", f"pass {name} >= 1")
        for name, value in (("learning_rate", learning_rate), ("clip", clip)):
            if not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
                raise invalid(f"{name} = {value!r}", "it must be a positive, finite number", f"pass e.g. {name}=0.01")
        if envelope is not None and not isinstance(envelope, Envelope):
            raise invalid(f"envelope is a {type(envelope).__name__}", "the operating envelope is an Envelope", "pass envelope=Envelope(max_update_bytes=..., ...)")
        self.envelope = envelope or Envelope()
        self.package_tasks = package_tasks
        self.policy = policy
        self.learning_rate, self.local_epochs, self.batch_size = learning_rate, local_epochs, batch_size
        self.loss_fn = loss_fn or _mse
        self.clip = clip
        self._buffer: Deque[Demonstration] = collections.deque(maxlen=max_demonstrations)
        self._lock = threading.Lock()
        self._dims: Optional[Tuple[int, int]] = None
        self._app = ClientApp()
        self._app.train(format="torch")(self._train)
        self._app._dtypes_like(policy.state_dict())
        self._client = self._app._client(Context(partition_id=0, num_partitions=1))
        self._agent: Optional[Agent] = None
        self._round = 0
        self._stopping = threading.Event()
        #: Episodes dropped from the full buffer (oldest first).
        self.dropped = 0
        #: Why the last offline ``process_round()`` returned nothing (or
        #: raised), e.g. the envelope's ``ready()`` said no; ``None`` after
        #: a package was made.
        self.last_skipped: Optional[str] = None
        #: Examples the last round trained on (fewer than the buffer's when
        #: ``max_train_seconds`` stopped it).
        self.last_round_examples = 0

    # -- the buffer ---------------------------------------------------------

    def add_demonstration(self, demonstration: Demonstration) -> None:
        """Buffers one episode (it never leaves the robot); thread-safe.

        Raises:
            DataError: its dimensions differ from the first episode's (E011).

        Example:
            >>> import numpy as np, torch
            >>> robot = EdgeClient(torch.nn.Linear(3, 2))
            >>> robot.add_demonstration(Demonstration(np.ones((4, 3)), np.ones((4, 2))))
            >>> robot.num_steps
            4
        """
        if not isinstance(demonstration, Demonstration):
            raise invalid(f"a {type(demonstration).__name__}", "the buffer holds Demonstration episodes", "wrap it: Demonstration(observations, actions, task=...)")
        dims = (demonstration.observations.shape[1], demonstration.actions.shape[1])
        with self._lock:
            if self._dims is not None and dims != self._dims:
                raise _data_error(f"a demonstration of {dims[0]} observation and {dims[1]} action features", f"the buffer's episodes have {self._dims[0]} and {self._dims[1]}", "record every episode with the same sensors and action space")
            self._dims = dims
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
            self._buffer.append(demonstration)

    @property
    def num_steps(self) -> int:
        """Observation–action pairs in the buffer.

        Example:
            >>> import torch
            >>> EdgeClient(torch.nn.Linear(3, 2)).num_steps
            0
        """
        with self._lock:
            return sum(len(d) for d in self._buffer)

    @property
    def tasks(self) -> Dict[str, int]:
        """Episodes in the buffer per task.

        Example:
            >>> import numpy as np, torch
            >>> r = EdgeClient(torch.nn.Linear(3, 2))
            >>> r.add_demonstration(Demonstration(np.ones((2, 3)), np.ones((2, 2)), task="push"))
            >>> r.tasks
            {'push': 1}
        """
        with self._lock:
            return dict(collections.Counter(d.task for d in self._buffer))

    # -- training -------------------------------------------------------------

    def _train(self, model: Dict[str, Any], config: Dict[str, Any], context: Context) -> Any:
        import copy

        import torch

        with self._lock:
            episodes = list(self._buffer)
        if not episodes:
            raise RuntimeError("no demonstrations buffered yet: this robot sits the round out")
        obs = torch.from_numpy(np.concatenate([d.observations for d in episodes]))
        act = torch.from_numpy(np.concatenate([d.actions for d in episodes]))
        tasks = [d.task for d in episodes for _ in range(len(d))]
        # A copy: a round never writes into the policy the robot runs.
        policy = copy.deepcopy(self.policy)
        policy.load_state_dict(model)
        # The coordinator may ask for less work than the owner set, never more.
        lr = min(float(config.get("learning_rate", self.learning_rate)), self.learning_rate)
        epochs = max(1, min(int(config.get("local_epochs", self.local_epochs)), self.local_epochs))
        batch = self.batch_size
        opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=lr)
        g = torch.Generator().manual_seed(int(config.get("seed", 0)) % (2**63))
        loss = torch.zeros(())
        policy.train()
        limit = self.envelope.max_train_seconds
        deadline = None if limit is None else time.monotonic() + limit
        # Each epoch visits every example once (a fresh permutation), so the
        # examples trained on are the first epoch's batches so far.
        seen = 0
        for _ in range(epochs):
            order = torch.randperm(len(obs), generator=g)
            for i in range(0, len(obs), batch):
                if self._stopping.is_set():
                    raise RuntimeError("the EdgeClient was stopped mid-round")
                if deadline is not None and seen and time.monotonic() > deadline:
                    break
                idx = order[i : i + batch]
                opt.zero_grad()
                loss = self.loss_fn(policy, obs[idx], act[idx], [tasks[j] for j in idx.tolist()])
                loss.backward()
                opt.step()
                seen = max(seen, min(len(obs), i + len(idx)))
            else:
                continue
            break  # out of time
        self.last_round_examples = seen
        # Stopped early: the update weighs what it was trained on.
        return policy.state_dict(), seen, {"loss": float(loss.detach())}

    def _tg_upload_budget(self, seconds_left: Optional[float] = None) -> int:
        # The engine asks before each upload (the envelope's byte budget).
        return self.envelope.upload_budget(seconds_left)

    def _tg_ready(self) -> Optional[str]:
        # The engine asks before a round, before anything is charged.
        return self.envelope.not_ready()

    def adopt(self, model: Any) -> None:
        """Loads ``model`` (a round's committed model: a ``state_dict`` or a
        dict of arrays) into the robot's own policy: the only way a
        federation changes what the robot runs.

        Example:
            >>> import torch
            >>> robot = EdgeClient(torch.nn.Linear(3, 2))
            >>> robot.adopt({"weight": torch.zeros(2, 3), "bias": torch.ones(2)})
            >>> robot.policy.bias.tolist()
            [1.0, 1.0]
        """
        self.policy.load_state_dict(dict(_arrays.as_format(_arrays.from_wire(_arrays.to_wire(model)), "torch", self.policy.state_dict())))

    # The engine calls these (an EdgeClient is its own client).
    def _tg_train(self, tensors: Any, config: Dict[str, Any]) -> Any:
        return self._client._tg_train(tensors, config)

    def _tg_evaluate(self, tensors: Any, config: Dict[str, Any]) -> Any:
        return self._client._tg_evaluate(tensors, config)

    _tg_proximal = False

    def get_parameters(self, config: Dict[str, Any]) -> List[np.ndarray]:
        """The policy's values, as a ``NumPyClient`` gives them (for
        ``simulation.run``'s default initial model).

        Example:
            >>> import torch
            >>> [a.shape for a in EdgeClient(torch.nn.Linear(3, 2)).get_parameters({})]
            [(2, 3), (2,)]
        """
        return [v.detach().cpu().float().numpy() for v in self.policy.state_dict().values()]

    # -- rounds ---------------------------------------------------------------

    def connect(self, coordinator: str, **agent: Any) -> "EdgeClient":
        """Joins a coordinator as a real agent, in the background: each of
        its rounds trains on the buffer as it is then. ``agent`` takes
        ``tensorguard.Agent``'s arguments (``enroll``, ``data_dir``,
        ``certificate``, ``policy``, …).

        Example:
            >>> callable(EdgeClient.connect)
            True
        """
        if self._agent is not None:
            raise invalid("connect() called twice", "an EdgeClient joins one coordinator", "create another EdgeClient")
        if "model" in agent:
            raise invalid("connect(model=...)", "the EdgeClient's policy is the model", "drop model=")
        agent.setdefault("once", False)
        self._agent = Agent(self, coordinator, model=self.policy.state_dict(), **agent).start()
        return self

    def process_round(self, timeout: Optional[float] = None) -> Any:
        """Trains one round on the buffer.

        Offline, from the policy's current weights: returns the package
        (bytes) of the update, clipped to ``clip``, with its example count
        and tasks (``read_package`` reads it). It is not masked — masking
        needs a round's peers — and carries no DP noise: keep it on the
        robot, or send it only where you would send the update itself.
        Returns ``None`` when the envelope's ``ready()`` says no
        (``last_skipped`` says why).

        Raises:
            RoundError: the package is larger than the envelope allows (E110);
                nothing is returned.

        Connected: waits (up to ``timeout`` seconds) until the agent has
        worked on a round it had not reached before, and returns its status.

        Example:
            >>> import numpy as np, torch
            >>> robot = EdgeClient(torch.nn.Linear(3, 2), clip=0.01)
            >>> robot.add_demonstration(Demonstration(np.ones((8, 3)), 5 * np.ones((8, 2))))
            >>> p = read_package(robot.process_round())
            >>> round(float(np.sqrt(sum((v ** 2).sum() for v in p["update"].values()))), 3)
            0.01
        """
        if self._agent is not None:
            end = None if timeout is None else time.monotonic() + timeout
            while True:
                status = self._agent.status()
                if status.get("round", 0) > self._round and status.get("state") != "training":
                    self._round = status["round"]
                    return status
                finished = self._agent.join(timeout=0.1)
                if finished is not None:
                    return finished
                if end is not None and time.monotonic() > end:
                    return status
        if self.num_steps == 0:
            raise _data_error("no demonstrations buffered", "a round trains on the robot's own episodes", "add_demonstration() first")
        why = self.envelope.not_ready()
        if why is not None:
            self.last_skipped = why
            return None
        before = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
        new_wire, n, _ = self._tg_train(_arrays.to_wire(before), {"server_round": 0})
        after = _arrays.from_wire(new_wire)
        # Only the trainable parameters' update (no buffer statistics).
        trainable = {k for k, p in self.policy.named_parameters() if p.requires_grad}
        update = {k: after[k] - _arrays.to_numpy(before[k], k) for k in after if k in trainable}
        tasks = json.dumps(self.tasks, sort_keys=True) if self.package_tasks else ""
        package = bytes(_core.edge_package(_arrays.to_wire(update), n, float(self.clip), tasks))
        budget = self.envelope.upload_budget()
        if len(package) > budget:
            self.last_skipped = f"the package is {len(package)} bytes, above the envelope's {budget}"
            raise RoundError(
                f"error[E110]: an update package of {len(package)} bytes — the robot's envelope allows {budget} bytes now (max_update_bytes, or its uplink over upload_seconds) — fine-tune fewer parameters (LoRA adapters), raise max_update_bytes, or connect() so the engine can sparsify it",
                "E110",
                f"an update package of {len(package)} bytes",
                f"the robot's envelope allows {budget} bytes now",
                "fine-tune fewer parameters (LoRA adapters), raise max_update_bytes, or connect() so the engine can sparsify it",
            )
        self.last_skipped = None
        return package

    def status(self) -> Dict[str, Any]:
        """A connected agent's status (``Agent.status``); ``{}`` offline.

        Example:
            >>> import torch
            >>> EdgeClient(torch.nn.Linear(3, 2)).status()
            {}
        """
        return self._agent.status() if self._agent is not None else {}

    def stop(self) -> None:
        """Stops a connected agent.

        Example:
            >>> import torch
            >>> EdgeClient(torch.nn.Linear(3, 2)).stop()
        """
        self._stopping.set()
        if self._agent is not None:
            self._agent.stop()


def read_package(package: bytes) -> Dict[str, Any]:
    """An offline package's contents: ``update`` (a dict of arrays),
    ``examples``, ``clip``, ``clipped``, ``tasks`` (``None`` unless the
    robot named them) and the ``masked``/``noised`` labels. The labels say
    how the package was made; nothing signs them.

    Raises:
        DataError: the bytes are not a package, or it breaks its own
            terms (NaN, an update above its clip) (E011).

    Example:
        >>> try:
        ...     read_package(b"junk")
        ... except DataError as e:
        ...     print(e.code)
        E011
    """
    if not isinstance(package, (bytes, bytearray, memoryview)):
        raise invalid(f"a package of type {type(package).__name__}", "a package is bytes", "pass the bytes EdgeClient.process_round() returned")
    tensors, meta = _core.read_edge_package(bytes(package))
    try:
        update = _arrays.from_wire(tensors)
        out = {
            "update": update,
            "examples": int(meta["examples"]),
            "clip": float(meta["clip"]),
            "clipped": meta["clipped"] == "yes",
            "tasks": json.loads(meta["tasks"]) if meta.get("tasks") else None,
            "masked": meta.get("masked", ""),
            "noised": meta.get("noised", ""),
        }
    except (KeyError, ValueError, RecursionError) as e:
        raise _data_error("a package with unreadable metadata", str(e), "pass the bytes EdgeClient.process_round() returned") from None
    norm = float(np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in update.values())))
    if out["examples"] < 1 or not np.isfinite(norm) or norm > out["clip"] * (1 + 1e-6):
        raise _data_error("a package that breaks its own terms", f"{out['examples']} examples, update norm {norm} for clip {out['clip']}", "discard it: it was not made by EdgeClient.process_round()")
    return out

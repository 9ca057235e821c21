"""Adapter versions on a robot: content-addressed, and hot-swapped so that a
policy acting in a loop never sees a half-loaded adapter.

Design decision: a swap never writes into the module that is acting. The
new adapter set is loaded into a fresh copy of the policy off to the side
(checked: same base, same tensors, finite), and only then does one
reference assignment make it live. An action reads that reference once,
so it runs wholly on the old version or wholly on the new one. Versions
are named by the SHA-256 of their base's hash and their tensors, so the
same adapters have the same name on every robot and at the coordinator.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from typing import Any, Dict, List, Optional, Tuple

from .errors import invalid

__all__ = ["adapter_version", "HotSwapPolicy"]


def adapter_version(adapters: Dict[str, Any], base_sha256: str) -> str:
    """The content address of an adapter set made for ``base_sha256``:
    SHA-256 over the base's hash, then each tensor's name, shape, dtype and
    bytes in name order.

    Example:
        >>> import torch
        >>> a = {"x.lora_B": torch.zeros(2, 3, 1)}
        >>> adapter_version(a, "0" * 64) == adapter_version({"x.lora_B": torch.zeros(2, 3, 1)}, "0" * 64)
        True
        >>> adapter_version(a, "0" * 64) == adapter_version(a, "1" * 64)
        False
    """
    import torch

    h = hashlib.sha256(b"tensorguard-adapters\0" + base_sha256.encode() + b"\0")
    for name in sorted(adapters):
        t = torch.as_tensor(adapters[name]).detach().to("cpu").contiguous()
        h.update(name.encode() + b"\0" + str(tuple(t.shape)).encode() + b"\0" + str(t.dtype).encode() + b"\0")
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class HotSwapPolicy:
    """A robot's live policy whose adapters can be replaced while it acts.

    ``act(observations, task_ids)`` runs the live version; ``swap(adapters,
    base_sha256)`` makes a new one live atomically and returns its version;
    ``rollback()`` goes back to the previous one. Thread-safe: any number of
    threads may act while one swaps.

    Args:
        policy: a ``tensorguard.lora.MoEPolicy`` (or any module with
            ``base_sha256`` whose adapters ``load_adapters`` can load); it
            becomes the first live version and is not modified afterwards.
        keep: how many earlier versions ``rollback`` can return to.

    Example:
        >>> import torch
        >>> from tensorguard.lora import MoEPolicy, adapter_state_dict
        >>> p = MoEPolicy(torch.nn.Sequential(torch.nn.Linear(3, 2)), tasks=["reach"], experts=2)
        >>> live = HotSwapPolicy(p)
        >>> new = {k: v + 1.0 if k.endswith("lora_B") else v for k, v in adapter_state_dict(p).items()}
        >>> v2 = live.swap(new, p.base_sha256)
        >>> live.version == v2, live.act(torch.ones(1, 3), p.task_ids(["reach"])).shape
        (True, torch.Size([1, 2]))
        >>> live.rollback() != v2
        True
    """

    def __init__(self, policy: Any, keep: int = 4) -> None:
        from .lora import adapter_state_dict

        if not hasattr(policy, "base_sha256"):
            raise invalid(f"a {type(policy).__name__}", "hot swap replaces the adapters of a policy built on a known base", "pass a tensorguard.lora.MoEPolicy")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise invalid(f"keep = {keep!r}", "rollback needs at least one earlier version", "pass keep >= 1")
        self._template = copy.deepcopy(policy)
        self._template.eval()
        version = adapter_version(adapter_state_dict(self._template), self._template.base_sha256)
        self._live: Tuple[str, Any] = (version, self._template)
        self._history: List[Tuple[str, Any]] = []
        self._keep = keep
        self._swap_lock = threading.Lock()

    @property
    def version(self) -> str:
        """The live version's content address.

        Example:
            >>> import torch
            >>> from tensorguard.lora import MoEPolicy
            >>> len(HotSwapPolicy(MoEPolicy(torch.nn.Sequential(torch.nn.Linear(2, 2)), tasks=["a"])).version)
            64
        """
        return self._live[0]

    def act(self, observations: Any, task_ids: Any) -> Any:
        """The live version's actions (no gradients): one version per call.

        Example:
            >>> import torch
            >>> from tensorguard.lora import MoEPolicy
            >>> p = MoEPolicy(torch.nn.Sequential(torch.nn.Linear(2, 2)), tasks=["a"])
            >>> HotSwapPolicy(p).act(torch.zeros(4, 2), p.task_ids(["a"] * 4)).shape
            torch.Size([4, 2])
        """
        import torch

        _, module = self._live  # read once: the whole call runs on this version
        with torch.no_grad():
            return module(observations, task_ids)

    def swap(self, adapters: Dict[str, Any], base_sha256: Optional[str] = None) -> str:
        """Loads ``adapters`` into a fresh copy (checked by ``load_adapters``:
        same base, same tensors, finite) and makes it live; returns its
        version. A set that fails the checks leaves the live version as it
        was.

        Raises:
            DataError: an adapter set for another base or with other tensors
                (E012), or with NaN (E011).

        Example:
            >>> import torch
            >>> from tensorguard.lora import MoEPolicy, adapter_state_dict
            >>> p = MoEPolicy(torch.nn.Sequential(torch.nn.Linear(2, 2)), tasks=["a"])
            >>> live = HotSwapPolicy(p)
            >>> live.swap(adapter_state_dict(p), p.base_sha256) == live.version
            True
        """
        from .lora import load_adapters

        base = self._template.base_sha256 if base_sha256 is None else base_sha256
        fresh = copy.deepcopy(self._template)
        load_adapters(fresh, adapters, base)
        fresh.eval()
        version = adapter_version({k: v for k, v in adapters.items() if not k.startswith("tg.")}, self._template.base_sha256)
        with self._swap_lock:
            self._history = (self._history + [self._live])[-self._keep :]
            self._live = (version, fresh)  # one reference assignment
        return version

    def rollback(self) -> str:
        """Makes the previous version live again; returns its version.

        Raises:
            ConfigError: there is no earlier version (E020).

        Example:
            >>> import torch
            >>> from tensorguard.lora import MoEPolicy
            >>> live = HotSwapPolicy(MoEPolicy(torch.nn.Sequential(torch.nn.Linear(2, 2)), tasks=["a"]))
            >>> try:
            ...     live.rollback()
            ... except Exception as e:
            ...     print(e.code)
            E020
        """
        with self._swap_lock:
            if not self._history:
                raise invalid("rollback with no earlier version", "this robot has run only one adapter version", "swap in a version first")
            self._live = self._history.pop()
            return self._live[0]

"""A simulated robot fleet on Meta-World v3: demonstrations from its
scripted experts, and success measured by rollouts with real MuJoCo
physics.

Design decision: the policy is state-based (39-d observations, 4-d
actions). Rendering an image costs ~120 ms a frame on a CPU, so a
vision policy would spend the whole time budget in the renderer; the
federated machinery (adapters, expert-wise aggregation, secure
aggregation, DP) is the same for either. Goals are observable (the last
three observation values), as in Meta-World's ``goal-observable`` suite.

Demonstrations come from ``metaworld.policies``' scripted experts,
executed with Gaussian action noise for diversity and labelled with the
expert's clean action (so the data covers states just off the expert's
path). Training and evaluation draw from disjoint sets of task
configurations (object and goal positions), so every success is on
held-out goals.

Needs ``pip install metaworld`` (which brings MuJoCo and gymnasium).
"""

from __future__ import annotations

import collections
import functools
import warnings
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from .errors import ConfigError, DataError, invalid

__all__ = ["FLEET_TASKS", "PUBLIC_TASKS", "OBS_DIM", "ACT_DIM", "configurations", "collect", "rollout", "reuse_environments"]

#: Tasks robots of the fleet may be given, the first six sharing one scene
#: (a puck on a table, with or without a wall) and differing in intent.
FLEET_TASKS: Tuple[str, ...] = (
    "reach",
    "push",
    "pick-place",
    "reach-wall",
    "push-wall",
    "pick-place-wall",
    "drawer-open",
    "button-press-topdown",
    "window-open",
    "door-open",
)
#: Public tasks the base policy is pre-trained on; no robot has them.
PUBLIC_TASKS: Tuple[str, ...] = ("drawer-close", "button-press", "window-close", "plate-slide", "sweep-into", "coffee-push")
OBS_DIM = 39
ACT_DIM = 4
#: Seeds of Meta-World's task samplers: training and evaluation configurations never overlap.
_SPLITS = {"train": 1, "eval": 2, "public": 3}


def _metaworld() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import metaworld
            import metaworld.policies  # noqa: F401
    except ImportError:
        raise ConfigError(
            "error[E020]: Meta-World is not installed — the robot fleet simulates robots with Meta-World and MuJoCo — run `pip install metaworld`",
            "E020",
            "Meta-World is not installed",
            "the robot fleet simulates robots with Meta-World and MuJoCo",
            "run `pip install metaworld`",
        ) from None
    return metaworld


def _known(task: str) -> str:
    mw = _metaworld()
    name = f"{task}-v3"
    if name not in mw.env_dict.ALL_V3_ENVIRONMENTS:
        what, why, fix = f"unknown task {task!r}", "Meta-World v3 has no such environment", f"use one of {list(FLEET_TASKS + PUBLIC_TASKS)}"
        raise DataError(f"error[E011]: {what} — {why} — {fix}", "E011", what, why, fix)
    return name


@functools.lru_cache(maxsize=64)
def _benchmark(task: str, split: str) -> Any:
    mw = _metaworld()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mw.MT1(_known(task), seed=_SPLITS[split])


def configurations(task: str, split: str) -> List[Any]:
    """The 50 task configurations (object and goal positions) of ``split``
    (``"train"``, ``"eval"`` or ``"public"``); the splits are disjoint.

    Example:
        >>> len(configurations("reach", "eval"))  # doctest: +SKIP
        50
    """
    if split not in _SPLITS:
        raise invalid(f"split {split!r}", "configurations come in three disjoint splits", f"use one of {sorted(_SPLITS)}")
    return list(_benchmark(task, split).train_tasks)


def _env(task: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _benchmark(task, "train").train_classes[_known(task)]()


#: Environments kept for reuse, per task, least recently used first, once
#: ``reuse_environments(True)`` is called. Making one costs ~0.3 s (MuJoCo
#: compiles the scene), more than a 150-step episode, and every episode
#: starts with ``set_task`` and ``reset``, so an environment can serve any
#: number of episodes of its task. At most ``_POOL_CAP`` are kept (~22 MB
#: each); the task in use keeps what it needs. Off by default: with
#: rollouts running on several threads at once (the engine calls evaluation
#: handlers from several), kept environments crashed MuJoCo.
_POOL: "collections.OrderedDict[str, List[Any]]" = collections.OrderedDict()
_POOL_CAP = 16
_REUSE = False


def reuse_environments(on: bool = True) -> None:
    """Keep Meta-World environments between ``collect`` and ``rollout``
    calls in this process instead of making new ones (~0.3 s each). Only
    for a process whose rollouts run on one thread.

    Example:
        >>> reuse_environments(False)
    """
    global _REUSE
    _REUSE = bool(on)
    if not _REUSE:
        _POOL.clear()


def _envs(task: str, n: int) -> List[Any]:
    """``n`` environments of ``task``, kept from earlier calls if reusing."""
    if not _REUSE:
        return [_env(task) for _ in range(n)]
    envs = _POOL.pop(task, [])
    while len(envs) < n:
        envs.append(_env(task))
    _POOL[task] = envs
    while len(_POOL) > 1 and sum(len(v) for v in _POOL.values()) > _POOL_CAP:
        _POOL.popitem(last=False)
    return envs[:n]


def _expert(task: str) -> Any:
    mw = _metaworld()
    _known(task)
    cls = "Sawyer" + "".join(p.capitalize() for p in task.split("-")) + "V3Policy"
    policy = getattr(mw.policies, cls, None)
    if policy is None:
        what, why, fix = f"task {task!r} has no scripted expert", f"metaworld.policies has no {cls}", f"use one of {list(FLEET_TASKS + PUBLIC_TASKS)}"
        raise DataError(f"error[E011]: {what} — {why} — {fix}", "E011", what, why, fix)
    return policy()


def _reset(env: Any, config: Any) -> np.ndarray:
    env.set_task(config)
    env._partially_observable = False  # the goal is part of the observation
    obs, _ = env.reset()
    return np.asarray(obs, dtype=np.float32)


def collect(task: str, configs: Sequence[Any], rng: np.random.Generator, noise: float = 0.1, horizon: int = 200) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Scripted-expert demonstrations of ``task``, one per configuration:
    ``(observations [T, 39], actions [T, 4])``, executed with N(0, noise²)
    action noise and labelled with the expert's clean action. Episodes that
    do not succeed within ``horizon`` steps are dropped.

    Example:
        >>> import numpy as np
        >>> demos = collect("reach", configurations("reach", "train")[:2], np.random.default_rng(0))  # doctest: +SKIP
        >>> demos[0][0].shape[1], demos[0][1].shape[1]  # doctest: +SKIP
        (39, 4)
    """
    env, expert = _envs(task, 1)[0], _expert(task)
    out = []
    for config in configs:
        obs = _reset(env, config)
        observations, actions = [], []
        for _ in range(horizon):
            clean = np.clip(expert.get_action(obs), -1.0, 1.0).astype(np.float32)
            observations.append(obs)
            actions.append(clean)
            act = np.clip(clean + rng.normal(0.0, noise, ACT_DIM), -1.0, 1.0)
            obs, _, _, _, info = env.step(act)
            obs = np.asarray(obs, dtype=np.float32)
            if info.get("success"):
                out.append((np.stack(observations), np.stack(actions)))
                break
    return out


def rollout(act: Callable[[np.ndarray], np.ndarray], task: str, configs: Sequence[Any], horizon: int = 200, batch: int = 10) -> List[bool]:
    """Runs ``act`` (a batch of observations [B, 39] → actions [B, 4]) on
    each configuration for at most ``horizon`` steps; an episode succeeds
    when Meta-World's success flag is raised. Episodes run ``batch`` at a
    time in lockstep, so the policy sees batches.

    Example:
        >>> import numpy as np
        >>> wins = rollout(lambda o: np.zeros((len(o), 4)), "reach", configurations("reach", "eval")[:2])  # doctest: +SKIP
        >>> len(wins)  # doctest: +SKIP
        2
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise invalid(f"batch = {batch!r}", "episodes run in batches of at least one", "pass batch >= 1")
    if not configs:
        return []
    envs = _envs(task, min(batch, len(configs)))
    results: List[bool] = []
    for start in range(0, len(configs), len(envs)):
        chunk = configs[start : start + len(envs)]
        obs = np.stack([_reset(e, c) for e, c in zip(envs, chunk)])
        done = np.zeros(len(chunk), dtype=bool)
        won = np.zeros(len(chunk), dtype=bool)
        for _ in range(horizon):
            actions = np.clip(np.asarray(act(obs), dtype=np.float64), -1.0, 1.0)
            if not np.all(np.isfinite(actions)):
                raise invalid("the policy returned NaN or infinite actions", "a robot cannot execute them", "check the policy's weights")
            for i, e in enumerate(envs[: len(chunk)]):
                if done[i]:
                    continue
                o, _, _, _, info = e.step(actions[i])
                obs[i] = o
                if info.get("success"):
                    won[i] = done[i] = True
            if done.all():
                break
        results.extend(bool(w) for w in won)
    return results


def wilson(successes: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """The 95% Wilson score interval of a success rate.

    Example:
        >>> lo, hi = wilson(45, 50)
        >>> round(lo, 3), round(hi, 3)
        (0.786, 0.957)
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / d
    return (max(0.0, c - h), min(1.0, c + h))


def split_counts(rng: np.random.Generator, robots: int, tasks: Sequence[str], low: int, high: int) -> List[Dict[str, int]]:
    """Each robot's tasks (1–2 of ``tasks``) and demonstrations per task
    (``low``–``high``, different per robot): non-IID in tasks and in
    quantity. Every task goes to at least one robot when there are enough.

    Example:
        >>> import numpy as np
        >>> fleet = split_counts(np.random.default_rng(0), 4, ["reach", "push"], 2, 5)
        >>> len(fleet), sorted({t for r in fleet for t in r})
        (4, ['push', 'reach'])
    """
    if not tasks or robots < 1 or not (1 <= low <= high):
        raise invalid(f"{robots} robots, {len(tasks)} tasks, {low}-{high} demonstrations", "every robot gets at least one task and one demonstration", "pass robots >= 1, a non-empty task list and 1 <= low <= high")
    fleet: List[Dict[str, int]] = []
    for r in range(robots):
        first = tasks[r % len(tasks)]
        mine = [first]
        if len(tasks) > 1 and rng.random() < 0.5:
            other = tasks[int(rng.integers(len(tasks)))]
            if other != first:
                mine.append(other)
        fleet.append({t: int(rng.integers(low, high + 1)) for t in mine})
    return fleet

"""Tensors across the native boundary: ``(name, shape, float32 bytes)``."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from .errors import invalid as _fail

Wire = Tuple[str, List[int], bytes]

_MISSING = "pass a dict of arrays, a torch state_dict, or a list of arrays"


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def list_names(n: int) -> List[str]:
    """Names for an ordered list of arrays, sorted as listed ("0000", "0001", …)."""
    return [f"{i:04d}" for i in range(n)]


def to_numpy(value: Any, name: str) -> np.ndarray:
    """One array (NumPy, torch, or nested lists) as C-ordered float32, checked finite."""
    if _is_torch(value):
        value = value.detach().to("cpu").float().numpy()
    try:
        a = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError) as e:
        raise _fail(f"tensor `{name}` is not numeric", str(e), _MISSING) from None
    if not np.all(np.isfinite(a)):
        raise _fail(
            f"tensor `{name}` has non-finite values (NaN or infinity)",
            "a model with NaN cannot be averaged or encoded",
            "check the training step that produced it (learning rate, loss scaling)",
        )
    return a


def to_wire(model: Any) -> List[Wire]:
    """A state_dict, a dict of arrays or a list of arrays as wire tensors."""
    if isinstance(model, Mapping):
        items = [(str(k), v) for k, v in model.items()]
    elif isinstance(model, (list, tuple)):
        items = list(zip(list_names(len(model)), model))
    else:
        raise _fail(f"a model of type {type(model).__name__}", "models are named tensors", _MISSING)
    out: List[Wire] = []
    for name, value in items:
        a = to_numpy(value, name)
        out.append((name, list(a.shape), a.tobytes()))
    return out


def from_wire(tensors: Sequence[Wire]) -> Dict[str, np.ndarray]:
    """Wire tensors as a dict of float32 arrays (in name order)."""
    return {
        name: np.frombuffer(data, dtype=np.float32).reshape(shape).copy()
        for name, shape, data in tensors
    }


def as_format(arrays: Dict[str, np.ndarray], fmt: str, like: Union[Mapping[str, Any], None] = None) -> Any:
    """Arrays in the handler's format: "numpy" (a dict), "list" (ordered), or "torch".

    For "torch", each tensor takes the dtype of the same name in ``like``
    (a reference state_dict), so a float16 or bfloat16 model round-trips.
    """
    if fmt == "numpy":
        return arrays
    if fmt == "list":
        return [arrays[k] for k in sorted(arrays)]
    if fmt == "torch":
        import torch

        out = {}
        for k, v in arrays.items():
            t = torch.from_numpy(v)
            if like is not None and k in like and hasattr(like[k], "dtype") and not isinstance(like[k], np.ndarray):
                t = t.to(like[k].dtype)
            out[k] = t
        return out
    raise _fail(f'format = "{fmt}"', "a handler takes the model as numpy, list or torch", 'use "numpy", "list" or "torch"')

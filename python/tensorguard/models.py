"""Models as safetensors: what the engine stores and torch loads.

Example:
    >>> import numpy as np, tempfile, os, tensorguard
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> tensorguard.save_model({"w": np.ones(3)}, path)
    >>> tensorguard.load_model(path, format="numpy")["w"].tolist()
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Optional

from . import _arrays, _core

__all__ = ["load_model", "save_model"]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def load_model(path_or_digest: str, data_dir: Optional[str] = None, format: str = "torch") -> Any:
    """A model from a safetensors file, or a committed model by its SHA-256.

    ``format="torch"`` (the default) returns a ``state_dict`` that
    ``module.load_state_dict`` accepts, each tensor in the file's dtype
    (f32, f16 or bf16: half-precision values are widened exactly and cast
    back); ``"numpy"`` returns a dict of float32 arrays. Committed models
    are f32.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.safetensors")
        >>> save_model({"b": np.zeros(2)}, p)
        >>> load_model(p, format="numpy")["b"].shape
        (2,)
    """
    if _DIGEST.match(path_or_digest) and not os.path.exists(path_or_digest):
        if data_dir is None:
            from .errors import invalid

            raise invalid("a model digest without data_dir", "the digest names a model in a run's store", "pass data_dir= the run's data directory")
        tensors = _core.stored_model(path_or_digest, data_dir)
        return _arrays.as_format(_arrays.from_wire(tensors), format)
    with open(path_or_digest, "rb") as f:
        data = f.read()
    tensors = _core.read_safetensors(data)
    return _arrays.as_format(_arrays.from_wire(tensors), format, like=_dtypes(data) if format == "torch" else None)


class _Dtype:
    """Stands in for a reference tensor: only its ``dtype`` is read."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype


def _dtypes(data: bytes) -> Dict[str, Any]:
    """The torch dtype of each half-precision tensor in a safetensors file
    (its header: an 8-byte length, then JSON), already validated by the
    engine's reader."""
    import torch

    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    half = {"F16": torch.float16, "BF16": torch.bfloat16}
    return {k: _Dtype(half[v["dtype"]]) for k, v in header.items() if isinstance(v, dict) and v.get("dtype") in half}


def save_model(model: Any, path: str) -> None:
    """Writes a state_dict, dict of arrays or list of arrays as safetensors:
    f16 and bf16 tensors (torch or NumPy float16) keep their dtype, every
    other one is stored as f32.

    Example:
        >>> import numpy as np, tempfile, os
        >>> save_model([np.zeros(2)], os.path.join(tempfile.mkdtemp(), "m.safetensors"))
    """
    data = bytes(_core.write_safetensors(_arrays.to_wire(model), _half_dtypes(model)))
    with open(path, "wb") as f:
        f.write(data)


def _half_dtypes(model: Any) -> Dict[str, str]:
    """The names of a model's half-precision tensors, with their dtype."""
    if not hasattr(model, "items"):
        return {}
    out = {}
    for k, v in model.items():
        name = str(getattr(v, "dtype", ""))
        if name in ("torch.float16", "float16"):
            out[str(k)] = "F16"
        elif name == "torch.bfloat16":
            out[str(k)] = "BF16"
    return out

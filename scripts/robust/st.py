"""Minimal safetensors read/write for float32 arrays (numpy only), shared
by the cross-check scripts, which run in different virtualenvs."""
import json
import struct

import numpy as np


def save(path, named_arrays, metadata):
    """Writes `named_arrays` (name -> array) as F32 safetensors with
    `metadata` (str -> str) in the header."""
    header, offset, blobs = {}, 0, []
    for name in sorted(named_arrays):
        b = np.ascontiguousarray(named_arrays[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(named_arrays[name])),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path):
    """(name -> float32 array, metadata) of an F32 safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype="<f4").reshape(t["shape"]).copy()
    return out, meta

"""Short, stable hashes: the identity of a config or an array in manifests and cache keys."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def array_hash(array: np.ndarray) -> str:
    """A short content hash of an array (shape and dtype included): an input's identity in manifests."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]

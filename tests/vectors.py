"""Find the BOLT spec test vectors: env ASYNCRECEIVE_VECTORS, else ../shared/vectors/bolts next to the repo.

They are never copied into this repository.  A test that needs a missing vector file is skipped.
"""

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def vectors_dir():
    env = os.environ.get("ASYNCRECEIVE_VECTORS")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "vectors" / "bolts"]:
        if cand.is_dir():
            return cand
    return None


def load_vector(name: str):
    d = vectors_dir()
    if d is None or not (d / name).is_file():
        pytest.skip(f"spec vector {name} not found (set ASYNCRECEIVE_VECTORS or provide ../shared/vectors/bolts)")
    with open(d / name) as f:
        return json.load(f)

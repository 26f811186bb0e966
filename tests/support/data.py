"""Seeded test data: pseudo-random bytes and files that any test can recreate from (size, seed)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path


def seeded_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write_seeded_file(path: Path, size: int, seed: int, chunk: int = 2**20) -> Path:
    """Write ``size`` seeded pseudo-random bytes (streamed, constant memory); the
    bytes are those of ``seeded_bytes(size, seed)``."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(rng.randbytes(n))
            left -= n
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(2**20)
            if not b:
                return h.hexdigest()
            h.update(b)

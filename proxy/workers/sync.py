"""Several workers on one cache directory: unit claims and the invalidation log, as one ``WorkerSync``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

from proxy.core.slices import Unit
from proxy.workers.claims import UnitClaims

__all__ = ["SharedCacheDir"]

log = logging.getLogger("rangeproxy.engine")


class SharedCacheDir:
    """Claims keep one origin fetch per unit across the workers; an append-only log
    tells the others what one of them invalidated (purge, origin change, unsafe method)."""

    shared = True

    def __init__(self, run_dir: Path) -> None:
        self.claims = UnitClaims(run_dir)
        self._log = run_dir / "invalidations"
        self._log.touch()
        self._seen = self._log.stat().st_size
        self._me = f"{os.getpid()} "

    @staticmethod
    def _key(url: str, unit: Unit) -> str:
        return f"{url}\x00{unit}"

    def claim_prefix(self, url: str, units: Sequence[Unit]) -> list[Unit]:
        out: list[Unit] = []
        for u in units:
            if not self.claims.try_claim(self._key(url, u)):
                break
            out.append(u)
        return out

    def try_claim(self, url: str, unit: Unit) -> bool:
        return self.claims.try_claim(self._key(url, unit))

    def release(self, url: str, units: Iterable[Unit]) -> None:
        for u in units:
            self.claims.release(self._key(url, u))

    def held_elsewhere(self, url: str, unit: Unit) -> bool:
        return self.claims.held_elsewhere(self._key(url, unit))

    def announce_invalidation(self, url: str) -> None:
        with open(self._log, "ab") as f:  # one O_APPEND write per line: no interleaving
            f.write(f"{os.getpid()} {url}\n".encode("utf-8", "surrogateescape"))

    def invalidated_elsewhere(self) -> list[str]:
        try:
            size = self._log.stat().st_size
            if size <= self._seen:
                return []
            with open(self._log, "rb") as f:
                f.seek(self._seen)
                data = f.read(size - self._seen)
        except OSError as exc:
            log.warning("cannot read the invalidation log: %s", exc)
            return []
        end = data.rfind(b"\n") + 1
        self._seen += end
        return [line.split(" ", 1)[1] for line in data[:end].decode("utf-8", "surrogateescape").splitlines()
                if not line.startswith(self._me) and " " in line]

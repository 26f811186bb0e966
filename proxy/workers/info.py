"""Which worker process an app runs in (``--workers N``: N processes on one port, one cache dir)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["WorkerInfo", "RUN_DIR_NAME"]

RUN_DIR_NAME = ".rangeproxy"  # under cache_dir: files the workers share (e.g. workers/<index>.json)


@dataclass(frozen=True)
class WorkerInfo:
    """Worker ``index`` of ``count`` (0-based); ``run_dir`` holds what the workers share."""

    index: int
    count: int
    run_dir: Path

    @property
    def pid(self) -> int:
        return os.getpid()

    @classmethod
    def single(cls, settings: Any) -> "WorkerInfo":
        """The only worker of a one-process proxy."""
        return cls(index=0, count=1, run_dir=Path(settings.cache_dir) / RUN_DIR_NAME)

"""Fixtures for the integration tests: the real demo origin, the fault-injecting
origin, and the real proxy, each as a separate server (helpers in ``tests.support``).
"""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import aiohttp
import pytest

from tests.support.data import write_seeded_file
from tests.support.fault_origin import FaultOrigin
from tests.support.servers import AppServerProc, ProxyProc, start_appserver, start_proxy

BIG_SIZE = 8 * 2**20
ODD_SIZE = 3 * 2**20 + 123
BIG_SEED = 1
ODD_SEED = 2


@pytest.fixture
def appserver_factory(tmp_path: Path) -> Iterator[Callable[..., AppServerProc]]:
    """``appserver_factory(media_dir)`` starts ``python -m appserver`` serving it."""
    procs: list[AppServerProc] = []

    def make(media_dir: Path, server: str = "aiohttp") -> AppServerProc:
        workdir = tmp_path / f"appserver{len(procs)}"
        p = start_appserver(Path(media_dir), workdir, server=server)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.stop(check=False)


@pytest.fixture
def appserver(tmp_path: Path, appserver_factory: Callable[..., AppServerProc]) -> AppServerProc:
    """The demo origin serving ``big.bin`` (8 MiB) and ``odd.bin`` (3 MiB + 123 B),
    seeded pseudo-random bytes; ``.url``, ``.media_dir``, ``.path(name)``."""
    media = tmp_path / "media"
    write_seeded_file(media / "big.bin", BIG_SIZE, BIG_SEED)
    write_seeded_file(media / "odd.bin", ODD_SIZE, ODD_SEED)
    return appserver_factory(media)


@pytest.fixture
def fault_origin() -> Iterator[FaultOrigin]:
    with FaultOrigin() as origin:
        yield origin


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[Callable[..., ProxyProc]]:
    """``proxy_factory(upstream_url, **settings)`` -> a started :class:`ProxyProc`.

    Each proxy gets its own work directory (``<tmp>/proxy<N>``, cache in
    ``.../cache``) unless ``workdir=`` is given (reuse it to restart on the same
    cache). Every proxy still running is stopped at teardown.
    """
    procs: list[ProxyProc] = []

    def make(upstream_url: str, workdir: Path | None = None, **settings: object) -> ProxyProc:
        wd = Path(workdir) if workdir is not None else tmp_path / f"proxy{len(procs)}"
        p = start_proxy(upstream_url, wd, **settings)
        procs.append(p)
        return p

    yield make
    for p in procs:
        if p.alive():
            p.stop(check=False)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client session (no decompression, no cookies kept)."""
    async with aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()) as s:
        yield s

"""Prometheus scraping for the tests: ``scrape`` a /metrics, read one series with
``val``, sum series with ``total``, wait for the counters to settle with ``settled``.

A missing series is an error: ``val`` raises ``KeyError`` (naming the series the
metric does have), so a misspelt name or label cannot pass as a 0. Where "not
there" may honestly mean nothing was counted, ``total`` sums the matching series,
which is 0 when there are none.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import fetch

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(text: str | bytes) -> Samples:
    """An exposition as ``{(sample name, frozenset(labels)): value}``; a series twice is an error."""
    if isinstance(text, bytes):
        text = text.decode()
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


async def scrape(http: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None) -> Samples:
    """``GET <base>/metrics`` (must be 200, text/plain), parsed by :func:`samples_of`."""
    out = await fetch(http, base + "/metrics", headers=headers)
    assert out.status == 200, out.body[:300]
    assert out.header("Content-Type").startswith("text/plain"), out.header("Content-Type")
    return samples_of(out.body)


def val(samples: Samples, name: str, **labels: str) -> float:
    """The value of the one series ``name`` with exactly ``labels``; KeyError if there is none."""
    try:
        return samples[(name, frozenset(labels.items()))]
    except KeyError:
        have = sorted(str(dict(sorted(ls))) for n, ls in samples if n == name)
        raise KeyError(f"no series {name} {labels}; {name} has {', '.join(have) or 'no series'}") from None


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the series of ``name`` whose labels include ``labels`` (0 when there are none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def settled(http: aiohttp.ClientSession, base: str, requests: int, timeout: float = 5.0,
                  headers: dict[str, str] | None = None) -> Samples:
    """Metrics once ``requests`` proxied requests have been accounted and no slice is
    in flight any more (the observer runs just after the last body byte is written, and
    a fetched slice is written to the store in the background, so a scrape or the next
    request can overtake either). A scrape reads the cache's size before its gauges, so
    the one returned is the scrape after one that already saw everything settled."""
    deadline = time.monotonic() + timeout
    was_settled = False
    while True:
        m = await scrape(http, base, headers)
        got = total(m, "rangeproxy_requests_total")
        idle = val(m, "rangeproxy_slice_fetches_in_flight") == 0 == val(m, "rangeproxy_store_writes_pending")
        if (was_settled and got >= requests and idle) or time.monotonic() > deadline:
            assert got == requests, f"{got} requests counted, expected {requests}"
            return m
        was_settled = got >= requests and idle
        await asyncio.sleep(0.05)

"""The per-response series (requests, durations, time to first byte), counted in plain Python.

prometheus-client's Counter and Histogram take a lock and walk their buckets on every call:
some 5 µs of a cache hit that costs under 100. Here a response costs a bisect and a few integer
additions, and the metric families are built when scraped, with the same names, labels and
buckets as prometheus-client's own (the histograms without ``_created`` samples).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["Histogram", "ResponseSeries"]


class Histogram:
    """One labelled histogram's buckets (counts per bucket, not cumulative) and sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket with le >= value
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, n = [], 0
        for bound, c in zip(self.bounds, self.counts):
            n += c
            out.append((floatToGoString(bound), float(n)))
        return out


class ResponseSeries(Collector):
    """Requests by method and status class, durations and TTFB by cache status, aborted responses."""

    def __init__(self, namespace: str, buckets: Sequence[float], cache_labels: Sequence[str],
                 request_labels: Sequence[tuple[str, str]]) -> None:
        if buckets[-1] != float("inf"):
            raise ValueError("the last bucket must be +Inf")
        self.ns = namespace
        self.buckets = tuple(buckets)
        self.created = time.time()
        self.requests: dict[tuple[str, str], int] = {k: 0 for k in request_labels}
        self.duration: dict[str, Histogram] = {c: Histogram(self.buckets) for c in cache_labels}
        self.ttfb: dict[str, Histogram] = {c: Histogram(self.buckets) for c in cache_labels}
        self.aborted = 0

    def histograms(self, cache_label: str) -> tuple[Histogram, Histogram]:
        """The duration and TTFB histograms of one cache status (made on first use)."""
        d = self.duration.get(cache_label)
        if d is None:
            d = self.duration[cache_label] = Histogram(self.buckets)
            self.ttfb[cache_label] = Histogram(self.buckets)
        return d, self.ttfb[cache_label]

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        ns = self.ns
        req = CounterMetricFamily(f"{ns}_requests", "Client requests proxied (admin paths excluded), by method "
                                  "and status class.", labels=["method", "status_class"])
        for (method, sclass), n in sorted(self.requests.items()):
            req.add_metric([method, sclass], n, created=self.created)
        yield req
        for name, doc, series in (
                ("request_duration_seconds", "Time from the request to the last body byte sent, by cache status.",
                 self.duration),
                ("time_to_first_byte_seconds", "Time from the request to the first body byte (or the headers of "
                 "a body-less answer), by cache status.", self.ttfb)):
            fam = HistogramMetricFamily(f"{ns}_{name}", doc, labels=["cache_status"])
            for label, h in sorted(series.items()):
                fam.add_metric([label], h.cumulative(), sum_value=h.sum)
            yield fam
        yield CounterMetricFamily(f"{ns}_responses_aborted", "Responses cut short (client gone, or origin fault "
                                  "after the headers).", value=self.aborted, created=self.created)

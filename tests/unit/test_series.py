"""The per-response series (proxy.observe.series): prometheus-client's buckets and names, counted without locks."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from proxy.observe.series import Histogram, ResponseSeries

INF = float("inf")


def test_a_value_on_a_bound_counts_in_that_bucket_and_buckets_are_cumulative() -> None:
    h = Histogram((0.001, 0.01, INF))
    for v in (0.001, 0.0005, 0.002, 5.0):
        h.observe(v)
    assert h.cumulative() == [("0.001", 2.0), ("0.01", 3.0), ("+Inf", 4.0)]
    assert h.sum == 0.001 + 0.0005 + 0.002 + 5.0


def test_the_exposition_has_the_names_labels_and_zero_series_prometheus_client_would() -> None:
    s = ResponseSeries("rp", (0.01, INF), ("hit",), [("GET", "2xx")])
    d, t = s.histograms("miss")  # a cache status first seen at run time
    d.observe(0.5)
    s.requests[("GET", "5xx")] = 1
    r = CollectorRegistry()
    r.register(s)
    text = generate_latest(r).decode()
    assert 'rp_requests_total{method="GET",status_class="2xx"} 0.0' in text
    assert 'rp_requests_total{method="GET",status_class="5xx"} 1.0' in text
    assert 'rp_requests_created{method="GET",status_class="2xx"}' in text
    assert 'rp_request_duration_seconds_bucket{cache_status="miss",le="0.01"} 0.0' in text
    assert 'rp_request_duration_seconds_bucket{cache_status="miss",le="+Inf"} 1.0' in text
    assert 'rp_request_duration_seconds_count{cache_status="hit"} 0.0' in text
    assert 'rp_time_to_first_byte_seconds_count{cache_status="miss"} 0.0' in text
    assert "# TYPE rp_request_duration_seconds histogram" in text

"""rangeproxy: a reverse caching proxy for HTTP Range requests.

Responses are fetched from the origin in fixed-size slices and cached on
disk, so later range requests are served from the slice cache.
"""

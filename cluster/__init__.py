"""A loopback cluster (issue 17): HAProxy hashing the path onto N proxies on local ports, each with its
own cache, so a plain machine (tests, benchmarks, a developer) runs the fleet without Docker
(``python -m cluster``; ``cluster.loopback`` is the one implementation the tests drive too)."""

"""Conformance runs of the proxy against public test suites (``python -m conformance.cache_tests``)."""

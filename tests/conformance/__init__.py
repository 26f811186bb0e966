"""Conformance runs against public test suites (real servers on loopback, node/npm)."""

"""Side-by-side benchmarks for rangeproxy and its demo origin.

Run with ``python -m benchmarks`` (see ``benchmarks/__main__.py`` for options).
The harness starts every server itself, pinned to one core, drives it with
``wrk`` pinned to another core, alternates between targets round by round and
reports medians plus the ratio to nginx measured within each round.
"""

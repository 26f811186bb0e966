"""Unit tests: no servers."""

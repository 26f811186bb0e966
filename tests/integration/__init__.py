"""Integration tests: real servers, real sockets, external tools."""

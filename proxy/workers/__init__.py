"""Several processes on one port and one cache: supervisor, unit claims, the invalidation log, peers."""

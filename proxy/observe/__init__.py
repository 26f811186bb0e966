"""What the proxy did, for people and Prometheus: counters exported, per-request stats, the /stats snapshot."""

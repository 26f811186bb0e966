"""Hardening tools run against a real proxy (issue 13): the fuzzer (``python -m hardening.fuzz``) and
the soak (``python -m hardening.soak``)."""

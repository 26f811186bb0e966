"""Helpers of the test suite, one home each (servers, fault_origin, rawhttp, client, metrics, tools, data)."""

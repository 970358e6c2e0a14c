"""Latency benchmark of the NeuroFlow HTTP API; see :mod:`bench.latency.run`."""

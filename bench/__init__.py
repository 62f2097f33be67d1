"""Benchmarks that run the connector through the real `ggic` runtime (see `python -m bench.load --help`)."""

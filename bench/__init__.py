"""Benchmarks: the engine's full and incremental runs against a hand-written DuckDB baseline (`make bench`)."""

"""Deterministic sample data: a simulated SaaS world to run the journeys against."""

from journeys.sample.generate import generate_sample_data, write_sample_files

__all__ = ["generate_sample_data", "write_sample_files"]

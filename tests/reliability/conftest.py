"""Reliability tests: `slow` ones run only with `make test-slow` (pytest -m slow) or JOURNEYS_SLOW=1."""

from __future__ import annotations

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def pytest_collection_modifyitems(config, items):
    # The default suite (`make test`, plain `pytest`) stays fast: slow variants are skipped unless asked for.
    if "slow" in (config.getoption("markexpr") or "") or os.environ.get("JOURNEYS_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with `make test-slow`")
    for item in items:
        if str(item.fspath).startswith(HERE) and item.get_closest_marker("slow"):
            item.add_marker(skip)

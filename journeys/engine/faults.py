"""Crash points for reliability tests: JOURNEYS_FAULT=<point> kills the process there (SIGKILL).

Inert in production: with the variable unset, `point()` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("after_dbt_build", "mid_transitions", "before_commit", "mid_internal_actions", "after_smtp_accept",
          "after_external_delivery", "before_dbt_build", "after_commit", "after_internal_actions",
          "before_external_delivery", "after_actions")


def point(name: str) -> None:
    if os.environ.get("JOURNEYS_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)

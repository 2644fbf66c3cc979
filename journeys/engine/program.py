"""A journey's actions as a flat program: one row per step with explicit next/then/else pointers.

The stepper walks these rows in SQL, so a late run catches up on every enrollment at once.
A program is versioned by the hash of the journey's definition; enrollments keep the version
they enrolled with, so editing a journey never re-runs or skips a step of a running enrollment.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from journeys.rules.model import IfStep, Journey, WaitStep, action_type, duration_seconds


@dataclass(frozen=True)
class ProgramStep:
    step_id: str
    ordinal: int
    kind: str  # action | wait | if
    action_type: str | None
    wait_seconds: int | None
    next_step_id: str | None
    then_step_id: str | None
    else_step_id: str | None
    params: dict | None


def journey_version(journey: Journey) -> str:
    """A short content hash of the whole journey definition."""
    canonical = journey.model_dump_json(by_alias=True, exclude_none=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def flatten(journey: Journey) -> list[ProgramStep]:
    steps: list[ProgramStep] = []
    _flatten(journey.actions, "", None, steps)
    return sorted(steps, key=lambda s: s.ordinal)


def first_step_id(journey: Journey) -> str | None:
    return "1" if journey.actions else None


def _flatten(actions: tuple, prefix: str, continuation: str | None, out: list[ProgramStep]) -> None:
    ids = [f"{prefix}.{i}" if prefix else str(i) for i in range(1, len(actions) + 1)]
    for index, (step, step_id) in enumerate(zip(actions, ids)):
        following = ids[index + 1] if index + 1 < len(ids) else continuation
        ordinal = len(out) + 1
        if isinstance(step, IfStep):
            then_id = f"{step_id}.then.1"
            else_id = f"{step_id}.else.1" if step.else_ else following
            out.append(ProgramStep(step_id, ordinal, "if", None, None, following, then_id, else_id, None))
            _flatten(step.then, f"{step_id}.then", following, out)
            if step.else_:
                _flatten(step.else_, f"{step_id}.else", following, out)
        elif isinstance(step, WaitStep):
            out.append(ProgramStep(step_id, ordinal, "wait", None, duration_seconds(step.wait), following, None, None, None))
        else:
            kind = action_type(step)
            params = json.loads(getattr(step, kind).model_dump_json(by_alias=True, exclude_none=True))
            out.append(ProgramStep(step_id, ordinal, "action", kind, None, following, None, None, params))

"""A journey's actions as a flat program: one row per step with explicit next/branch pointers.

The stepper walks these rows in SQL, so a late run catches up on every enrollment at once.
A program is versioned by the hash of the journey's definition; enrollments keep the version
they enrolled with, so editing a journey never re-runs or skips a step of a running enrollment.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from journeys.rules.model import (
    IfStep,
    Journey,
    SplitStep,
    WaitStep,
    WaitUntilDateStep,
    WaitUntilStep,
    WebhookStep,
    action_type,
    duration_seconds,
)


@dataclass(frozen=True)
class ProgramStep:
    step_id: str
    ordinal: int
    kind: str  # action | wait | if | wait_until | wait_until_date | split
    action_type: str | None
    wait_seconds: int | None  # wait: the span; wait_until: the timeout; wait_until_date: the offset
    next_step_id: str | None  # after this step (for wait_until: the timeout branch's first step)
    then_step_id: str | None  # if: condition holds; wait_until: criteria held in time
    else_step_id: str | None  # if: condition does not hold
    params: dict | None


@dataclass(frozen=True)
class SplitRoute:
    step_id: str
    path: str
    lower: float  # the path takes buckets in [lower, upper) of 0..100
    upper: float
    first_step_id: str | None


@dataclass
class Program:
    steps: list[ProgramStep] = field(default_factory=list)
    routes: list[SplitRoute] = field(default_factory=list)


def journey_version(journey: Journey) -> str:
    """A short content hash of the whole journey definition."""
    canonical = journey.model_dump_json(by_alias=True, exclude_none=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def flatten(journey: Journey) -> Program:
    program = Program()
    _flatten(journey.actions, "", None, program)
    program.steps.sort(key=lambda s: s.ordinal)
    return program


def first_step_id(journey: Journey) -> str | None:
    return "1" if journey.actions else None


def _first(steps: tuple, prefix: str, otherwise: str | None) -> str | None:
    return f"{prefix}.1" if steps else otherwise


def _flatten(actions: tuple, prefix: str, continuation: str | None, out: Program) -> None:
    ids = [f"{prefix}.{i}" if prefix else str(i) for i in range(1, len(actions) + 1)]
    for index, (step, step_id) in enumerate(zip(actions, ids)):
        following = ids[index + 1] if index + 1 < len(ids) else continuation
        ordinal = len(out.steps) + 1
        add = lambda *row: out.steps.append(ProgramStep(step_id, ordinal, *row))  # noqa: E731
        if isinstance(step, IfStep):
            add("if", None, None, following, f"{step_id}.then.1", _first(step.else_ or (), f"{step_id}.else", following), None)
            _flatten(step.then, f"{step_id}.then", following, out)
            if step.else_:
                _flatten(step.else_, f"{step_id}.else", following, out)
        elif isinstance(step, WaitUntilStep):
            add("wait_until", None, duration_seconds(step.wait_until.timeout),
                _first(step.on_timeout, f"{step_id}.on_timeout", following), _first(step.then, f"{step_id}.then", following), None, None)  # fmt: skip
            _flatten(step.then, f"{step_id}.then", following, out)
            _flatten(step.on_timeout, f"{step_id}.on_timeout", following, out)
        elif isinstance(step, WaitUntilDateStep):
            w = step.wait_until_date
            add("wait_until_date", None, duration_seconds(w.offset), following, None, None, {"property": w.property, "if_past": w.if_past})
        elif isinstance(step, SplitStep):
            add("split", None, None, following, None, None, {"paths": [p.name for p in step.split]})
            lower = 0.0
            for path in step.split:
                out.routes.append(SplitRoute(step_id, path.name, lower, lower + path.percent, _first(path.steps, f"{step_id}.{path.name}", following)))
                lower += path.percent
            for path in step.split:
                _flatten(path.steps, f"{step_id}.{path.name}", following, out)
        elif isinstance(step, WaitStep):
            add("wait", None, duration_seconds(step.wait), following, None, None, None)
        else:
            kind = action_type(step)
            params = json.loads(getattr(step, kind).model_dump_json(by_alias=True, exclude_none=True))
            if isinstance(step, WebhookStep):
                params["on_failure"] = step.on_failure.model_dump()
            add("action", kind, None, following, None, None, params)

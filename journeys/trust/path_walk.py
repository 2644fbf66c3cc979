"""The steps one enrollment passed in one run, and why: test-path's account of what the stepper did.

The engine's stepper (journeys/engine/stepper.py) moves every enrollment in SQL and keeps only where each
one ended up. To say which branch was taken and why, this module walks the same stored program
(journey_state.journey_steps of the enrollment's version) from the cursor the enrollment had before the
run, with the facts the run itself read: `journey_condition_matches` as built at T (the if / wait_until
verdicts and the date a wait_until_date reads) and the split path the engine recorded. test-path then
checks that the walk ends where the engine's cursor and ledger say it did, so an account that disagrees
with the engine is reported instead of printed as fact.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import duckdb

S = "journey_state"


@dataclass(frozen=True)
class ProgramStep:
    step_id: str
    kind: str
    action_type: str | None
    seconds: int | None  # wait: the span; wait_until: the timeout; wait_until_date: the offset
    next_step_id: str | None
    then_step_id: str | None
    else_step_id: str | None
    params: dict


@dataclass
class Program:
    steps: dict[str, ProgramStep]
    routes: dict[tuple[str, str], str | None]  # (split step, path) -> first step of the path

    @property
    def first_step_id(self) -> str | None:
        return "1" if "1" in self.steps else None


@dataclass
class Facts:
    """What the run read at T for this entity: steps whose criteria hold, dates read, the recorded split path."""

    holds: set[str] = field(default_factory=set)
    dates: dict[str, dt.datetime] = field(default_factory=dict)
    split_path: str | None = None


@dataclass
class Walk:
    steps: list[dict] = field(default_factory=list)
    cursor: tuple[str | None, dt.datetime] | None = None
    ended: str | None = None  # date_passed, or completed

    @property
    def actions(self) -> set[tuple[str, dt.datetime]]:
        return {(s["step_id"], s["reached_at"]) for s in self.steps if s["kind"] == "action"}


def load_program(con: duckdb.DuckDBPyConnection, journey_id: str, version: str) -> Program:
    rows = con.execute(
        f"""select step_id, kind, action_type, wait_seconds, next_step_id, then_step_id, else_step_id, params
            from {S}.journey_steps where journey_id = ? and version = ?""",
        [journey_id, version],
    ).fetchall()
    steps = {r[0]: ProgramStep(*r[:7], json.loads(r[7]) if r[7] else {}) for r in rows}
    routes = {(r[0], r[1]): r[2] for r in con.execute(
        f"select step_id, path, first_step_id from {S}.journey_split_routes where journey_id = ? and version = ?",
        [journey_id, version]).fetchall()}  # fmt: skip
    return Program(steps, routes)


def load_facts(con: duckdb.DuckDBPyConnection, journey_id: str, entity_id: str, split_path: str | None) -> Facts:
    rows = con.execute(
        "select step_id, value_at from main.journey_condition_matches where journey_id = ? and entity_id = ?",
        [journey_id, entity_id],
    ).fetchall()
    return Facts({r[0] for r in rows}, {r[0]: r[1] for r in rows if r[1] is not None}, split_path)


def walk(program: Program, start: tuple[str | None, dt.datetime], as_of: dt.datetime, facts: Facts) -> Walk:
    """Replay one enrollment's pass through its program at T, as the stepper's passes do it (§4.2, §9)."""
    out = Walk()
    step_id, at = start
    while step_id is not None and at <= as_of:
        s = program.steps[step_id]
        row: dict = {"step_id": step_id, "kind": s.kind, "reached_at": at}
        out.steps.append(row)
        if s.kind == "action":
            row["action_type"] = s.action_type
            step_id = s.next_step_id
        elif s.kind == "wait":
            at = at + dt.timedelta(seconds=s.seconds)
            row["next_at"] = at
            step_id = s.next_step_id
        elif s.kind == "if":
            row["verdict"] = step_id in facts.holds
            row["branch"] = "then" if row["verdict"] else "else"
            step_id = s.then_step_id if row["verdict"] else s.else_step_id
        elif s.kind == "wait_until":
            deadline = at + dt.timedelta(seconds=s.seconds)
            row["deadline"], row["verdict"] = deadline, step_id in facts.holds
            if row["verdict"] and as_of <= deadline:
                row["outcome"], step_id, at = "matched", s.then_step_id, as_of
            elif as_of >= deadline:
                row["outcome"], step_id, at = "timed_out", s.next_step_id, deadline
            else:
                row["outcome"] = "waiting"  # parked: checked again by the next run
                break
        elif s.kind == "wait_until_date":
            value = facts.dates.get(step_id)
            target = value + dt.timedelta(seconds=s.seconds) if value is not None else None
            row.update(property=s.params.get("property"), value=value, target=target)
            if target is None or target < at:
                if s.params.get("if_past") == "exit":
                    row["outcome"] = "exit"
                    out.cursor, out.ended = (step_id, at), "date_passed"
                    return out
                row["outcome"] = "continue"
            else:
                row["outcome"], at = "wait", target
            step_id = s.next_step_id
        elif s.kind == "split":
            row["path"] = facts.split_path
            step_id = program.routes.get((step_id, facts.split_path))
        else:  # a kind this account does not know: say so rather than guess
            raise ValueError(f"unknown step kind {s.kind!r}")
    out.cursor = (step_id, at)
    if step_id is None and at <= as_of:
        out.ended = "completed"
    return out

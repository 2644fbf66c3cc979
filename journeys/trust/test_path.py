"""`journeys test-path`: the steps one entity would take in a journey, day by day, on a scratch copy.

Every simulated day is a real engine run (`journeys.engine.run.run`) on the copy at T, T+1d, ...: all
journeys run, as they would, so unenroll_from, attributes written by other journeys and frequency caps
shared across journeys act as in production. The source data stays as it is now (no event arrives);
time-relative criteria (`within`, `-30d`) move with T. What a day reports comes from the copy's journey
state after that run: transitions, the enrollment, the ledger, and the steps the stepper took with what
decided each (the run is traced: journey_state.step_trace).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from contextlib import contextmanager

import duckdb

from journeys.config import Settings
from journeys.engine.build import connect, prepare_warehouse
from journeys.engine.dbt import DbtProject
from journeys.engine.ledger import bucket_sql
from journeys.engine.run import run, run_id_for, utc_now
from journeys.engine.state import last_committed_as_of
from journeys.errors import JourneysError
from journeys.progress import progress
from journeys.rules.model import IfStep, WaitUntilStep
from journeys.rules.validate import load_and_validate
from journeys.rules.walk import walk_steps
from journeys.trust.scratch import scratch_copy, scratch_executors, set_journey_enabled
from journeys.trust.source_cut import quote, source_relations

S = "journey_state"
MAX_DAYS = 90


def simulate_path(settings: Settings, journey_id: str, entity_id: str, *, days: int = 14, as_of: dt.datetime | None = None,
              echo=print) -> dict:  # fmt: skip
    """Simulate `entity_id` in `journey_id` from T (default: the last committed run, else now) for `days` days."""
    if not 1 <= days <= MAX_DAYS:
        raise JourneysError(f"--days {days}: expected 1 to {MAX_DAYS}")
    rules = load_and_validate(settings.project_dir)  # a rule error stops here, before anything is copied
    if journey_id not in rules.journeys:
        raise JourneysError(f"unknown journey '{journey_id}'; expected one of: {', '.join(sorted(rules.journeys)) or '(none)'}")
    journey = rules.journeys[journey_id]
    with scratch_copy(settings) as scratch:
        notes = ["on the current data: no new rows arrive; time-relative criteria move with T"]
        if not journey.enabled:
            set_journey_enabled(scratch, rules, journey_id, True)
            notes.append(f"{journey_id} is disabled; simulated as if enabled")
        prepare_warehouse(scratch)
        with _connected(scratch) as con:
            _check_entity(con, scratch, journey_id, journey.entity, entity_id)
            last = last_committed_as_of(con)
        start = as_of or last or utc_now()
        if last is not None and start < last:
            raise JourneysError(f"--as-of {start:%Y-%m-%d %H:%M:%S} is before the last committed run ({last:%Y-%m-%d %H:%M:%S}); "
                                "test-path goes forward from the current state. To replay the past use `journeys backtest`")
        sim = Simulation(scratch, journey_id, entity_id)
        timeline = []
        with progress(days + 1, f"test-path {journey_id} {entity_id}") as advance:
            for day in range(days + 1):
                timeline.append(sim.day(day, start + dt.timedelta(days=day)))
                advance()
                if sim.finished():
                    notes.append(f"stopped after day {day}: the enrollment ended, re-enrollment is 'never' and no action is open")
                    break
        report = {"journey": journey_id, "entity_type": journey.entity, "entity_id": entity_id, "from": start,
                  "days": days, "notes": notes, "timeline": timeline, "end": sim.end()}  # fmt: skip
    from journeys.trust.path_print import print_path

    print_path(report, echo)
    return report


@contextmanager
def _connected(settings: Settings):
    con = connect(settings)
    try:
        yield con
    finally:
        con.close()  # a run opens the file itself: never hold it across one


def _check_entity(con: duckdb.DuckDBPyConnection, scratch: Settings, journey_id: str, wanted: str, entity_id: str) -> None:
    """The entity exists in the source tables (as the sources file maps them) and has the journey's type."""
    relations = source_relations(scratch.project_dir)
    found = []
    for kind, table, key in (("user", "users", "user_id"), ("account", "accounts", "account_id")):
        schema, name = relations[table]
        sql = f"select count(*) from {quote(schema)}.{quote(name)} where cast({key} as varchar) = ?"
        if con.execute(sql, [entity_id]).fetchone()[0]:
            found.append(kind)
    if not found:
        raise JourneysError(f"no user or account '{entity_id}' in the source tables; test-path follows an existing {wanted}")
    if wanted not in found:
        raise JourneysError(f"'{entity_id}' is a{'n' if found[0] == 'account' else ''} {found[0]}, "
                            f"but journey {journey_id} enrolls {wanted}s")  # fmt: skip


class Simulation:
    """The copy, run day by day, and what changed for one entity in one journey at each run."""

    def __init__(self, scratch: Settings, journey_id: str, entity_id: str):
        self.scratch, self.journey_id, self.entity_id = scratch, journey_id, entity_id
        self.rules = load_and_validate(scratch.project_dir)
        self.journey = self.rules.journeys[journey_id]
        self.executors = scratch_executors(scratch, self.rules)
        self.dbt = DbtProject(scratch.project_dir, scratch.db_path)  # one parse for every day
        self.criteria = {sid: step.if_ if isinstance(step, IfStep) else step.wait_until.criteria
                         for step, _, sid in walk_steps(self.journey.actions, ())
                         if isinstance(step, (IfStep, WaitUntilStep))}  # fmt: skip
        self._explainer = None
        self.last: dict | None = None

    # ------------------------------------------------------------------- one day

    def day(self, day: int, as_of: dt.datetime) -> dict:
        before = self.snapshot()
        run(self.scratch, as_of=as_of, executors=self.executors, dbt=self.dbt, trace_steps=True)
        after = self.snapshot(as_of)
        simulated = None
        if day == 0 and self._member_not_entering(before, after):
            # Entry is a change of membership: an entity that already was a member would never enter. test-path
            # follows it from an entry now, as if it had just joined (every journey on those segments sees it).
            simulated = self._reason_not_entering(before, after)
            with _connected(self.scratch) as con:
                con.execute(f"delete from {S}.membership where entity_type = ? and entity_id = ? and segment_id in (select unnest(?))",
                            [self.journey.entity, self.entity_id, list(self.journey.entry.segments)])  # fmt: skip
            before_forced = self.snapshot()
            run(self.scratch, as_of=as_of, executors=self.executors, dbt=self.dbt, trace_steps=True)
            after = self.snapshot(as_of)
            before = {**before, "membership": before_forced["membership"], "known": True,
                      "tracked": set(self.journey.entry.segments)}  # fmt: skip
        with _connected(self.scratch) as con:
            record = self.describe(con, day, as_of, before, after)
        if simulated:
            record["simulated_entry"] = simulated
        self.last = after
        return record

    def snapshot(self, as_of: dt.datetime | None = None) -> dict:
        """The entity's rows in the copy's journey state (and, after a run, its membership at T)."""
        j, e = self.journey_id, self.entity_id
        with _connected(self.scratch) as con:
            cols = ("enrollment_id", "journey_version", "enrolled_at", "status", "variant", "split_path", "goal_achieved_at",
                    "ended_at", "end_reason", "cursor_step_id", "cursor_at")  # fmt: skip
            enrollments = {r[0]: dict(zip(cols, r)) for r in con.execute(
                f"select {', '.join(cols)} from {S}.enrollments where journey_id = ? and entity_id = ? order by enrolled_at", [j, e]).fetchall()}
            acols = ("action_key", "enrollment_id", "step_id", "action_type", "due_at", "status", "reason", "error", "ordinal",
                     "next_attempt_at")
            actions = {r[0]: dict(zip(acols, r)) for r in con.execute(
                f"select {', '.join(acols)} from {S}.actions where journey_id = ? and entity_id = ?", [j, e]).fetchall()}
            transitions = Counter(con.execute(
                f"select event, to_status, reason, occurred_at, enrollment_id from {S}.transitions where journey_id = ? and entity_id = ?",
                [j, e]).fetchall())  # fmt: skip
            membership = {r[0] for r in con.execute(
                f"select segment_id from {S}.membership where entity_type = ? and entity_id = ?", [self.journey.entity, e]).fetchall()}
            known = con.execute(f"select count(*) from {S}.journeys where journey_id = ? and enabled", [j]).fetchone()[0] > 0
            tracked = {r[0] for r in con.execute(f"select segment_id from {S}.journey_segments where journey_id = ?", [j]).fetchall()}
            members = set()
            if as_of is not None:  # segment_membership was just built at this T
                members = {r[0] for r in con.execute(
                    "select segment_id from main.segment_membership where entity_type = ? and entity_id = ?",
                    [self.journey.entity, e]).fetchall()}
        return {"enrollments": enrollments, "actions": actions, "transitions": transitions, "membership": membership,
                "known": known, "tracked": tracked, "members": members & set(self.journey.entry.segments)}  # fmt: skip

    # ------------------------------------------------------------------- entry

    def _entering(self, before: dict, after: dict) -> list[str]:
        """The entry segments the entity enters at this run, by the engine's rule (docs/runs.md, Entry is per segment)."""
        out = []
        for seg in self.journey.entry.segments:
            if seg not in after["members"]:
                continue
            if not before["known"] or seg not in before["tracked"]:
                if self.journey.entry.existing_members == "enroll":
                    out.append(seg)
            elif seg not in before["membership"]:
                out.append(seg)
        return out

    def _member_not_entering(self, before: dict, after: dict) -> bool:
        active = any(x["status"] == "active" for x in after["enrollments"].values())
        return bool(after["members"]) and not active and not self._entering(before, after)

    def _reason_not_entering(self, before: dict, after: dict) -> str:
        segs = ", ".join(sorted(after["members"]))
        if not before["known"] or not after["members"] <= before["tracked"]:
            return (f"a member of {segs} when the journey first ran on the copy (existing_members: "
                    f"{self.journey.entry.existing_members}); simulated as entering now")
        return f"already a member of {segs} at the previous run; simulated as entering now"

    def _not_enrolled_reason(self, before: dict) -> str:
        history = sorted(before["enrollments"].values(), key=lambda x: x["enrolled_at"])
        if any(x["status"] == "active" for x in history):
            return "already enrolled"
        mode = self.journey.entry.reenrollment
        last = history[-1]["enrolled_at"] if history else None
        if mode == "never" and last is not None:
            return f"re-enrollment is 'never' and it was enrolled at {last:%Y-%m-%d %H:%M}"
        if not isinstance(mode, str) and last is not None:
            return f"re-enrollment waits {mode.cooldown} after the enrollment at {last:%Y-%m-%d %H:%M}"
        return "not enrolled by the engine"

    # ------------------------------------------------------------------- the day's record

    def describe(self, con: duckdb.DuckDBPyConnection, day: int, as_of: dt.datetime, before: dict, after: dict) -> dict:
        events = sorted((after["transitions"] - before["transitions"]).elements(), key=lambda t: (t[3], t[0]))
        entering = self._entering(before, after)
        record: dict = {
            "day": day, "as_of": as_of,
            "entry": {"segments": {s: s in after["members"] for s in self.journey.entry.segments}, "entering": entering},
            "events": [{"event": ev, "to_status": to, "reason": why, "at": at} for ev, to, why, at, _ in events],
            "steps": [], "actions": [],
        }  # fmt: skip
        if entering and not any(ev[0] in ("enrolled", "suppressed") for ev in events):
            record["not_enrolled"] = self._not_enrolled_reason(before)
        touched = {ev[4] for ev in events if ev[4]}
        current = [x for x in after["enrollments"].values() if x["status"] == "active" or x["enrollment_id"] in touched]
        if current:
            enrollment = current[-1]
            record["enrollment"] = self._enrollment(con, enrollment, new=enrollment["enrollment_id"] not in before["enrollments"])
            self._steps(con, record, as_of, enrollment)
        for key, row in sorted(after["actions"].items(), key=lambda kv: (kv[1]["due_at"], kv[1]["ordinal"])):
            old = before["actions"].get(key)
            if old is None or (old["status"], old["reason"]) != (row["status"], row["reason"]):
                record["actions"].append({"step_id": row["step_id"], "action_type": row["action_type"], "due_at": row["due_at"],
                                          "status": row["status"], "reason": row["reason"], "error": row["error"],
                                          "new": old is None})  # fmt: skip
        return record

    def _enrollment(self, con, e: dict, *, new: bool) -> dict:
        out = {k: e[k] for k in ("enrollment_id", "enrolled_at", "status", "variant", "split_path", "goal_achieved_at",
                                 "ended_at", "end_reason")}  # fmt: skip
        out.update(next_step=e["cursor_step_id"], next_at=e["cursor_at"], new=new)
        if new and self.journey.entry.holdout:
            out["holdout_bucket"] = self._bucket(con, e["enrolled_at"], "holdout")
        return out

    def _steps(self, con, record: dict, as_of: dt.datetime, e: dict) -> None:
        """The steps the engine's stepper took for the enrollment at this run, and what decided each
        (journey_state.step_trace, written by the run itself), plus a wait_until it is parked at."""
        rows = con.execute(
            f"""select step_id, kind, reached_at, action_type, wait_seconds, params, holds, value_at, date_target,
                       matched_in_time, date_is_past, date_passed, split_path, bucket, to_at
                from {S}.step_trace where run_id = ? and enrollment_id = ? order by pass""",
            [run_id_for(as_of), e["enrollment_id"]],
        ).fetchall() if self._traced(con) else []
        steps = [_step_record(dict(zip(TRACE_COLUMNS, r))) for r in rows]
        parked = con.execute(
            f"""select wait_seconds from {S}.journey_steps
                where journey_id = ? and version = ? and step_id = ? and kind = 'wait_until'""",
            [self.journey_id, e["journey_version"], e["cursor_step_id"]],
        ).fetchone() if e["status"] == "active" and e["cursor_step_id"] and e["cursor_at"] <= as_of else None
        if parked:  # the stepper leaves an enrollment whose wait_until neither matched nor timed out where it is
            steps.append({"step_id": e["cursor_step_id"], "kind": "wait_until", "reached_at": e["cursor_at"], "verdict": False,
                          "deadline": e["cursor_at"] + dt.timedelta(seconds=parked[0]), "outcome": "waiting"})  # fmt: skip
        for step in steps:
            if step["step_id"] in self.criteria and step["kind"] in ("if", "wait_until"):
                step["criteria"] = self._explain(con, self.criteria[step["step_id"]])
        record["steps"] = steps

    @staticmethod
    def _traced(con) -> bool:
        return con.execute(
            f"select count(*) from information_schema.tables where table_schema = '{S}' and table_name = 'step_trace'"
        ).fetchone()[0] > 0

    def _bucket(self, con, enrolled_at: dt.datetime, salt: str | None = None) -> float:
        sql = "select " + bucket_sql("?", "?", "?", "cast(? as timestamp)", "?" if salt else None)
        params = [self.journey_id, self.journey.entity, self.entity_id, enrolled_at] + ([salt] if salt else [])
        return float(con.execute(sql, params).fetchone()[0])

    def _explain(self, con, tree) -> dict:
        """The criteria leaf by leaf at this run's T, compiled as the condition model compiles them (explain.py)."""
        from journeys.compiler.features import collect_features
        from journeys.contracts import load_contracts
        from journeys.trust.explain import Explainer

        if self._explainer is None:
            self._explainer = (collect_features(self.rules), load_contracts(self.scratch.project_dir))
        return Explainer(con, self.rules, *self._explainer).explain(tree, self.journey.entity, self.entity_id).to_json()

    # ------------------------------------------------------------------- the end

    def finished(self) -> bool:
        """Nothing more can happen to the entity in this journey: ended, never re-enrolled, nothing open."""
        state = self.last or {}
        enrollments = list(state.get("enrollments", {}).values())
        if not enrollments or any(x["status"] == "active" for x in enrollments) or self.journey.entry.reenrollment != "never":
            return False
        return not any(a["status"] in ("pending", "sending", "deferred") or (a["status"] == "failed" and a["next_attempt_at"])
                       for a in state["actions"].values())

    def end(self) -> dict:
        enrollments = sorted((self.last or {}).get("enrollments", {}).values(), key=lambda x: x["enrolled_at"])
        if not enrollments:
            return {"status": "never enrolled"}
        e = enrollments[-1]
        out = {"status": e["status"], "enrolled_at": e["enrolled_at"], "goal_achieved_at": e["goal_achieved_at"]}
        if e["status"] == "active":
            out.update(next_step=e["cursor_step_id"], next_at=e["cursor_at"])
        else:
            out.update(ended_at=e["ended_at"], end_reason=e["end_reason"])
        return out


TRACE_COLUMNS = ("step_id", "kind", "reached_at", "action_type", "wait_seconds", "params", "holds", "value_at", "date_target",
                 "matched_in_time", "date_is_past", "date_passed", "split_path", "bucket", "to_at")


def _step_record(t: dict) -> dict:
    """One traced step as test-path reports it: the step, and the branch or outcome the stepper chose, with why."""
    step = {"step_id": t["step_id"], "kind": t["kind"], "reached_at": t["reached_at"]}
    kind = t["kind"]
    if kind == "action":
        step["action_type"] = t["action_type"]
    elif kind == "wait":
        step["next_at"] = t["to_at"]
    elif kind == "if":
        step.update(verdict=t["holds"], branch="then" if t["holds"] else "else")
    elif kind == "wait_until":
        step.update(verdict=t["holds"], deadline=t["reached_at"] + dt.timedelta(seconds=t["wait_seconds"]),
                    outcome="matched" if t["matched_in_time"] else "timed_out")  # fmt: skip
    elif kind == "wait_until_date":
        params = json.loads(t["params"]) if t["params"] else {}
        outcome = "exit" if t["date_passed"] else "continue" if t["date_is_past"] else "wait"
        step.update(property=params.get("property"), value=t["value_at"], target=t["date_target"], outcome=outcome)
    elif kind == "split":
        step.update(path=t["split_path"], bucket=float(t["bucket"]))
    return step

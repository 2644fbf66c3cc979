"""One run's state transitions (SPEC §4.1 steps 1-5), as SQL, inside the caller's transaction.

Each step first computes the rows it changes into a temp table, then applies them and writes one
transition row per change, so the log is exactly what happened.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import duckdb

from journeys.engine.ledger import bucket_sql, cancel_open_actions, content_key_sql
from journeys.engine.program import first_step_id, flatten, journey_version
from journeys.engine.stepper import advance_enrollments
from journeys.rules.load import RuleSet
from journeys.rules.model import Cooldown, duration_seconds

S = "journey_state"

@dataclass
class TransitionCounts:
    entered: dict[str, int] = field(default_factory=dict)
    enrolled: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    unenrolled: dict[str, int] = field(default_factory=dict)
    goal_achieved: dict[str, int] = field(default_factory=dict)
    completed: dict[str, int] = field(default_factory=dict)
    actions_recorded: int = 0


class RunTransitions:
    """Applies §4.1 at logical time `as_of` for `run_id`; call the steps in order, in one transaction."""

    def __init__(self, con: duckdb.DuckDBPyConnection, rules: RuleSet, as_of: dt.datetime, run_id: str, *, trace_steps: bool = False):
        self.con, self.rules, self.as_of, self.run_id = con, rules, as_of, run_id
        self.trace_steps = trace_steps  # keep every step the stepper takes (journey_state.step_trace)
        self.counts = TransitionCounts()

    def apply_all(self) -> TransitionCounts:
        self.sync_journeys()
        self.enter_and_enroll()
        self.unenroll_from_other_journeys()
        self.exit_blacklisted()
        self.exit_left_entry()
        self.reach_goals()
        advance_enrollments(self)
        self.snapshot_membership()
        return self.counts

    # ----------------------------------------------------------------------- helpers

    def sql(self, statement: str, params: list | None = None):
        return self.con.execute(statement, params or [])

    def count_by_journey(self, table: str) -> dict[str, int]:
        return dict(self.sql(f"select journey_id, count(*) from {table} group by journey_id order by 1").fetchall())

    def log(self, table: str, event: str, from_status: str | None, to_status: str | None, reason_sql: str, at_sql: str = "?") -> None:
        """One transition row per row of `table` (journey_id, entity_type, entity_id, enrollment_id)."""
        params = [self.run_id, self.as_of, event, from_status, to_status]
        at_params = [self.as_of] if at_sql == "?" else []
        self.sql(
            f"""insert into {S}.transitions (run_id, as_of, journey_id, entity_type, entity_id, enrollment_id,
                                             event, from_status, to_status, reason, occurred_at)
                select ?, ?, t.journey_id, t.entity_type, t.entity_id, t.enrollment_id, ?, ?, ?, {reason_sql}, {at_sql}
                from {table} as t""",
            params + at_params,
        )

    def end_enrollments(self, table: str, status: str, reason_sql: str, event: str) -> None:
        """End the active enrollments listed in `table`: status, reason, transitions, cancelled actions."""
        self.sql(
            f"""update {S}.enrollments as e set status = ?, ended_at = ?, end_reason = {reason_sql}
                from {table} as t where e.enrollment_id = t.enrollment_id and e.status = 'active'""",
            [status, self.as_of],
        )
        self.log(table, event, "active", status, reason_sql)
        cancel_open_actions(self.con, table)

    # ----------------------------------------------------------------------- 0. journeys and programs

    def sync_journeys(self) -> None:
        """Record each journey's version and program; note the first run after (re-)enabling; stop disabled ones."""
        self.sql("create or replace temp table _jny (journey_id varchar, entity_type varchar, enabled boolean, "
                 "first_run boolean, existing_members varchar, reenrollment varchar, cooldown_seconds bigint, "
                 "version varchar, first_step varchar, on_goal varchar, goal_within_seconds bigint, holdout double, "
                 "on_leave_entry boolean)")  # fmt: skip
        self.sql("create or replace temp table _jny_segments (journey_id varchar, segment_id varchar)")
        self.sql("create or replace temp table _jny_unenroll (journey_id varchar, other_journey_id varchar)")
        known = dict(self.sql(f"select journey_id, enabled from {S}.journeys").fetchall())
        for jid, journey in sorted(self.rules.journeys.items()):
            version = journey_version(journey)
            reenroll = journey.entry.reenrollment
            cooldown = duration_seconds(reenroll.cooldown) if isinstance(reenroll, Cooldown) else None
            first_run = journey.enabled and not known.get(jid, False)
            self.sql(
                "insert into _jny values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [jid, journey.entity, journey.enabled, first_run, journey.entry.existing_members,
                 "cooldown" if cooldown else reenroll, cooldown, version, first_step_id(journey),
                 journey.goal.on_goal if journey.goal else None,
                 duration_seconds(journey.goal.within) if journey.goal and journey.goal.within else None,
                 journey.entry.holdout, bool(journey.exit and journey.exit.on_leave_entry)],
            )  # fmt: skip
            for seg in journey.entry.segments:
                self.sql("insert into _jny_segments values (?, ?)", [jid, seg])
            for other in journey.exit.unenroll_from if journey.exit else ():
                self.sql("insert into _jny_unenroll values (?, ?)", [jid, other])
            self._store_program(jid, version, journey)
            self.sql(
                f"""insert into {S}.journeys values (?, ?, ?, ?, ?, ?)
                    on conflict (journey_id) do update set entity_type = excluded.entity_type, enabled = excluded.enabled,
                        version = excluded.version, updated_at = excluded.updated_at,
                        enabled_at = case when excluded.enabled and not {S}.journeys.enabled then excluded.enabled_at
                                          else {S}.journeys.enabled_at end""",
                [jid, journey.entity, journey.enabled, version, self.as_of if journey.enabled else None, self.as_of],
            )
        # A journey disabled or deleted stops: its active enrollments end and their actions are cancelled.
        self.sql(
            f"""create or replace temp table _stopped as
                select e.journey_id, e.entity_type, e.entity_id, e.enrollment_id,
                       case when j.journey_id is null then 'journey_removed' else 'journey_disabled' end as reason
                from {S}.enrollments as e left join _jny as j using (journey_id)
                where e.status = 'active' and (j.journey_id is null or not j.enabled)"""
        )
        self.end_enrollments("_stopped", "unenrolled", "t.reason", "unenrolled")
        self.counts.unenrolled.update(self.count_by_journey("_stopped"))
        self.sql(
            f"update {S}.journeys set enabled = false, updated_at = ? where journey_id not in (select journey_id from _jny)",
            [self.as_of],
        )

    def _store_program(self, jid: str, version: str, journey) -> None:
        exists = self.sql(f"select count(*) from {S}.journey_steps where journey_id = ? and version = ?", [jid, version]).fetchone()[0]
        if exists or not journey.actions:
            return
        program = flatten(journey)
        rows = [
            [jid, version, s.step_id, s.ordinal, s.kind, s.action_type, s.wait_seconds, s.next_step_id,
             s.then_step_id, s.else_step_id, json.dumps(s.params) if s.params is not None else None]
            for s in program.steps
        ]  # fmt: skip
        self.con.executemany(f"insert into {S}.journey_steps values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        routes = [[jid, version, r.step_id, r.path, r.lower, r.upper, r.first_step_id] for r in program.routes]
        if routes:
            self.con.executemany(f"insert into {S}.journey_split_routes values (?, ?, ?, ?, ?, ?, ?)", routes)

    # ----------------------------------------------------------------------- 1-2. entry and enrollment

    def enter_and_enroll(self) -> None:
        # 1. Entering: a member now that was not one at the previous run. On a journey's first run
        #    after being enabled (or the first run at which the journey tracks the segment), current
        #    members enter only with existing_members: enroll.
        self.sql(
            f"""create or replace temp table _entering as
                select distinct js.journey_id, m.entity_type, m.entity_id
                from _jny_segments as js
                inner join _jny as j on j.journey_id = js.journey_id and j.enabled
                inner join main.segment_membership as m on m.segment_id = js.segment_id
                left join {S}.journey_segments as ts on ts.journey_id = js.journey_id and ts.segment_id = js.segment_id
                left join {S}.membership as prev on prev.segment_id = m.segment_id and prev.entity_id = m.entity_id
                where case when j.first_run or ts.segment_id is null then j.existing_members = 'enroll'
                           else prev.entity_id is null end"""
        )
        self.counts.entered = self.count_by_journey("_entering")
        # 2. Enrollment unless already active, barred by reenrollment, or blacklisted (suppressed).
        self.sql(
            f"""create or replace temp table _candidates as
                with history as (
                    select journey_id, entity_id,
                           bool_or(status = 'active') as is_active,
                           count(*) as times,
                           max(enrolled_at) as last_enrolled_at
                    from {S}.enrollments
                    group by journey_id, entity_id
                )
                select e.journey_id, e.entity_type, e.entity_id, cast(null as varchar) as enrollment_id,
                       x.entity_id is not null as blacklisted
                from _entering as e
                inner join _jny as j using (journey_id)
                left join history as h on h.journey_id = e.journey_id and h.entity_id = e.entity_id
                left join main.journey_exit_matches as x
                    on x.journey_id = e.journey_id and x.entity_id = e.entity_id
                where not coalesce(h.is_active, false)
                  and (h.times is null
                       or j.reenrollment = 'after_exit'
                       or (j.reenrollment = 'cooldown'
                           and h.last_enrolled_at + to_seconds(j.cooldown_seconds) <= ?))"""
            , [self.as_of])  # fmt: skip
        self.sql("create or replace temp table _suppressed as select * from _candidates where blacklisted")
        self.log("_suppressed", "suppressed", None, None, "'blacklist'")
        self.counts.suppressed = self.count_by_journey("_suppressed")

        enrollment_key = content_key_sql("c.journey_id", "c.entity_type", "c.entity_id", "cast(? as timestamp)")
        self.sql(
            f"""create or replace temp table _enrolled as
                select c.journey_id, c.entity_type, c.entity_id, {enrollment_key} as enrollment_id,
                       j.version, j.first_step,
                       case when {bucket_sql("c.journey_id", "c.entity_type", "c.entity_id", "cast(? as timestamp)", "'holdout'")} < j.holdout
                            then 'holdout' else 'treated' end as variant
                from _candidates as c inner join _jny as j using (journey_id)
                where not c.blacklisted""",
            [self.as_of, self.as_of],
        )
        self.sql(
            f"""insert into {S}.enrollments (enrollment_id, journey_id, journey_version, entity_type, entity_id,
                                             enrolled_at, status, variant, cursor_step_id, cursor_at, run_id)
                select enrollment_id, journey_id, version, entity_type, entity_id, ?, 'active', variant, first_step, ?, ?
                from _enrolled
                on conflict do nothing""",
            [self.as_of, self.as_of, self.run_id],
        )
        self.log("_enrolled", "enrolled", None, "active", "null")
        self.counts.enrolled = self.count_by_journey("_enrolled")

    # ----------------------------------------------------------------------- 3. unenroll from other journeys

    def unenroll_from_other_journeys(self) -> None:
        self.sql(
            f"""create or replace temp table _unenrolled_by as
                select distinct on (e.enrollment_id) e.journey_id, e.entity_type, e.entity_id, e.enrollment_id,
                       'unenrolled_by:' || n.journey_id as reason
                from _enrolled as n
                inner join _jny_unenroll as u on u.journey_id = n.journey_id
                inner join {S}.enrollments as e
                    on e.journey_id = u.other_journey_id and e.entity_id = n.entity_id and e.status = 'active'
                order by e.enrollment_id, n.journey_id"""
        )
        self.end_enrollments("_unenrolled_by", "unenrolled", "t.reason", "unenrolled")
        _add(self.counts.unenrolled, self.count_by_journey("_unenrolled_by"))

    # ----------------------------------------------------------------------- 4. blacklist

    def exit_blacklisted(self) -> None:
        self.sql(
            f"""create or replace temp table _blacklisted as
                select e.journey_id, e.entity_type, e.entity_id, e.enrollment_id
                from {S}.enrollments as e
                inner join main.journey_exit_matches as x on x.journey_id = e.journey_id and x.entity_id = e.entity_id
                where e.status = 'active'"""
        )
        self.end_enrollments("_blacklisted", "unenrolled", "'blacklist'", "unenrolled")
        _add(self.counts.unenrolled, self.count_by_journey("_blacklisted"))

    def exit_left_entry(self) -> None:
        """exit.on_leave_entry: an enrollment ends (reason left_entry) once its entity is in none of the entry segments."""
        if not any(j.exit and j.exit.on_leave_entry for j in self.rules.journeys.values() if j.enabled):
            return  # the statement scans every enrollment and all of journey_eligible
        self.sql(
            f"""create or replace temp table _left_entry as
                select e.journey_id, e.entity_type, e.entity_id, e.enrollment_id
                from {S}.enrollments as e
                inner join _jny as j on j.journey_id = e.journey_id and j.on_leave_entry
                left join main.journey_eligible as el on el.journey_id = e.journey_id and el.entity_id = e.entity_id
                where e.status = 'active' and el.entity_id is null"""
        )
        self.end_enrollments("_left_entry", "unenrolled", "'left_entry'", "unenrolled")
        _add(self.counts.unenrolled, self.count_by_journey("_left_entry"))

    # ----------------------------------------------------------------------- 5. goal

    def reach_goals(self) -> None:
        self.sql(
            f"""create or replace temp table _goal as
                select e.journey_id, e.entity_type, e.entity_id, e.enrollment_id, j.on_goal
                from {S}.enrollments as e
                inner join _jny as j using (journey_id)
                inner join main.journey_goal_matches as g on g.journey_id = e.journey_id and g.entity_id = e.entity_id
                where e.status = 'active' and e.goal_achieved_at is null
                  and (j.goal_within_seconds is null or ? <= e.enrolled_at + to_seconds(j.goal_within_seconds))""",
            [self.as_of],
        )
        self.sql(
            f"update {S}.enrollments as e set goal_achieved_at = ? from _goal as g where e.enrollment_id = g.enrollment_id",
            [self.as_of],
        )
        self.sql("create or replace temp table _goal_continue as select * from _goal where on_goal = 'continue'")
        self.log("_goal_continue", "goal_achieved", "active", "active", "'goal'")
        self.sql("create or replace temp table _goal_exit as select * from _goal where on_goal = 'exit'")
        self.end_enrollments("_goal_exit", "goal_achieved", "'goal'", "goal_achieved")
        self.counts.goal_achieved = self.count_by_journey("_goal")

    # ----------------------------------------------------------------------- membership for the next diff

    def snapshot_membership(self) -> None:
        """Store this run's membership as the previous side of the next run's diff.

        Replacing the table (DDL is transactional in DuckDB) is cheaper than a delete + insert of the
        changes against a primary-key index of every membership row; the diff is a hash join."""
        self.sql(
            f"""create or replace table {S}.membership as
                select segment_id, entity_type, entity_id from main.segment_membership"""
        )
        # A segment removed from a journey and added back later is new to it again.
        self.sql(
            f"""delete from {S}.journey_segments as t
                where not exists (select 1 from _jny_segments as js
                                  where js.journey_id = t.journey_id and js.segment_id = t.segment_id)"""
        )
        self.sql(
            f"""insert into {S}.journey_segments
                select distinct journey_id, segment_id, cast(? as timestamp) from _jny_segments
                on conflict do nothing""",
            [self.as_of],
        )


def end_enrollment(con: duckdb.DuckDBPyConnection, enrollment_id: str, reason: str, as_of: dt.datetime, run_id: str) -> None:
    """End one active enrollment outside the run's transition phase (a webhook with `then: abort`)."""
    con.execute(
        f"""create or replace temp table _ended_now as
            select journey_id, entity_type, entity_id, enrollment_id from {S}.enrollments
            where enrollment_id = ? and status = 'active'""",
        [enrollment_id],
    )
    con.execute(
        f"update {S}.enrollments set status = 'unenrolled', ended_at = ?, end_reason = ? where enrollment_id in (select enrollment_id from _ended_now)",
        [as_of, reason],
    )
    con.execute(
        f"""insert into {S}.transitions (run_id, as_of, journey_id, entity_type, entity_id, enrollment_id,
                                         event, from_status, to_status, reason, occurred_at)
            select ?, ?, journey_id, entity_type, entity_id, enrollment_id, 'unenrolled', 'active', 'unenrolled', ?, ?
            from _ended_now""",
        [run_id, as_of, reason, as_of],
    )
    cancel_open_actions(con, "_ended_now")


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value

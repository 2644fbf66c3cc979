"""Advance every active enrollment through its program as far as T allows (SPEC §4.2, §9), in SQL.

Each pass moves every enrollment whose next step is reached at or before T by one step: an action
is recorded in the ledger, a wait moves the reach time, an `if` takes the branch its condition
gives at this run, a `wait_until` either matches now, times out, or stays parked, a
`wait_until_date` reads the entity's date, a `split` routes by a stable hash. Passes repeat until
nothing is due, so a late run catches up in order.
"""

from __future__ import annotations

from journeys.engine.ledger import bucket_sql, record_reached_actions

S = "journey_state"
CURSOR_COLUMNS = "enrollment_id, journey_id, journey_version, entity_type, entity_id, enrolled_at, variant, cursor_step_id, cursor_at"
MAX_PASSES = 10_000  # a program is finite and acyclic; this only guards against a bug looping forever


def advance_enrollments(run) -> None:
    """`run` is the RunTransitions of this run (connection, T, run id, counts)."""
    # Pass 1 reads the active enrollments due by T; pass k+1 only those that moved in pass k and are
    # still due (an enrollment that did not move cannot move later in the same run).
    run.sql(
        f"""create or replace temp table _cursor as
            select {CURSOR_COLUMNS} from {S}.enrollments
            where status = 'active' and cursor_step_id is not null and cursor_at <= ?""",
        [run.as_of],
    )
    for n in range(MAX_PASSES):
        run.sql(REACHED_SQL.format(S=S, bucket=bucket_sql("e.journey_id", "e.entity_type", "e.entity_id", "e.enrolled_at")),
                [run.as_of, run.as_of, run.as_of])  # fmt: skip
        if run.sql("select count(*) from _reached").fetchone()[0] == 0:
            break
        if run.trace_steps:
            _trace(run, n + 1)
        run.counts.actions_recorded += record_reached_actions(run.con, "_reached", run.run_id)
        run.sql(
            f"""update {S}.enrollments as e
                set cursor_step_id = r.to_step_id, cursor_at = r.to_at,
                    split_path = coalesce(r.split_path, e.split_path)
                from _reached as r where e.enrollment_id = r.enrollment_id and not r.date_passed"""
        )
        run.sql("create or replace temp table _date_passed as select * from _reached where date_passed")
        run.end_enrollments("_date_passed", "unenrolled", "'date_passed'", "unenrolled")
        run.sql(
            """create or replace temp table _cursor as
               select enrollment_id, journey_id, journey_version, entity_type, entity_id, enrolled_at, variant,
                      to_step_id as cursor_step_id, to_at as cursor_at
               from _reached where not date_passed and to_step_id is not null and to_at <= ?""",
            [run.as_of],
        )
    else:
        raise RuntimeError("the stepper did not converge; a journey program has a cycle")

    # Past the last step (and any final wait): completed at the moment the end was reached.
    run.sql(
        f"""create or replace temp table _completed as
            select journey_id, entity_type, entity_id, enrollment_id, cursor_at as completed_at
            from {S}.enrollments
            where status = 'active' and cursor_step_id is null and cursor_at <= ?""",
        [run.as_of],
    )
    run.sql(
        f"""update {S}.enrollments as e set status = 'completed', ended_at = c.completed_at, end_reason = 'completed'
            from _completed as c where e.enrollment_id = c.enrollment_id"""
    )
    run.log("_completed", "completed", "active", "completed", "'completed'", at_sql="t.completed_at")
    run.counts.completed = run.count_by_journey("_completed")


def _trace(run, pass_number: int) -> None:
    """Keep the pass's rows (every step reached, with what decided it) in journey_state.step_trace.

    Only for runs that ask (`run(trace_steps=True)`: test-path on a scratch copy), so that a tool can say which
    branch was taken and why from what the stepper itself computed, not from a second implementation of it."""
    run.sql(f"create table if not exists {S}.step_trace as select ''::varchar as run_id, 0 as pass, * from _reached where false")
    run.sql(f"insert into {S}.step_trace by name select ? as run_id, ? as pass, * from _reached", [run.run_id, pass_number])


# One pass over _cursor (active, due by T). Parameters: T (wait_until window), T (wait_until then-time), T (parked test).
REACHED_SQL = """
create or replace temp table _reached as
with due as (
    select e.enrollment_id, e.journey_id, e.journey_version, e.entity_type, e.entity_id, e.enrolled_at, e.variant,
           e.cursor_step_id as step_id, e.cursor_at as reached_at,
           s.ordinal, s.kind, s.action_type, s.params, s.wait_seconds, s.next_step_id, s.then_step_id, s.else_step_id,
           c.entity_id is not null as holds,
           c.value_at,
           c.value_at + to_seconds(s.wait_seconds) as date_target,
           {bucket} as bucket
    from _cursor as e
    inner join {S}.journey_steps as s
        on s.journey_id = e.journey_id and s.version = e.journey_version and s.step_id = e.cursor_step_id
    left join main.journey_condition_matches as c
        on c.journey_id = e.journey_id and c.step_id = e.cursor_step_id and c.entity_id = e.entity_id
),
routed as (
    select d.*, r.path as split_path, r.first_step_id as split_to,
           d.kind = 'wait_until' and d.holds and ?1 <= d.reached_at + to_seconds(d.wait_seconds) as matched_in_time,
           d.kind = 'wait_until_date' and (d.date_target is null or d.date_target < d.reached_at) as date_is_past
    from due as d
    left join {S}.journey_split_routes as r
        on d.kind = 'split' and r.journey_id = d.journey_id and r.version = d.journey_version and r.step_id = d.step_id
        and d.bucket >= r.lower_bound and d.bucket < r.upper_bound
)
select *,
       date_is_past and json_extract_string(params, '$.if_past') = 'exit' as date_passed,
       case kind
           when 'if' then case when holds then then_step_id else else_step_id end
           when 'wait_until' then case when matched_in_time then then_step_id else next_step_id end
           when 'split' then split_to
           else next_step_id
       end as to_step_id,
       case kind
           when 'wait' then reached_at + to_seconds(wait_seconds)
           when 'wait_until' then case when matched_in_time then ?2 else reached_at + to_seconds(wait_seconds) end
           when 'wait_until_date' then case when date_is_past then reached_at else date_target end
           else reached_at
       end as to_at
from routed
-- a wait_until that has neither matched nor timed out stays parked until a later run
where not (kind = 'wait_until' and not matched_in_time and ?3 < reached_at + to_seconds(wait_seconds))
"""

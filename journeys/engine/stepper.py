"""Advance every active enrollment through its program as far as T allows (SPEC §4.2), in SQL.

Each pass moves every enrollment whose next step is reached at or before T by one step: an action
is recorded pending in the ledger, a wait moves the reach time, an `if` takes the branch its
condition gives at this run. Passes repeat until nothing is due, so a late run catches up in order.
"""

from __future__ import annotations

from journeys.engine.ledger import record_reached_actions

S = "journey_state"
MAX_PASSES = 10_000  # a program is finite and acyclic; this only guards against a bug looping forever


def advance_enrollments(run) -> None:
    """`run` is the RunTransitions of this run (connection, T, run id, counts)."""
    for _ in range(MAX_PASSES):
        run.sql(
            f"""create or replace temp table _reached as
                select e.enrollment_id, e.journey_id, e.entity_type, e.entity_id, e.enrolled_at,
                       e.cursor_step_id as step_id, e.cursor_at as reached_at,
                       s.ordinal, s.kind, s.action_type, s.params, s.wait_seconds,
                       case s.kind
                           when 'if' then case when c.entity_id is not null then s.then_step_id else s.else_step_id end
                           else s.next_step_id
                       end as to_step_id,
                       case when s.kind = 'wait' then e.cursor_at + to_seconds(s.wait_seconds) else e.cursor_at end as to_at
                from {S}.enrollments as e
                inner join {S}.journey_steps as s
                    on s.journey_id = e.journey_id and s.version = e.journey_version and s.step_id = e.cursor_step_id
                left join main.journey_condition_matches as c
                    on c.journey_id = e.journey_id and c.step_id = e.cursor_step_id and c.entity_id = e.entity_id
                where e.status = 'active' and e.cursor_step_id is not null and e.cursor_at <= ?""",
            [run.as_of],
        )
        if run.sql("select count(*) from _reached").fetchone()[0] == 0:
            break
        run.counts.actions_recorded += record_reached_actions(run.con, "_reached", run.run_id)
        run.sql(
            f"""update {S}.enrollments as e set cursor_step_id = r.to_step_id, cursor_at = r.to_at
                from _reached as r where e.enrollment_id = r.enrollment_id"""
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
    run.counts.completed = run._count_by_journey("_completed")

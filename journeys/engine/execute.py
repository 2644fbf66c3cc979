"""Execute the actions that came due, after the run's transitions are committed.

Internal effects (attributes, tasks, the email outbox) are written in one transaction together with
their ledger rows: all or nothing. External effects (SMTP) go one by one: `sending` is committed
before the message leaves and `done` after the server accepted it, so a crash in between re-sends
that one message with the same Message-ID (the documented duplicate window).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

import duckdb

from actions.base import ActionContext, ActionFailed, ActionSkipped
from journeys.engine import faults
from journeys.engine.entities import EntityDirectory
from journeys.engine.gates import SendGates
from journeys.engine.ledger import (DueAction, due_actions, mark_deferred_many, mark_done, mark_done_many, mark_failed, mark_sending,
                                    mark_skipped)  # fmt: skip
from journeys.engine.transitions import end_enrollment
from journeys.rules.settings import ProjectSettings


@dataclass
class ExecutionCounts:
    done: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    deferred: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def execute_due_actions(con: duckdb.DuckDBPyConnection, as_of: dt.datetime, executors: list, journey_names: dict[str, str],
                        held_journeys: set[str] = frozenset(), settings: ProjectSettings | None = None,
                        run_id: str = "") -> ExecutionCounts:  # fmt: skip
    actions = [a for a in due_actions(con, as_of) if a.journey_id not in held_journeys]
    counts = ExecutionCounts()
    if not actions:
        return counts
    by_type = {t: executor for executor in executors for t in executor.action_types}
    directory = EntityDirectory(con, {(a.entity_type, a.entity_id) for a in actions})
    ctx = ActionContext(as_of, directory, journey_names, deliveries=LedgerDeliveries(con, as_of))
    gates = SendGates(con, settings or ProjectSettings(), as_of, directory, actions)
    internal = [a for a in actions if by_type[a.action_type].is_internal(a)]
    external = [a for a in actions if not by_type[a.action_type].is_internal(a)]
    ended: set[str] = set()  # enrollments ended by an aborting action during this run
    deferrals: list[tuple[str, str]] = []  # (action key, reason), written together

    if internal:
        done: list[str] = []  # marked done together, in the transaction that writes their effects
        con.execute("begin")
        try:
            for n, action in enumerate(internal):
                if _deferred(deferrals, gates, action, counts):
                    continue
                try:
                    by_type[action.action_type].apply(con, action, ctx)
                    done.append(action.action_key)
                    counts.done[action.action_type] += 1
                    gates.count(action)
                except ActionSkipped as e:
                    mark_skipped(con, action.action_key, str(e), as_of)
                    counts.skipped[action.action_type] += 1
                except Exception as e:  # raised before the executor wrote anything: that action fails, not the batch
                    failure = e if isinstance(e, ActionFailed) else ActionFailed(f"{type(e).__name__}: {e}")
                    _record_failure(con, action, failure, as_of, run_id, counts, ended, count_attempt=True)
                if n == 0:
                    faults.point("mid_internal_actions")
            ctx.rows.flush(con)
            mark_done_many(con, done, as_of)
            mark_deferred_many(con, deferrals)
            deferrals.clear()
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise

    faults.point("after_internal_actions")
    for action in external:
        if action.enrollment_id in ended:
            continue  # an abort earlier in this run ended the enrollment and cancelled this action
        if _deferred(deferrals, gates, action, counts):
            continue
        mark_sending(con, action.action_key)  # autocommit: durable before the message leaves
        faults.point("before_external_delivery")
        try:
            by_type[action.action_type].deliver(action, ctx)
        except ActionSkipped as e:
            mark_skipped(con, action.action_key, str(e), as_of)
            counts.skipped[action.action_type] += 1
            continue
        except Exception as e:  # ActionFailed, or a bug in an executor: recorded, retried, never wedged in `sending`
            failure = e if isinstance(e, ActionFailed) else ActionFailed(f"{type(e).__name__}: {e}")
            _record_failure(con, action, failure, as_of, run_id, counts, ended, count_attempt=False)
            continue
        faults.point("after_external_delivery")
        mark_done(con, action.action_key, as_of, count_attempt=False)
        counts.done[action.action_type] += 1
        gates.count(action)
    mark_deferred_many(con, deferrals)
    return counts


def _deferred(deferrals: list[tuple[str, str]], gates: SendGates, action: DueAction, counts: ExecutionCounts) -> bool:
    """Held back by a send gate: recorded in `deferrals`, written in one statement (the action stays due either way)."""
    reason = gates.deferral(action)
    if reason is None:
        return False
    deferrals.append((action.action_key, reason))
    counts.deferred[action.action_type] += 1
    return True


def _record_failure(con, action: DueAction, failure: ActionFailed, as_of: dt.datetime, run_id: str,
                    counts: ExecutionCounts, ended: set[str], *, count_attempt: bool) -> None:  # fmt: skip
    """Email retries back off; a webhook retries on each of the next `retry` runs, then skips or aborts."""
    policy = action.params.get("on_failure") if action.action_type == "webhook" else None
    if policy is None:
        mark_failed(con, action.action_key, str(failure), as_of, count_attempt=count_attempt, permanent=failure.permanent)
    else:
        attempts = action.attempts + 1  # this attempt (mark_sending already counted it in the ledger)
        if attempts <= policy["retry"] and not failure.permanent:
            # "retry N runs": the next run with a later T; a re-run at the same T does not post again
            mark_failed(con, action.action_key, str(failure), as_of, count_attempt=count_attempt,
                        retry_at=as_of + dt.timedelta(seconds=1), max_attempts=policy["retry"] + 1)  # fmt: skip
        elif policy["then"] == "skip":
            mark_failed(con, action.action_key, str(failure), as_of, count_attempt=count_attempt, permanent=True, max_attempts=attempts)
            mark_skipped(con, action.action_key, f"webhook_failed after {attempts} attempt(s): {failure}", as_of)
            counts.skipped[action.action_type] += 1
            return
        else:  # abort: the enrollment ends, with what it had not done yet
            mark_failed(con, action.action_key, str(failure), as_of, count_attempt=count_attempt, permanent=True, max_attempts=attempts)
            end_enrollment(con, action.enrollment_id, "action_failed", as_of, run_id)
            ended.add(action.enrollment_id)
    counts.failed[action.action_type] += 1
    counts.errors.append(f"{action.journey_id} {action.entity_type} {action.entity_id} step {action.step_id}: {failure}")


class LedgerDeliveries:
    """Each message the server accepted is recorded at once (autocommit), before the next one leaves."""

    def __init__(self, con: duckdb.DuckDBPyConnection, as_of: dt.datetime):
        self.con, self.as_of = con, as_of

    def delivered(self, message_id: str) -> bool:
        return self.con.execute("select count(*) from journey_state.deliveries where message_id = ?", [message_id]).fetchone()[0] > 0

    def record(self, message_id: str, action_key: str, recipient: str) -> None:
        self.con.execute(
            "insert into journey_state.deliveries values (?, ?, ?, ?) on conflict do nothing",
            [message_id, action_key, recipient, self.as_of],
        )

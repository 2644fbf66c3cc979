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

from actions.base import ActionContext, ActionFailed
from journeys.engine import faults
from journeys.engine.entities import EntityDirectory
from journeys.engine.ledger import DueAction, due_actions, mark_done, mark_failed, mark_sending


@dataclass
class ExecutionCounts:
    done: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def execute_due_actions(con: duckdb.DuckDBPyConnection, as_of: dt.datetime, executors: list, journey_names: dict[str, str],
                        held_journeys: set[str] = frozenset()) -> ExecutionCounts:  # fmt: skip
    actions = [a for a in due_actions(con, as_of) if a.journey_id not in held_journeys]
    counts = ExecutionCounts()
    if not actions:
        return counts
    by_type = {t: executor for executor in executors for t in executor.action_types}
    ctx = ActionContext(as_of, EntityDirectory(con, {(a.entity_type, a.entity_id) for a in actions}), journey_names,
                        deliveries=LedgerDeliveries(con, as_of))
    internal = [a for a in actions if by_type[a.action_type].is_internal(a)]
    external = [a for a in actions if not by_type[a.action_type].is_internal(a)]

    if internal:
        con.execute("begin")
        try:
            for n, action in enumerate(internal):
                try:
                    by_type[action.action_type].apply(con, action, ctx)
                    mark_done(con, action.action_key, as_of, count_attempt=True)
                    counts.done[action.action_type] += 1
                except ActionFailed as e:  # raised before the executor wrote anything
                    mark_failed(con, action.action_key, str(e), as_of, count_attempt=True, permanent=e.permanent)
                    _failed(counts, action, e)
                if n == 0:
                    faults.point("mid_internal_actions")
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise

    for action in external:
        mark_sending(con, action.action_key)  # autocommit: durable before the message leaves
        try:
            by_type[action.action_type].deliver(action, ctx)
        except Exception as e:  # ActionFailed, or a bug in an executor: recorded, retried, never wedged in `sending`
            failure = e if isinstance(e, ActionFailed) else ActionFailed(f"{type(e).__name__}: {e}")
            mark_failed(con, action.action_key, str(failure), as_of, count_attempt=False, permanent=failure.permanent)
            _failed(counts, action, failure)
            continue
        faults.point("after_external_delivery")
        mark_done(con, action.action_key, as_of, count_attempt=False)
        counts.done[action.action_type] += 1
    return counts


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


def _failed(counts: ExecutionCounts, action: DueAction, error: ActionFailed) -> None:
    counts.failed[action.action_type] += 1
    counts.errors.append(f"{action.journey_id} {action.entity_type} {action.entity_id} step {action.step_id}: {error}")

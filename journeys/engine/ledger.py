"""The action ledger: the only module that writes journey_state.actions.

Every action has a key derived from content (journey, entity type, entity id, enrolled_at, step),
recorded `pending` when the step is reached, then `sending` (external effects only), `done`,
`failed` (with attempts, error and the next attempt time) or `cancelled`. A key recorded `done`
is never executed again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import duckdb

S = "journey_state"
MAX_ATTEMPTS = 5
FIRST_RETRY = dt.timedelta(minutes=15)
LONGEST_RETRY = dt.timedelta(hours=12)


def content_key_sql(journey: str, entity_type: str, entity_id: str, enrolled_at: str, step_id: str | None = None) -> str:
    """SQL for the deterministic key: the first 32 hex digits of sha256 over the content, `|`-joined."""
    parts = [journey, entity_type, entity_id, f"strftime({enrolled_at}, '%Y-%m-%dT%H:%M:%S.%f')"]
    if step_id is not None:
        parts.append(step_id)
    return f"left(sha256(concat_ws('|', {', '.join(parts)})), 32)"


def bucket_sql(journey: str, entity_type: str, entity_id: str, enrolled_at: str, salt: str | None = None) -> str:
    """SQL for a stable number in [0, 100) from sha256 of (journey, entity, enrolled_at[, salt]): a re-run, a
    crash-restart or a backfill computes the same bucket (DuckDB's own hash() is not stable across versions)."""
    parts = [journey, entity_type, entity_id, f"strftime({enrolled_at}, '%Y-%m-%dT%H:%M:%S.%f')"] + ([salt] if salt else [])
    return f"(cast(('0x' || left(sha256(concat_ws('|', {', '.join(parts)})), 8)) as ubigint) % 10000) / 100.0"


def record_reached_actions(con: duckdb.DuckDBPyConnection, reached_table: str, run_id: str) -> int:
    """Record every action step in `reached_table` (one row per enrollment reaching a step): `pending`,
    or `skipped` (reason holdout) for a holdout enrollment."""
    key = content_key_sql("r.journey_id", "r.entity_type", "r.entity_id", "r.enrolled_at", "r.step_id")
    return con.execute(
        f"""
        insert into {S}.actions (action_key, enrollment_id, journey_id, entity_type, entity_id, step_id, ordinal,
                                 action_type, params, due_at, status, reason, attempts, run_id)
        select {key}, r.enrollment_id, r.journey_id, r.entity_type, r.entity_id, r.step_id, r.ordinal,
               r.action_type, r.params, r.reached_at,
               -- a holdout enrollment walks the same program, but none of its actions run
               case when r.variant = 'holdout' then 'skipped' else 'pending' end,
               case when r.variant = 'holdout' then 'holdout' end, 0, ?
        from {reached_table} as r
        where r.kind = 'action'
        on conflict do nothing
        """,
        [run_id],
    ).fetchone()[0]


def cancel_open_actions(con: duckdb.DuckDBPyConnection, ended_table: str) -> int:
    """Ending an enrollment cancels what it has not executed (pending or waiting for a retry);
    a permanent failure stays `failed`, so it remains visible."""
    return con.execute(
        f"""
        update {S}.actions set status = 'cancelled', next_attempt_at = null
        where (status in ('pending', 'deferred') or (status = 'failed' and next_attempt_at is not null))
          and enrollment_id in (select enrollment_id from {ended_table})
        """
    ).fetchone()[0]


@dataclass(frozen=True)
class DueAction:
    action_key: str
    enrollment_id: str
    journey_id: str
    entity_type: str
    entity_id: str
    step_id: str
    action_type: str
    params: dict
    due_at: dt.datetime
    status: str
    attempts: int

    @property
    def channel(self) -> str | None:
        """The sending channel that caps, windows and per-run limits apply to."""
        return {"send_email": "email", "webhook": "webhook"}.get(self.action_type)


def due_actions(con: duckdb.DuckDBPyConnection, as_of: dt.datetime) -> list[DueAction]:
    """Actions to execute at T, in order: pending, in flight when a run died, or failed and due a retry."""
    rows = con.execute(
        f"""
        select action_key, enrollment_id, journey_id, entity_type, entity_id, step_id, action_type, params,
               due_at, status, attempts
        from {S}.actions
        where due_at <= ?
          and (status in ('pending', 'sending', 'deferred') or (status = 'failed' and next_attempt_at <= ?))
        order by due_at, enrollment_id, ordinal
        """,
        [as_of, as_of],
    ).fetchall()
    return [DueAction(*r[:7], json.loads(r[7]) if r[7] else {}, *r[8:]) for r in rows]


def mark_sending(con: duckdb.DuckDBPyConnection, key: str) -> None:
    """Before an external effect: if we die now, the next run sends again (same key, same Message-ID)."""
    con.execute(f"update {S}.actions set status = 'sending', attempts = attempts + 1 where action_key = ?", [key])


def mark_done(con: duckdb.DuckDBPyConnection, key: str, executed_at: dt.datetime, *, count_attempt: bool) -> None:
    con.execute(
        f"""update {S}.actions set status = 'done', executed_at = ?, error = null, reason = null, next_attempt_at = null,
                   attempts = attempts + ? where action_key = ? and status <> 'done'""",
        [executed_at, 1 if count_attempt else 0, key],
    )


def mark_done_many(con: duckdb.DuckDBPyConnection, keys: list[str], executed_at: dt.datetime) -> None:
    """mark_done(count_attempt=True) for a batch of internal actions: one statement instead of one per action."""
    if keys:
        con.execute(
            f"""update {S}.actions as a set status = 'done', executed_at = ?, error = null, reason = null,
                       next_attempt_at = null, attempts = a.attempts + 1
                from (select unnest(?::varchar[]) as action_key) as k
                where a.action_key = k.action_key and a.status <> 'done'""",
            [executed_at, keys],
        )


def mark_skipped(con: duckdb.DuckDBPyConnection, key: str, reason: str, executed_at: dt.datetime) -> None:
    """Decided not to run, for good (a suppressed address, a webhook given up with `then: skip`)."""
    con.execute(
        f"update {S}.actions set status = 'skipped', reason = ?, executed_at = ?, next_attempt_at = null where action_key = ?",
        [reason[:2000], executed_at, key],
    )


def mark_deferred_many(con: duckdb.DuckDBPyConnection, deferrals: list[tuple[str, str]]) -> None:
    """Held back by a send gate, each with its reason; a backlog held by a cap is re-deferred every run, in one statement."""
    if deferrals:
        keys, reasons = [k for k, _ in deferrals], [r[:2000] for _, r in deferrals]
        con.execute(
            f"""update {S}.actions as a set status = 'deferred', reason = d.reason
                from (select unnest(?::varchar[]) as action_key, unnest(?::varchar[]) as reason) as d
                where a.action_key = d.action_key""",
            [keys, reasons],
        )


def mark_failed(con: duckdb.DuckDBPyConnection, key: str, error: str, as_of: dt.datetime, *, count_attempt: bool,
                permanent: bool = False, retry_at: dt.datetime | None = None, max_attempts: int = MAX_ATTEMPTS) -> None:
    """Failed: retried on a later run whose T is past the backoff (15 min, doubling, at most 12 h; or
    `retry_at`), at most `max_attempts` times; a permanent failure (no recipient, bad data) is not
    retried. A failure with no retry left has no next_attempt_at."""
    attempts = con.execute(f"select attempts from {S}.actions where action_key = ?", [key]).fetchone()[0]
    attempts += 1 if count_attempt else 0
    if permanent:
        attempts = max(attempts, max_attempts)
    delay = min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)
    if retry_at is not None:
        delay = retry_at - as_of
    retry_at = as_of + delay if attempts < max_attempts else None  # no next attempt: none is shown
    con.execute(
        f"update {S}.actions set status = 'failed', attempts = ?, error = ?, next_attempt_at = ? where action_key = ?",
        [attempts, error[:2000], retry_at, key],
    )

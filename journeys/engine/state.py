"""The engine's own tables (schema journey_state), created before anything reads them.

Keys are content hashes, not sequences, so a rebuilt or restored database yields the same ids.
"""

from __future__ import annotations

import datetime as dt

import duckdb

STATE_SCHEMA = "journey_state"

STATE_DDL = [
    f"create schema if not exists {STATE_SCHEMA}",
    # The logical time T of the build in progress (one row).
    f"create table if not exists {STATE_SCHEMA}.run_context (as_of timestamp not null)",
    f"""create table if not exists {STATE_SCHEMA}.runs (
        run_id varchar primary key,          -- r<T>: the next run at the same T is that same run
        as_of timestamp not null,
        started_at timestamp not null,       -- wall clock, UTC
        finished_at timestamp,
        status varchar not null,             -- running | committed | failed
        attempts integer not null,
        rules_hash varchar,
        error varchar
    )""",
    # The rule files each rules_hash stands for (sql_rules/** and journeys.yml, path -> text), so
    # `journeys diff` can compare the working rules with those of the last run. recorded_at: the T of
    # the first committed run that used them (logical time, so a replayed database is the same).
    f"""create table if not exists {STATE_SCHEMA}.rule_snapshots (
        rules_hash varchar primary key,
        files json not null,
        recorded_at timestamp not null
    )""",
    # Journeys as the engine knows them: enabled state and the version of their step program.
    f"""create table if not exists {STATE_SCHEMA}.journeys (
        journey_id varchar primary key,
        entity_type varchar not null,
        enabled boolean not null,
        version varchar not null,
        enabled_at timestamp,                -- T of the first run after it was (re-)enabled
        updated_at timestamp not null
    )""",
    f"""create table if not exists {STATE_SCHEMA}.journey_steps (
        journey_id varchar not null,
        version varchar not null,
        step_id varchar not null,            -- position: 1, 3.then.1, ...
        ordinal integer not null,            -- execution order within the program
        kind varchar not null,               -- action | wait | if | wait_until | wait_until_date | split
        action_type varchar,
        wait_seconds bigint,                 -- wait: span; wait_until: timeout; wait_until_date: offset
        next_step_id varchar,                -- after this step (wait_until: the timeout branch); null: the end
        then_step_id varchar,                -- if: holds; wait_until: held in time
        else_step_id varchar,
        params json,
        primary key (journey_id, version, step_id)
    )""",
    # Where each path of a split goes: buckets [lower, upper) of a stable hash in 0..100.
    f"""create table if not exists {STATE_SCHEMA}.journey_split_routes (
        journey_id varchar not null,
        version varchar not null,
        step_id varchar not null,
        path varchar not null,
        lower_bound double not null,
        upper_bound double not null,
        first_step_id varchar,
        primary key (journey_id, version, step_id, path)
    )""",
    # Segment membership as of the last committed run: the "previous" side of the entry diff. Replaced
    # whole by each run (no key: segment_membership is one row per segment and member).
    f"""create table if not exists {STATE_SCHEMA}.membership (
        segment_id varchar not null,
        entity_type varchar not null,
        entity_id varchar not null
    )""",
    # Entry is a diff per (journey, segment): a segment added to a journey later is new *to that
    # journey*, even when another journey has tracked it for months, so its current members are
    # that journey's existing members (existing_members decides).
    f"""create table if not exists {STATE_SCHEMA}.journey_segments (
        journey_id varchar not null,
        segment_id varchar not null,
        since timestamp not null,            -- T of the first run at which the journey tracked the segment
        primary key (journey_id, segment_id)
    )""",
    f"""create table if not exists {STATE_SCHEMA}.enrollments (
        enrollment_id varchar primary key,
        journey_id varchar not null,
        journey_version varchar not null,
        entity_type varchar not null,
        entity_id varchar not null,
        enrolled_at timestamp not null,
        status varchar not null,             -- active | completed | goal_achieved | unenrolled
        variant varchar not null default 'treated',  -- treated | holdout (no actions run)
        split_path varchar,                  -- the path a split step assigned
        goal_achieved_at timestamp,
        ended_at timestamp,
        end_reason varchar,
        cursor_step_id varchar,              -- the next step to reach (null: past the last step)
        cursor_at timestamp,                 -- when that step is reached
        run_id varchar not null
    )""",
    f"""create table if not exists {STATE_SCHEMA}.actions (
        action_key varchar primary key,      -- hash of (journey, entity type, entity id, enrolled_at, step)
        enrollment_id varchar not null,
        journey_id varchar not null,
        entity_type varchar not null,
        entity_id varchar not null,
        step_id varchar not null,
        ordinal integer not null,
        action_type varchar not null,
        params json,
        due_at timestamp not null,
        status varchar not null,             -- pending | sending | done | failed | cancelled | skipped | deferred
        reason varchar,                      -- why skipped / deferred / cancelled
        attempts integer not null default 0,
        error varchar,
        next_attempt_at timestamp,
        executed_at timestamp,
        run_id varchar not null
    )""",
    f"""create table if not exists {STATE_SCHEMA}.transitions (
        run_id varchar not null,
        as_of timestamp not null,
        journey_id varchar not null,
        entity_type varchar not null,
        entity_id varchar not null,
        enrollment_id varchar,               -- null for a suppressed entry
        event varchar not null,              -- enrolled | suppressed | goal_achieved | completed | unenrolled
        from_status varchar,
        to_status varchar,
        reason varchar,
        occurred_at timestamp not null
    )""",
    f"""create table if not exists {STATE_SCHEMA}.attributes (
        entity_type varchar not null,
        entity_id varchar not null,
        name varchar not null,
        value varchar,
        updated_at timestamp not null,
        action_key varchar,
        primary key (entity_type, entity_id, name)
    )""",
    f"""create table if not exists {STATE_SCHEMA}.tasks (
        task_id varchar primary key,         -- the action key: the task's idempotency key
        journey_id varchar not null,
        enrollment_id varchar not null,
        entity_type varchar not null,
        entity_id varchar not null,
        title varchar not null,
        assignee varchar not null,
        notes varchar,
        due_at timestamp,
        created_at timestamp not null
    )""",
    # One row per message an SMTP server accepted: a retry skips what was already delivered.
    f"""create table if not exists {STATE_SCHEMA}.deliveries (
        message_id varchar primary key,
        action_key varchar not null,
        recipient varchar not null,
        delivered_at timestamp not null
    )""",
    f"""create table if not exists {STATE_SCHEMA}.email_outbox (
        message_id varchar primary key,
        action_key varchar not null,
        journey_id varchar not null,
        recipient varchar not null,
        subject varchar not null,
        body varchar not null,
        list_unsubscribe varchar,
        created_at timestamp not null
    )""",
]

STATE_TABLES = ("runs", "journeys", "journey_steps", "journey_split_routes", "membership", "journey_segments", "enrollments", "actions",
                "transitions", "attributes", "tasks", "deliveries", "email_outbox", "rule_snapshots")  # fmt: skip


def ensure_state(con: duckdb.DuckDBPyConnection) -> None:
    """Create the engine's schema and tables if missing (idempotent)."""
    for statement in STATE_DDL:
        con.execute(statement)


def set_run_context(con: duckdb.DuckDBPyConnection, as_of: dt.datetime) -> None:
    """The logical time the dbt models read (a table, not a dbt var, so partial parsing holds)."""
    con.execute("begin")
    con.execute(f"delete from {STATE_SCHEMA}.run_context")
    con.execute(f"insert into {STATE_SCHEMA}.run_context values (?)", [as_of])
    con.execute("commit")


def last_committed_as_of(con: duckdb.DuckDBPyConnection) -> dt.datetime | None:
    """T of the latest committed run (None before the first one)."""
    return con.execute(f"select max(as_of) from {STATE_SCHEMA}.runs where status = 'committed'").fetchone()[0]

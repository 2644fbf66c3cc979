"""The engine's own tables (schema journey_state), created before anything reads them."""

from __future__ import annotations

import datetime as dt

import duckdb

STATE_SCHEMA = "journey_state"

STATE_DDL = [
    f"create schema if not exists {STATE_SCHEMA}",
    f"create table if not exists {STATE_SCHEMA}.run_context (as_of timestamp not null)",
    f"""create table if not exists {STATE_SCHEMA}.attributes (
        entity_type varchar not null,
        entity_id varchar not null,
        name varchar not null,
        value varchar,
        updated_at timestamp not null,
        action_key varchar,
        primary key (entity_type, entity_id, name)
    )""",
]


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

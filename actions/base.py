"""What an executor is: internal effects commit with their ledger row; external ones deliver, then record."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Protocol

import duckdb

from journeys.engine.entities import EntityDirectory
from journeys.engine.ledger import DueAction
from journeys.rules.templates import template_environment


class ActionSkipped(Exception):
    """The action will not run, by design (e.g. every recipient is suppressed): status `skipped`, with the reason."""


class ActionFailed(Exception):
    """The action did not take effect. `permanent`: retrying cannot help (e.g. no recipient)."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass
class ActionContext:
    as_of: dt.datetime
    directory: EntityDirectory
    journey_names: dict[str, str] = field(default_factory=dict)
    deliveries: "DeliveryLog | None" = None  # external executors record each accepted message here
    rows: "RowBuffer" = field(default_factory=lambda: RowBuffer())  # internal executors' rows, written in one go

    def template_variables(self, action: DueAction, recipient: str | None = None) -> dict:
        entity = self.directory.row(action.entity_type, action.entity_id)
        if entity is None:
            raise ActionFailed(f"{action.entity_type} '{action.entity_id}' no longer exists", permanent=True)
        account = self.directory.account_of(action.entity_type, action.entity_id) or {}
        variables = {
            "entity": entity,
            "account": account,
            "journey": {"id": action.journey_id, "name": self.journey_names.get(action.journey_id, action.journey_id)},
            "action_key": action.action_key,
            "recipient": recipient,
        }
        variables["user"] = entity if action.entity_type == "user" else {}
        return variables

    def render(self, text: str, variables: dict) -> str:
        try:
            return _compiled(text).render(**variables)
        except Exception as e:  # a template can fail on data (e.g. a missing key): the action fails, the run goes on
            raise ActionFailed(f"template: {e}", permanent=True) from None


@functools.lru_cache(maxsize=512)
def _compiled(text: str):
    """A template is compiled once per process, not once per action (the sandbox keeps no state between renders)."""
    return template_environment().from_string(text)


class RowBuffer:
    """Rows internal executors insert, by table, written with one statement per table before the actions'
    transaction commits (a statement per row cost ~2 ms; an unnest of columns costs microseconds)."""

    def __init__(self):
        self._rows: dict[str, list[tuple]] = {}

    def add(self, table: str, row: tuple) -> None:
        self._rows.setdefault(table, []).append(row)

    def flush(self, con: duckdb.DuckDBPyConnection) -> None:
        """`insert into <table> ... on conflict do nothing` for every buffered row; `table` names a state table."""
        for table, rows in self._rows.items():
            columns = [list(column) for column in zip(*rows)]
            unnests = ", ".join(f"unnest(?::{kind}[])" for kind in _column_types(con, table))
            con.execute(f"insert into {table} select {unnests} on conflict do nothing", columns)
        self._rows.clear()


def _column_types(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    schema, name = table.split(".")
    return [r[0] for r in con.execute(
        "select data_type from duckdb_columns() where schema_name = ? and table_name = ? order by column_index",
        [schema, name],
    ).fetchall()]  # fmt: skip


class DeliveryLog(Protocol):
    """Which messages a server already accepted, so a retry sends only the rest."""

    def delivered(self, message_id: str) -> bool: ...

    def record(self, message_id: str, action_key: str, recipient: str) -> None: ...


class Executor(Protocol):
    action_types: tuple[str, ...]

    def is_internal(self, action: DueAction) -> bool:
        """Internal effects are rows in this database, written in the ledger's transaction."""

    def apply(self, con: duckdb.DuckDBPyConnection, action: DueAction, ctx: ActionContext) -> None:
        """Write the effect with `con`, inside the caller's transaction."""

    def deliver(self, action: DueAction, ctx: ActionContext) -> None:
        """Perform an external effect (e.g. SMTP); raise ActionFailed when it did not happen."""

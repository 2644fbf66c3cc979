"""set / copy / clear / increase a journey-owned custom attribute of the enrolled entity."""

from __future__ import annotations

import duckdb

from actions.base import ActionContext, ActionFailed
from journeys.engine.ledger import DueAction
from journeys.rules.model import PropertyPath

S = "journey_state"


class AttributeExecutor:
    action_types = ("set_attribute", "copy_attribute", "clear_attribute", "increase_attribute")

    def is_internal(self, action: DueAction) -> bool:
        return True

    def apply(self, con: duckdb.DuckDBPyConnection, action: DueAction, ctx: ActionContext) -> None:
        p = action.params
        if action.action_type == "set_attribute":
            self._write(con, action, p["name"], _text(p["value"]), ctx)
        elif action.action_type == "clear_attribute":
            self._write(con, action, p["name"], None, ctx)
        elif action.action_type == "copy_attribute":
            self._write(con, action, p["to"], _text(self._read_property(action, p["from"], ctx)), ctx)
        else:
            current = self._current(con, action, p["name"])
            try:
                base = float(current) if current not in (None, "") else 0.0
            except ValueError:
                raise ActionFailed(f"attribute '{p['name']}' is '{current}', not a number; cannot increase it", permanent=True) from None
            self._write(con, action, p["name"], _text(base + float(p["by"])), ctx)

    def deliver(self, action: DueAction, ctx: ActionContext) -> None:
        raise NotImplementedError("attribute actions are internal")

    def _write(self, con, action: DueAction, name: str, value: str | None, ctx: ActionContext) -> None:
        con.execute(
            f"""insert into {S}.attributes values (?, ?, ?, ?, ?, ?)
                on conflict (entity_type, entity_id, name) do update
                set value = excluded.value, updated_at = excluded.updated_at, action_key = excluded.action_key""",
            [action.entity_type, action.entity_id, name, value, ctx.as_of, action.action_key],
        )

    def _current(self, con, action: DueAction, name: str) -> str | None:
        """The effective value now: a journey-written value (even one written earlier in this run), else the source."""
        row = con.execute(
            f"select value from {S}.attributes where entity_type = ? and entity_id = ? and name = ?",
            [action.entity_type, action.entity_id, name],
        ).fetchone()
        if row is not None:
            return row[0]
        row = con.execute(
            "select value from staging.stg_custom_attributes where entity_type = ? and entity_id = ? and name = ?",
            [action.entity_type, action.entity_id, name],
        ).fetchone()
        return row[0] if row else None

    def _read_property(self, action: DueAction, path_text: str, ctx: ActionContext):
        path = PropertyPath.parse(path_text)
        row = ctx.directory.row(action.entity_type, action.entity_id) if path.scope == action.entity_type else (
            ctx.directory.account_of(action.entity_type, action.entity_id))
        if row is None:
            return None
        return row["custom"].get(path.name) if path.custom else row.get(path.name)


def _text(value) -> str | None:
    """Attributes are text; numbers keep no trailing `.0` when whole."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)

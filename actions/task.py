"""create_task: a Human Intervention Task row, keyed by the action key (its idempotency key)."""

from __future__ import annotations

import datetime as dt

import duckdb

from actions.base import ActionContext
from journeys.engine.ledger import DueAction
from journeys.rules.model import duration_seconds

S = "journey_state"
TEAM_ROLES = ("csm", "sales_manager")


class TaskExecutor:
    action_types = ("create_task",)

    def is_internal(self, action: DueAction) -> bool:
        return True

    def apply(self, con: duckdb.DuckDBPyConnection, action: DueAction, ctx: ActionContext) -> None:
        p = action.params
        variables = ctx.template_variables(action)
        account = variables["account"]
        assignee = p["assignee"]
        if assignee in TEAM_ROLES:
            # The role resolves through account_team; an unstaffed role stays the role's queue.
            members = ctx.directory.team_members(account.get("account_id"), assignee)
            assignee = members[0] if members else f"unassigned:{assignee}"
        due_at = action.due_at + dt.timedelta(seconds=duration_seconds(p["due_in"])) if p.get("due_in") else None
        title = ctx.render(p["title"], variables)
        notes = ctx.render(p["notes"], variables) if p.get("notes") else None
        ctx.rows.add(f"{S}.tasks", (action.action_key, action.journey_id, action.enrollment_id, action.entity_type,
                                    action.entity_id, title, assignee, notes, due_at, ctx.as_of))  # fmt: skip

    def deliver(self, action: DueAction, ctx: ActionContext) -> None:
        raise NotImplementedError("tasks are internal")

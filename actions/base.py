"""What an executor is: internal effects commit with their ledger row; external ones deliver, then record."""

from __future__ import annotations

import datetime as dt
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
            return template_environment().from_string(text).render(**variables)
        except Exception as e:  # a template can fail on data (e.g. a missing key): the action fails, the run goes on
            raise ActionFailed(f"template: {e}", permanent=True) from None


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

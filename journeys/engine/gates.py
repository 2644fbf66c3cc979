"""Send gates (journeys.yml): send windows, frequency caps and per-run limits defer sends, never drop them.

A deferred action keeps its key and is reconsidered by every later run, in the same stable order
(due time, enrollment, step), so a burst spreads over runs and nothing is lost.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb

from journeys.engine.entities import EntityDirectory
from journeys.engine.ledger import DueAction
from journeys.rules.model import PropertyPath, duration_seconds
from journeys.rules.settings import ProjectSettings

CHANNEL_ACTIONS = {"email": "send_email", "webhook": "webhook"}


class SendGates:
    def __init__(self, con: duckdb.DuckDBPyConnection, settings: ProjectSettings, as_of: dt.datetime,
                 directory: EntityDirectory, actions: list[DueAction]):  # fmt: skip
        self.settings, self.as_of, self.directory = settings, as_of, directory
        self.sent_this_run: Counter = Counter()  # channel → sends
        self.sent_by_entity: Counter = Counter()  # (channel, entity_type, entity_id) → sends this run
        self._local_by_zone: dict[str, str | None] = {}
        prop = settings.send_window.timezone_property if settings.send_window else None
        self._timezone_path = PropertyPath.parse(prop) if prop else None  # parsed once, read per email
        self.history = self._history(con, actions)

    def _history(self, con, actions: list[DueAction]) -> dict[tuple, int]:
        """Sends already done within each cap's window, per (cap index, entity), for the entities at hand."""
        counts: dict[tuple, int] = {}
        entities = sorted({(a.entity_type, a.entity_id) for a in actions if a.channel})
        if not entities:
            return counts
        for n, cap in enumerate(self.settings.frequency_caps):
            since = self.as_of - dt.timedelta(seconds=duration_seconds(cap.per))
            rows = con.execute(
                """select entity_type, entity_id, count(*) from journey_state.actions
                   where action_type = ? and status = 'done' and executed_at > ? and executed_at <= ?
                     and entity_id in (select unnest(?))
                   group by entity_type, entity_id""",
                [CHANNEL_ACTIONS[cap.channel], since, self.as_of, [e for _, e in entities]],
            ).fetchall()
            for entity_type, entity_id, count in rows:
                counts[(n, entity_type, entity_id)] = count
        return counts

    def deferral(self, action: DueAction) -> str | None:
        """Why this send must wait (send_window, frequency_cap, max_sends_per_run), or None to go ahead."""
        channel = action.channel
        if channel is None:
            return None
        window = self.settings.send_window
        if window is not None and channel in window.channels and not self._in_window(action):
            return "send_window"
        for n, cap in enumerate(self.settings.frequency_caps):
            if cap.channel != channel:
                continue
            used = self.history.get((n, action.entity_type, action.entity_id), 0) + self.sent_by_entity[(channel, action.entity_type, action.entity_id)]
            if used >= cap.max:
                return f"frequency_cap: {used} {channel} sends in {cap.per} (max {cap.max})"
        limit = self.settings.max_sends_per_run.get(channel)
        if limit is not None and self.sent_this_run[channel] >= limit:
            return f"max_sends_per_run: {limit} {channel} sends this run"
        return None

    def count(self, action: DueAction) -> None:
        """A send went out (or was written to the outbox): it counts toward caps and limits."""
        if action.channel:
            self.sent_this_run[action.channel] += 1
            self.sent_by_entity[(action.channel, action.entity_type, action.entity_id)] += 1

    def _in_window(self, action: DueAction) -> bool:
        window = self.settings.send_window
        local = self._local_time(self._timezone(action)) or self._local_time(window.default_timezone)
        if window.start < window.end:
            return window.start <= local < window.end
        return local >= window.start or local < window.end  # a window across midnight

    def _local_time(self, zone_name: str | None) -> str | None:
        """T as HH:MM in that zone; None for no zone or one that does not exist (a bad value in the data).
        Once per zone and run: a backlog of 200k emails names a few dozen zones."""
        if zone_name is None:
            return None
        if zone_name not in self._local_by_zone:
            try:
                zone = ZoneInfo(zone_name)
            except (ZoneInfoNotFoundError, ValueError):
                self._local_by_zone[zone_name] = None
            else:
                self._local_by_zone[zone_name] = self.as_of.replace(tzinfo=dt.timezone.utc).astimezone(zone).strftime("%H:%M")
        return self._local_by_zone[zone_name]

    def _timezone(self, action: DueAction) -> str | None:
        path = self._timezone_path
        if path is None:
            return None
        row = self.directory.row(action.entity_type, action.entity_id) if path.scope == action.entity_type else (
            self.directory.account_of(action.entity_type, action.entity_id))
        value = (row or {}).get("custom", {}).get(path.name) if path.custom else (row or {}).get(path.name)
        return str(value) if value else None

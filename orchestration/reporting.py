"""What the run's assets report to Dagster: row counts, per-journey transitions, the ledger, outcomes.

Read after `engine.run` returns, under the run lock (so the numbers are one consistent state), and
from the tables rather than the run report: a retried run at the same T then shows what the attempt
that committed did, not the empty diff of the retry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from journeys.config import Settings
from journeys.engine.build import connect
from journeys.engine.lock import run_lock
from journeys.engine.breaker import Bounds, BreakerOutcome, Entering
from orchestration.lineage import ModelInfo

TRANSITION_COLUMNS = (
    "entering",
    "enrolled",
    "suppressed",
    "goal_achieved",
    "unenrolled",
    "completed",
    "exiting",
)


@dataclass
class Snapshot:
    row_counts: dict[str, int] = field(default_factory=dict)  # dbt model name → rows
    transitions: dict[str, dict[str, int]] = field(default_factory=dict)  # journey → column → count, this run
    ledger: dict[str, dict[str, int]] = field(default_factory=dict)  # journey → action status → count
    outcomes: list[dict] = field(default_factory=list)  # journey_outcomes rows
    state_rows: dict[str, int] = field(default_factory=dict)  # journey_state table → rows


def read_snapshot(
    settings: Settings, models: dict[str, ModelInfo], run_id: str, wait_seconds: float
) -> Snapshot:
    with run_lock(
        settings.db_path,
        wait_seconds=wait_seconds,
        what="dagster: reading run metadata",
        on_takeover=lambda m: None,
    ):
        con = connect(settings)
        try:
            return _read(con, models, run_id)
        finally:
            con.close()


def _read(con: duckdb.DuckDBPyConnection, models: dict[str, ModelInfo], run_id: str) -> Snapshot:
    snap = Snapshot()
    for name, info in models.items():
        try:
            snap.row_counts[name] = con.execute(f"select count(*) from {info.relation}").fetchone()[0]
        except duckdb.Error:
            pass  # not built (yet): no count rather than a failed run
    for jid, event, to_status, n in con.execute(
        "select journey_id, event, to_status, count(*) from journey_state.transitions where run_id = ? group by all",
        [run_id],
    ).fetchall():
        row = snap.transitions.setdefault(jid, dict.fromkeys(TRANSITION_COLUMNS, 0))
        row[event] = row.get(event, 0) + n
        if event in ("enrolled", "suppressed"):
            row["entering"] += n
        if to_status in ("unenrolled", "goal_achieved", "completed"):
            row["exiting"] += n
    for jid, status, n in con.execute(
        "select journey_id, status, count(*) from journey_state.actions group by all order by all"
    ).fetchall():
        snap.ledger.setdefault(jid, {})[status] = n
    cursor = con.execute("select * from main.journey_outcomes order by journey_id")
    names = [d[0] for d in cursor.description]
    snap.outcomes = [dict(zip(names, row)) for row in cursor.fetchall()]
    for table in (
        "enrollments",
        "transitions",
        "membership",
        "actions",
        "tasks",
        "attributes",
        "email_outbox",
    ):
        snap.state_rows[table] = con.execute(f"select count(*) from journey_state.{table}").fetchone()[0]
    return snap


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def transitions_markdown(snap: Snapshot, held: set[str]) -> str:
    if not snap.transitions:
        return "No journey changed at this run."
    rows = [[jid, *(snap.transitions[jid][c] for c in TRANSITION_COLUMNS), "held" if jid in held else ""]
            for jid in sorted(snap.transitions)]  # fmt: skip
    return markdown_table(["journey", *TRANSITION_COLUMNS, "actions"], rows)


def ledger_markdown(snap: Snapshot) -> str:
    statuses = ["pending", "sending", "done", "failed", "cancelled"]
    rows = [[jid, *(snap.ledger[jid].get(s, 0) for s in statuses)] for jid in sorted(snap.ledger)]
    return markdown_table(["journey", *statuses], rows) if rows else "The ledger is empty."


def outcomes_markdown(snap: Snapshot) -> str:
    if not snap.outcomes:
        return "No enrollments yet."
    header = list(snap.outcomes[0])
    return markdown_table(header, [[row[c] for c in header] for row in snap.outcomes])


def breaker_markdown(outcome: BreakerOutcome) -> tuple[str, str]:
    """(held trips, this run's numbers) as markdown tables."""
    held = markdown_table(
        ["journey", "tripped at run", "entering", "previous run", "entity rows", "why", "acknowledge with"],
        [[t.journey_id, t.run_id, t.entering, t.previous, t.entity_count, "; ".join(t.reasons), t.ack] for t in outcome.held],
    ) if outcome.held else "No journey is held."  # fmt: skip
    numbers = markdown_table(
        ["journey", "entering", "previous run", "entity rows", "trips above"],
        [
            [n.journey_id, n.entering, n.previous, n.entity_count, trip_threshold(n, outcome.bounds)]
            for n in outcome.numbers
        ],
    )
    return held, numbers


def trip_threshold(n: Entering, b: Bounds) -> float | None:
    """The entering count above which this journey would have tripped at this run (None: never)."""
    limits = [b.max_factor * n.previous] if n.previous is not None else []
    limits += [b.max_share * n.entity_count] if n.entity_count else []
    return max(b.min_entering - 1, min(limits)) if limits else None


def read_run_results(project_dir: Path, since: float) -> list[dict]:
    """dbt's run_results.json of the build that just failed (ignored when older than `since`)."""
    path = Path(project_dir) / "dbt_project" / "target" / "run_results.json"
    if not path.exists() or path.stat().st_mtime < since:
        return []
    return json.loads(path.read_text()).get("results", [])

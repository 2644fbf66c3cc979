"""What the CLI prints: run reports, journey status, previews."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable

from journeys.config import Settings
from journeys.engine.build import connect
from journeys.engine.run import RunReport, run
from journeys.engine.state import last_committed_as_of
from journeys.errors import JourneysError

Echo = Callable[[str], None]


def print_run_report(report: RunReport, echo: Echo) -> None:
    t = report.transitions
    journeys = sorted(set(t.entered) | set(t.enrolled) | set(t.suppressed) | set(t.unenrolled) | set(t.goal_achieved) | set(t.completed))
    verb = "would change" if report.dry_run else "committed"
    echo(f"run {report.run_id} at {report.as_of:%Y-%m-%d %H:%M:%S} ({verb})")
    if journeys:
        echo(f"  {'journey':<24} {'entered':>8} {'enrolled':>9} {'suppressed':>11} {'unenrolled':>11} {'goal':>6} {'completed':>10}")
        for j in journeys:
            echo(f"  {j:<24} {t.entered.get(j, 0):>8} {t.enrolled.get(j, 0):>9} {t.suppressed.get(j, 0):>11} "
                 f"{t.unenrolled.get(j, 0):>11} {t.goal_achieved.get(j, 0):>6} {t.completed.get(j, 0):>10}")  # fmt: skip
    else:
        echo("  no journey changed")
    if report.dry_run:
        by_type = Counter(a[3] for a in report.would_execute)
        echo("  would execute: " + (", ".join(f"{n} {kind}" for kind, n in sorted(by_type.items())) or "nothing"))
        return
    ex = report.executed
    line = "  executed: " + (", ".join(f"{n} {kind}" for kind, n in sorted(ex.done.items())) or "nothing")
    for label, counter in (("failed", ex.failed), ("skipped", ex.skipped), ("deferred", ex.deferred)):
        if counter:
            line += f"; {label}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counter.items()))
    echo(line)
    if report.held:
        echo(f"  held by a guard (actions stay pending): {', '.join(report.held)}")
    for error in report.executed.errors[:10]:
        echo(f"  failed: {error}")


STATUS_SQL = """
with e as (
    select journey_id,
        count(*) as enrolled,
        count(*) filter (where status = 'active') as active,
        count(*) filter (where goal_achieved_at is not null) as goal_achieved,
        count(*) filter (where status = 'unenrolled') as unenrolled,
        count(*) filter (where status = 'completed') as completed
    from journey_state.enrollments group by journey_id
),
a as (
    select journey_id,
        count(*) filter (where status in ('pending', 'sending') or (status = 'failed' and next_attempt_at is not null)) as pending_actions
    from journey_state.actions group by journey_id
)
select j.journey_id, j.enabled, coalesce(e.enrolled, 0), coalesce(e.active, 0), coalesce(e.goal_achieved, 0),
       coalesce(e.unenrolled, 0), coalesce(e.completed, 0), coalesce(a.pending_actions, 0)
from journey_state.journeys as j
left join e using (journey_id)
left join a using (journey_id)
order by j.journey_id
"""


def print_status(settings: Settings, echo: Echo) -> None:
    if not settings.db_path.exists():
        raise JourneysError(f"{settings.display(settings.db_path)} does not exist; run `journeys run` first (or pass --db)")
    con = connect(settings)
    try:
        exists = con.execute("select count(*) from information_schema.tables where table_schema = 'journey_state' and table_name = 'journeys'").fetchone()[0]
        rows = con.execute(STATUS_SQL).fetchall() if exists else []
        last = last_committed_as_of(con) if exists else None
    finally:
        con.close()
    echo(f"last committed run: {last:%Y-%m-%d %H:%M:%S}" if last else "no committed run yet")
    echo(f"  {'journey':<24} {'enabled':>7} {'enrolled':>9} {'active':>7} {'goal':>6} {'unenrolled':>11} {'completed':>10} {'pending actions':>16}")
    for jid, enabled, *numbers in rows:
        enrolled, active, goal, unenrolled, completed, pending = numbers
        echo(f"  {jid:<24} {'yes' if enabled else 'no':>7} {enrolled:>9} {active:>7} {goal:>6} {unenrolled:>11} {completed:>10} {pending:>16}")


PREVIEW_TABLES = {
    "would enter and enroll": "_enrolled",
    "would be suppressed (blacklist)": "_suppressed",
    "would reach the goal": "_goal",
    "would exit (blacklist)": "_blacklisted",
}


def print_preview(settings: Settings, journey_id: str, as_of: dt.datetime | None, sample: int, echo: Echo) -> None:
    """A dry run restricted to one journey, with samples of the entities each transition would touch."""
    found: dict[str, tuple[int, list[str]]] = {}

    def inspect(con) -> None:
        for label, table in PREVIEW_TABLES.items():
            count = con.execute(f"select count(*) from {table} where journey_id = ?", [journey_id]).fetchone()[0]
            ids = [r[0] for r in con.execute(f"select entity_id from {table} where journey_id = ? order by entity_id limit ?", [journey_id, sample]).fetchall()]
            found[label] = (count, ids)
        found["currently eligible (in an entry segment)"] = (
            con.execute("select count(*) from main.journey_eligible where journey_id = ?", [journey_id]).fetchone()[0],
            [r[0] for r in con.execute("select entity_id from main.journey_eligible where journey_id = ? order by entity_id limit ?", [journey_id, sample]).fetchall()],
        )

    from journeys.rules.validate import load_and_validate

    if journey_id not in load_and_validate(settings.project_dir).journeys:
        raise JourneysError(f"unknown journey '{journey_id}'; see sql_rules/journeys/")
    report = run(settings, as_of=as_of, dry_run=True, inspect=inspect)
    echo(f"preview of {journey_id} at {report.as_of:%Y-%m-%d %H:%M:%S} (nothing changed)")
    for label, (count, ids) in found.items():
        echo(f"  {label}: {count}" + (f"  e.g. {', '.join(ids)}" if ids else ""))
    actions = Counter(a[3] for a in report.would_execute if a[0] == journey_id)
    echo("  actions that would execute: " + (", ".join(f"{n} {k}" for k, n in sorted(actions.items())) or "none"))

"""`journeys demo`: the sample world and the sample rules, run day after simulated day."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import replace

from journeys.config import Settings
from journeys.engine.build import connect, prepare_warehouse
from journeys.engine.dbt import DbtProject
from journeys.engine.lock import run_lock
from journeys.engine.run import run
from journeys.progress import progress
from journeys.report import print_run_report
from journeys.sample.generate import generate_sample_data

ORIGIN = dt.datetime(2026, 11, 2, 9, 0)  # fixed, so every demo prints the same figures
DEMO_DAYS = 5
RUN_HOURS = (9, 17)  # two runs a day (UTC), so sends deferred by a send window go out at the next one


def demo_settings(settings: Settings) -> Settings:
    """The demo rebuilds its own database; it never touches the default warehouse file."""
    if settings.db_path.name == "journeys.duckdb" and settings.db_path.parent.name == "warehouse":
        return replace(settings, db_path=settings.db_path.with_name("demo.duckdb"))
    return settings


def run_demo(settings: Settings, *, users: int, days: int = DEMO_DAYS, echo: Callable[[str], None] = print) -> None:
    """Each simulated run time: the world's snapshot at that time is loaded, then one whole run."""
    settings = demo_settings(settings)
    for stale in (settings.db_path, settings.db_path.with_name(settings.db_path.name + ".wal")):
        stale.unlink(missing_ok=True)  # a fresh world every time
    started = time.monotonic()
    dbt = DbtProject(settings.project_dir, settings.db_path)
    times = [ORIGIN.replace(hour=h) + dt.timedelta(days=d) for d in range(days) for h in RUN_HOURS]
    with progress(len(times), "demo") as advance:
        for n, as_of in enumerate(times, start=1):
            _demo_run(settings, dbt, users, as_of, f"run {n}/{len(times)}", echo)
            advance(1, description=f"demo: {n}/{len(times)} runs")
    _print_outcomes(settings, echo)
    echo(f"\ndemo database: {settings.display(settings.db_path)} ({time.monotonic() - started:.0f}s). "
         "Query journey_outcomes, journey_enrollments, journey_actions, journey_transitions, "
         "journey_tasks, email_outbox with any SQL client.")  # fmt: skip


def _demo_run(settings: Settings, dbt: DbtProject, users: int, as_of: dt.datetime, label: str, echo: Callable[[str], None]) -> None:
    """Load the world's snapshot at `as_of`, then one whole run."""
    with run_lock(settings.db_path, what="journeys demo (loading the day's data)"):
        prepare_warehouse(settings)
        con = connect(settings)
        try:
            counts = generate_sample_data(con, users=users, origin=ORIGIN, as_of=as_of)
        finally:
            con.close()
    echo(f"\n[{label}] {as_of:%a %Y-%m-%d %H:%M} UTC - world: {counts['users']} users, "
         f"{counts['accounts']} accounts, {counts['events']} events")  # fmt: skip
    print_run_report(run(settings, as_of=as_of, dbt=dbt), echo)


def _print_outcomes(settings: Settings, echo: Callable[[str], None]) -> None:
    con = connect(settings)
    try:
        rows = con.execute(
            "select journey_id || case when variant = 'holdout' then ' (holdout)' else '' end"
            " || coalesce(' /' || split_path, ''), enrolled, active, completed, goal_achieved, unenrolled, goal_rate, "
            "median_hours_to_goal from journey_outcomes order by journey_id, variant desc, split_path"
        ).fetchall()
        emails, tasks = con.execute("select (select count(*) from email_outbox), (select count(*) from journey_tasks)").fetchone()
    finally:
        con.close()
    echo("\noutcomes (journey_outcomes)")
    echo(f"  {'journey (variant / path)':<34} {'enrolled':>8} {'active':>7} {'completed':>9} {'goal':>5} {'unenrolled':>10} {'goal rate':>9} {'median h to goal':>16}")
    for jid, enrolled, active, completed, goal, unenrolled, rate, median in rows:
        median_text = f"{median:.1f}" if median is not None else "-"
        echo(f"  {jid:<34} {enrolled:>8} {active:>7} {completed:>9} {goal:>5} {unenrolled:>10} {rate:>9.1%} {median_text:>16}")
    echo(f"  emails written to email_outbox: {emails}; human tasks created: {tasks}")

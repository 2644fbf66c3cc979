"""`journeys demo`: the sample world and the sample rules, day after simulated day."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import replace

from journeys.config import Settings
from journeys.engine.build import build_models, compile_project, connect, prepare_warehouse
from journeys.engine.dbt import DbtProject
from journeys.engine.lock import run_lock
from journeys.sample.generate import generate_sample_data

ORIGIN = dt.datetime(2026, 11, 2, 9, 0)  # fixed, so every demo prints the same figures
DEMO_DAYS = 4


def run_demo(settings: Settings, *, users: int, echo: Callable[[str], None] = print) -> None:
    """Build the sample rules over several simulated days; the sample world changes between days."""
    if settings.db_path.name == "journeys.duckdb" and settings.db_path.parent.name == "warehouse":
        # The demo rebuilds its own database; it never touches the default warehouse file.
        settings = replace(settings, db_path=settings.db_path.with_name("demo.duckdb"))
    started = time.monotonic()
    compiled = compile_project(settings)
    echo(f"rules: {len(compiled.rules.segments)} segments, {len(compiled.rules.journeys)} journeys -> "
         f"{len(compiled.result.models)} generated models")  # fmt: skip
    dbt = DbtProject(settings.project_dir, settings.db_path)
    with run_lock(settings.db_path, what="journeys demo"):
        for day in range(DEMO_DAYS):
            as_of = ORIGIN + dt.timedelta(days=day)
            prepare_warehouse(settings)
            con = connect(settings)
            try:
                counts = generate_sample_data(con, users=users, origin=ORIGIN, as_of=as_of)
            finally:
                con.close()
            nodes = build_models(settings, dbt, as_of)
            echo(f"\nday {day + 1} ({as_of:%Y-%m-%d %H:%M}): {counts['users']} users, {counts['events']} events; "
                 f"dbt built {sum(n.resource_type == 'model' for n in nodes)} models, {sum(n.resource_type == 'test' for n in nodes)} tests passed")  # fmt: skip
            _print_sizes(settings, echo)
    echo(f"\ndemo database: {settings.display(settings.db_path)} ({time.monotonic() - started:.1f}s); "
         "query segment_membership and journey_* relations with any SQL client")


def _print_sizes(settings: Settings, echo: Callable[[str], None]) -> None:
    con = connect(settings)
    try:
        segments = con.execute(
            "select segment_id, entity_type, count(*) from segment_membership group by all order by segment_id"
        ).fetchall()
        journeys = con.execute(
            """
            select j.journey_id,
                count(*) as eligible,
                count(*) filter (where g.entity_id is not null) as goal,
                count(*) filter (where x.entity_id is not null) as blacklisted
            from journey_eligible as j
            left join journey_goal_matches as g using (journey_id, entity_type, entity_id)
            left join journey_exit_matches as x using (journey_id, entity_type, entity_id)
            group by all order by j.journey_id
            """
        ).fetchall()
    finally:
        con.close()
    echo("  segment                    members")
    for seg_id, entity, count in segments:
        echo(f"  {seg_id:<26} {count:>7} {entity}s")
    echo("  journey                    eligible  matching goal  blacklisted")
    for journey_id, eligible, goal, blacklisted in journeys:
        echo(f"  {journey_id:<26} {eligible:>8}  {goal:>13}  {blacklisted:>11}")

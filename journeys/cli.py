"""`journeys`: parse options, call one function, print. Errors print as `error: ...`, tracebacks only with --debug."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from journeys.config import Settings
from journeys.errors import JourneysError, RuleError


class Context:
    def __init__(self, project_dir: str | None, db: str | None, debug: bool):
        self.settings = Settings.resolve(project_dir, db)
        self.debug = debug


def parse_time(value: str | None) -> dt.datetime | None:
    """An ISO date or timestamp, taken as UTC (stored without a zone)."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not an ISO date or timestamp, e.g. 2026-11-23 or 2026-11-23T09:00") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--project-dir", type=click.Path(file_okay=False), default=None, help="Project folder (default: the current folder).")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="DuckDB file (default: $JOURNEYS_DB, else warehouse/journeys.duckdb).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, project_dir: str | None, db: str | None, debug: bool) -> None:
    """Customer journeys as files, compiled to dbt models, run exactly once."""
    ctx.obj = Context(project_dir, db, debug)


@cli.command()
@click.pass_obj
def validate(obj: Context) -> None:
    """Check every file in sql_rules/; list all problems."""
    from journeys.rules.validate import load_and_validate

    rules = load_and_validate(obj.settings.project_dir)
    click.echo(f"ok: {len(rules.segments)} segments, {len(rules.journeys)} journeys, {len({p for p in rules.templates.values()})} templates")


@cli.command("compile")
@click.pass_obj
def compile_(obj: Context) -> None:
    """Write the generated dbt models for the current rules."""
    from journeys.engine.build import compile_project

    compiled = compile_project(obj.settings)
    changed = len(compiled.result.written) + len(compiled.result.removed)
    click.echo(f"compiled {len(compiled.result.models)} models into dbt_project/models/generated ({changed} files changed)")


@cli.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--wait", "wait_seconds", type=float, default=0.0, help="Seconds to wait for a run in progress.")
@click.pass_obj
def load(obj: Context, data_dir: str, wait_seconds: float) -> None:
    """Load DIR/<table>.csv|.parquet into the source tables, replacing them atomically."""
    from journeys.engine.lock import run_lock
    from journeys.loading import load_directory

    with run_lock(obj.settings.db_path, wait_seconds=wait_seconds, what="journeys load", on_takeover=_note):
        counts = load_directory(obj.settings.db_path, Path(data_dir), obj.settings.project_dir)
    for table, rows in counts.items():
        click.echo(f"loaded {table}: {rows} rows")


@cli.command()
@click.option("--wait", "wait_seconds", type=float, default=0.0, help="Seconds to wait for a run in progress.")
@click.pass_obj
def check(obj: Context, wait_seconds: float) -> None:
    """Every dbt data test on the source data and journey state, the full-scan ones a run skips included."""
    from journeys.engine.build import check_data
    from journeys.engine.dbt import DbtProject
    from journeys.engine.lock import run_lock

    with run_lock(obj.settings.db_path, wait_seconds=wait_seconds, what="journeys check", on_takeover=_note):
        nodes = check_data(obj.settings, DbtProject(obj.settings.project_dir, obj.settings.db_path))
    tests = [n for n in nodes if n.resource_type == "test"]
    click.echo(f"ok: {len(tests)} data tests passed")


@cli.command("run")
@click.option("--as-of", "as_of", default=None, help="Logical time T (ISO, UTC); default: now.")
@click.option("--dry-run", is_flag=True, help="Report what would happen; change nothing.")
@click.option("--wait", "wait_seconds", type=float, default=0.0, help="Seconds to wait for a run in progress.")
@click.option("--ack", "acks", multiple=True, metavar="JOURNEY@RUN_ID",
              help="Release a journey held by the segment-size circuit breaker (repeatable).")
@click.pass_obj
def run_(obj: Context, as_of: str | None, dry_run: bool, wait_seconds: float, acks: tuple[str, ...]) -> None:
    """One whole run: compile, dbt build, transitions, due actions (the same run Dagster executes)."""
    import os

    from journeys.engine.breaker import Bounds, Breaker, parse_acks
    from journeys.engine.run import run
    from journeys.report import print_run_report

    breaker = Breaker(Bounds.from_env(), parse_acks(os.environ.get("JOURNEYS_BREAKER_ACK")) + parse_acks(list(acks)), "cli")
    from journeys.progress import progress

    with progress(None, "journeys run") as advance:  # a spinner naming the phase, on a terminal only
        report = run(obj.settings, as_of=parse_time(as_of), dry_run=dry_run, wait_seconds=wait_seconds, echo=_note,
                     hold=breaker.hold, phase=lambda name: advance(0, description=name))  # fmt: skip
    print_run_report(report, click.echo)
    for trip in (breaker.outcome.held if breaker.outcome else []):
        click.echo(f"  circuit breaker holds {trip.journey_id}'s actions: release with --ack {trip.ack}", err=True)


@cli.command()
@click.pass_obj
def status(obj: Context) -> None:
    """Per journey: enrolled, active, goal achieved, unenrolled, completed, pending actions."""
    from journeys.report import print_status

    print_status(obj.settings, click.echo)


@cli.command()
@click.argument("journey")
@click.option("--as-of", "as_of", default=None, help="Logical time T (ISO, UTC); default: now.")
@click.option("--sample", type=click.IntRange(min=0), default=10, show_default=True, help="Entity ids to show per list.")
@click.pass_obj
def preview(obj: Context, journey: str, as_of: str | None, sample: int) -> None:
    """Who would enter, reach the goal and match the exit of JOURNEY at T (changes no state)."""
    from journeys.report import print_preview

    print_preview(obj.settings, journey, parse_time(as_of), sample, click.echo)


@cli.command()
@click.argument("entity_id")
@click.option("--journey", default=None, help="Explain entry, blacklist and goal of this journey, and the history.")
@click.option("--segment", default=None, help="Explain this segment's criteria.")
@click.option("--as-of", "as_of", default=None, help="Logical time T (default: the T of the last build).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def explain(obj: Context, entity_id: str, journey: str | None, segment: str | None, as_of: str | None, as_json: bool) -> None:
    """Why ENTITY_ID is or is not in a segment or journey: every leaf, its value and verdict at T."""
    import json

    from journeys.trust.explain import explain_entity

    if journey and segment:
        raise click.UsageError("pass --journey or --segment, not both")
    report = explain_entity(obj.settings, entity_id, journey=journey, segment=segment, as_of=parse_time(as_of),
                            echo=(lambda m: None) if as_json else click.echo)  # fmt: skip
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))


@cli.command()
@click.option("--against", "against", default=None, metavar="REF",
              help="A git ref whose sql_rules/ and journeys.yml to compare with (default: the rules of the last run).")
@click.option("--as-of", "as_of", default=None, help="Logical time T (default: the T of the last committed run, else now).")
@click.option("--fail-over", "fail_over", default=None, metavar="N%", callback=lambda ctx, param, value: _percent(value),
              help="Exit 1 when a journey's entering set changes by more than N% (for CI).")
@click.option("--sample", type=click.IntRange(min=0), default=10, show_default=True, help="Entity ids to show per list.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def diff(obj: Context, against: str | None, as_of: str | None, fail_over: float | None, sample: int, as_json: bool) -> None:
    """Who the working rules would add to or drop from each segment and journey, compared with other rules."""
    import json

    from journeys.trust.diff import diff_rules, fail_over_message
    from journeys.trust.diff_print import print_diff

    report = diff_rules(obj.settings, against=against, as_of=parse_time(as_of), sample=sample)
    if as_json:
        click.echo(json.dumps(report.to_json(fail_over), indent=2))
    else:
        print_diff(report, click.echo)
    failure = fail_over_message(report, fail_over) if fail_over is not None else None
    if failure:
        raise JourneysError(failure)


def _percent(value: str | None) -> float | None:
    """`20%` or `20` -> 20.0."""
    if value is None:
        return None
    try:
        number = float(value.strip().removesuffix("%"))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a percentage, e.g. 20%") from None
    if not 0 <= number < float("inf"):
        raise click.BadParameter(f"'{value}' is not a percentage of 0 or more, e.g. 20%")
    return number


@cli.command("report")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the pages (default: report/ beside the database).")
@click.pass_obj
def report_(obj: Context, out_dir: str | None) -> None:
    """Static HTML pages, an index and one per journey, with charts and tables; they work offline."""
    from journeys.trust.report import build_report

    out = Path(out_dir).resolve() if out_dir else obj.settings.db_path.parent / "report"
    pages = build_report(obj.settings.db_path, out)
    click.echo(f"wrote {len(pages)} pages to {obj.settings.display(out)}; open {obj.settings.display(pages[0])}")


@cli.command("test-path")
@click.argument("journey")
@click.argument("entity_id")
@click.option("--days", type=click.IntRange(min=1, max=90), default=14, show_default=True, help="Days to simulate after T.")
@click.option("--as-of", "as_of", default=None, help="Day 0 (ISO, UTC); default: the T of the last committed run, else now.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def test_path_(obj: Context, journey: str, entity_id: str, days: int, as_of: str | None, as_json: bool) -> None:
    """The steps ENTITY_ID would take in JOURNEY, day by day, on a scratch copy (nothing live changes)."""
    import json

    from journeys.trust.test_path import simulate_path

    report = simulate_path(obj.settings, journey, entity_id, days=days, as_of=parse_time(as_of),
                           echo=(lambda m: None) if as_json else click.echo)  # fmt: skip
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))


@cli.command()
@click.argument("journey")
@click.option("--from", "start", required=True, help="First logical time (ISO date or timestamp, UTC).")
@click.option("--to", "end", required=True, help="Last logical time (ISO date or timestamp, UTC).")
@click.option("--every", default="1d", show_default=True, help="Step between runs: 30m, 12h, 1d, 1w.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def backtest(obj: Context, journey: str, start: str, end: str, every: str, as_json: bool) -> None:
    """JOURNEY replayed alone at past logical times on a scratch copy, the sources cut at each T."""
    import json

    from journeys.trust.backtest import backtest as run_backtest

    report = run_backtest(obj.settings, journey, parse_time(start), parse_time(end), every=every,
                          echo=(lambda m: None) if as_json else click.echo)  # fmt: skip
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))


@cli.command()
@click.option("--users", type=click.IntRange(min=20), default=2000, show_default=True, help="Size of the simulated world.")
@click.option("--days", type=click.IntRange(min=1, max=60), default=5, show_default=True, help="Simulated days (two runs each).")
@click.pass_obj
def demo(obj: Context, users: int, days: int) -> None:
    """Sample data and sample rules, several runs over simulated days, then the outcomes."""
    from journeys.demo import run_demo

    run_demo(obj.settings, users=users, days=days, echo=click.echo)


def _note(message: str) -> None:
    click.echo(message, err=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one place turns JourneysError into `error: ...` and exit 1."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, standalone_mode=False, prog_name="journeys")
        return 0
    except RuleError as e:
        for problem in e.problems:
            click.echo(str(problem), err=True)
        click.echo(f"error: {len(e.problems)} problem(s) in sql_rules/; nothing was compiled or run", err=True)
        return 1
    except JourneysError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:  # usage errors: click's own message and exit code (2)
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except Exception as e:  # a bug, or a library failing: one line unless --debug
        if debug:
            raise
        click.echo(f"error: unexpected {type(e).__name__}: {e} (run again with --debug for the traceback)", err=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())

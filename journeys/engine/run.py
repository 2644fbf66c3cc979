"""One whole run at logical time T: compile, dbt build, transitions (one transaction), actions.

`journeys run` and the Dagster job both call `run()`; nothing else changes journey state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from journeys.config import Settings
from journeys.engine import faults
from journeys.engine.build import build_models, compile_project, connect, prepare_warehouse
from journeys.engine.dbt import DbtProject, NodeResult
from journeys.engine.execute import ExecutionCounts, execute_due_actions
from journeys.engine.ledger import due_actions
from journeys.engine.lock import run_lock
from journeys.engine.rule_snapshot import digest, record_snapshot, rule_files
from journeys.engine.state import STATE_SCHEMA as S, last_committed_as_of
from journeys.engine.transitions import RunTransitions, TransitionCounts
from journeys.errors import StateError


@dataclass
class RunReport:
    run_id: str
    as_of: dt.datetime
    dry_run: bool
    transitions: TransitionCounts
    executed: ExecutionCounts = field(default_factory=ExecutionCounts)
    would_execute: list[tuple[str, str, str, str]] = field(default_factory=list)  # journey, entity, step, action type
    nodes: list[NodeResult] = field(default_factory=list)  # what dbt built (Dagster reports one materialization each)
    held: list[str] = field(default_factory=list)  # journeys whose actions a guard held back this run


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def run_id_for(as_of: dt.datetime) -> str:
    """The run at T has one id: a run that died is redone under the same id by the next run at T."""
    return "r" + as_of.strftime("%Y%m%dT%H%M%S")


def rules_hash(project_dir: Path) -> str:
    """The digest of sql_rules/** and journeys.yml: the key of the run's rule snapshot."""
    return digest(rule_files(project_dir))


def default_executors(settings: Settings, rules) -> list:
    from actions.attributes import AttributeExecutor
    from actions.email import EmailExecutor
    from actions.task import TaskExecutor
    from actions.webhook import WebhookExecutor

    return [EmailExecutor.from_settings(rules.templates, settings.smtp_url, rules.settings.email), TaskExecutor(),
            AttributeExecutor(), WebhookExecutor(rules.settings.webhooks.allow)]  # fmt: skip


def run(
    settings: Settings,
    *,
    as_of: dt.datetime | None = None,
    dry_run: bool = False,
    executors: list | None = None,
    dbt: DbtProject | None = None,
    wait_seconds: float = 0.0,
    echo: Callable[[str], None] = lambda message: None,
    inspect: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    hold: Callable[[duckdb.DuckDBPyConnection, RunReport], set[str]] | None = None,
    phase: Callable[[str], None] = lambda name: None,
    trace_steps: bool = False,
) -> RunReport:
    """Run the journeys at `as_of` (default: now, UTC). A dry run reports and changes no journey state.

    `hold`, called after the transitions are committed, names journeys whose due actions must wait
    (e.g. a circuit breaker): they stay pending and run on a later run once released. `phase` is told
    the name of each phase as it starts (a progress display). `trace_steps` keeps every step the stepper
    takes, with what decided it, in journey_state.step_trace (test-path's scratch copies; off in production).
    """
    as_of = as_of or utc_now()
    run_id = run_id_for(as_of)
    with run_lock(settings.db_path, wait_seconds=wait_seconds, what=f"journeys run {run_id}", on_takeover=echo):
        files = rule_files(settings.project_dir)  # read once: the snapshot is what this run compiled
        phase("compiling rules")
        compiled = compile_project(settings)  # a rule error stops here, before any SQL
        prepare_warehouse(settings)
        con = connect(settings)
        try:
            _refuse_the_past(con, as_of)
            if not dry_run:
                _start_run(con, run_id, as_of)
        finally:
            con.close()

        echo(f"building models at {as_of:%Y-%m-%d %H:%M:%S}")
        phase("dbt build")
        faults.point("before_dbt_build")
        try:
            nodes = build_models(settings, dbt or DbtProject(settings.project_dir, settings.db_path), as_of)
        except BaseException as e:  # a failing dbt test or model: the run failed before any transition
            if not dry_run:
                con = connect(settings)
                try:
                    _record_failure(con, run_id, e)
                finally:
                    con.close()
            raise
        faults.point("after_dbt_build")

        con = connect(settings)
        try:
            phase("transitions")
            report = _transitions(con, compiled.rules, as_of, run_id, dry_run, files, inspect, trace_steps)
            faults.point("after_commit")
            report.nodes = nodes
            if not dry_run:
                names = {jid: j.title for jid, j in compiled.rules.journeys.items()}
                report.held = sorted(hold(con, report)) if hold is not None else []
                phase("actions")
                report.executed = execute_due_actions(
                    con, as_of, executors or default_executors(settings, compiled.rules), names, held_journeys=set(report.held),
                    settings=compiled.rules.settings, run_id=run_id,
                )
                faults.point("after_actions")
                con.execute(f"update {S}.runs set finished_at = ? where run_id = ?", [utc_now(), run_id])
            return report
        except BaseException as e:
            if not dry_run:
                _record_failure(con, run_id, e)
            raise
        finally:
            con.close()


def _refuse_the_past(con: duckdb.DuckDBPyConnection, as_of: dt.datetime) -> None:
    last = last_committed_as_of(con)
    if last is not None and as_of < last:
        raise StateError(
            f"--as-of {as_of:%Y-%m-%d %H:%M:%S} is before the last committed run ({last:%Y-%m-%d %H:%M:%S}); "
            "journey state only moves forward. Use `journeys backtest` to replay the past on a copy"
        )


def _start_run(con: duckdb.DuckDBPyConnection, run_id: str, as_of: dt.datetime) -> None:
    # A run that died without committing left only this row; a later T marks it abandoned.
    con.execute(
        f"update {S}.runs set status = 'failed', error = 'abandoned: died before committing' "
        f"where status = 'running' and run_id <> ?",
        [run_id],
    )
    con.execute(
        f"""insert into {S}.runs (run_id, as_of, started_at, status, attempts) values (?, ?, ?, 'running', 1)
            on conflict (run_id) do update set started_at = excluded.started_at, attempts = {S}.runs.attempts + 1,
                status = case when {S}.runs.status = 'committed' then 'committed' else 'running' end,
                error = null, finished_at = null""",
        [run_id, as_of, utc_now()],
    )


def _transitions(con, rules, as_of, run_id, dry_run, files, inspect=None, trace_steps=False) -> RunReport:
    """All state transitions of the run, committed together (or rolled back for a dry run)."""
    con.execute("begin")
    try:
        transitions = RunTransitions(con, rules, as_of, run_id, trace_steps=trace_steps)
        counts = transitions.apply_all()
        faults.point("mid_transitions")
        report = RunReport(run_id, as_of, dry_run, counts)
        if dry_run:
            report.would_execute = [(a.journey_id, a.entity_id, a.step_id, a.action_type) for a in due_actions(con, as_of)]
            if inspect is not None:
                inspect(con)  # reads the run's temp tables (_enrolled, _goal, ...) before they are rolled back
            con.execute("rollback")
            return report
        rules_digest = record_snapshot(con, files, as_of)  # in the commit: a committed run always has its rules
        con.execute(f"update {S}.runs set status = 'committed', rules_hash = ? where run_id = ?", [rules_digest, run_id])
        faults.point("before_commit")
        con.execute("commit")
        return report
    except BaseException:
        con.execute("rollback")
        raise


def _record_failure(con: duckdb.DuckDBPyConnection, run_id: str, error: BaseException) -> None:
    try:
        con.execute(
            f"update {S}.runs set status = case when status = 'committed' then status else 'failed' end, "
            f"error = ?, finished_at = ? where run_id = ?",
            [f"{type(error).__name__}: {error}"[:2000], utc_now(), run_id],
        )
    except duckdb.Error:
        pass  # the original error matters more than the bookkeeping

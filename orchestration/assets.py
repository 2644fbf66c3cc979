"""One multi-asset, one `engine.run` per Dagster run: the same code path as `journeys run`.

The run builds every dbt model, commits the transitions, lets the segment-size breaker hold
journeys, then executes the due actions. The op reports it as Dagster events: a materialization per
dbt model and one for each engine step, a check result per dbt test, and the breaker's check.
"""

# No `from __future__ import annotations` here: Dagster reads the op's parameter annotations as types.
import datetime as dt
import time
from pathlib import Path
from collections.abc import Iterator, Mapping

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pydantic import Field

from journeys.engine.dbt import DbtError, NodeResult
from journeys.engine.lock import run_lock
from journeys.engine.run import RunReport, run
from journeys.errors import JourneysError
from journeys.engine.breaker import Breaker, BreakerOutcome, parse_acks
from orchestration.lineage import ACTIONS, BREAKER_CHECK, TRANSITIONS, Lineage
from orchestration.reporting import (
    Snapshot,
    breaker_markdown,
    ledger_markdown,
    outcomes_markdown,
    read_run_results,
    read_snapshot,
    transitions_markdown,
)
from orchestration.resources import JourneysResource

AS_OF_TAG = "journeys/as_of"
OP_NAME = "run_journeys"
ROW_COUNT = "dagster/row_count"  # the key the UI shows as the asset's row count


class RunJourneysConfig(Config):
    as_of: str | None = Field(
        default=None,
        description="Logical time T (ISO, UTC). Default: the schedule's tick, else the time the run was launched "
        "(a retry keeps its original run's T).",
    )
    acknowledge: list[str] = Field(
        default_factory=list,
        description="Segment-size breaker trips to release, as journey@run_id (named in the check's metadata).",
    )


def parse_as_of(text: str) -> dt.datetime:
    """An ISO date or timestamp; a zone is converted to UTC, none means UTC (stored without a zone)."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise JourneysError(
            f"as_of '{text}' is not an ISO date or timestamp, e.g. 2026-11-23T09:00"
        ) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.replace(microsecond=0)


def as_of_for_run(configured: str | None, tags: Mapping[str, str], launched_at: dt.datetime) -> dt.datetime:
    """T for a Dagster run: run config, else the schedule's tag, else the launch time of the original run."""
    text = configured or tags.get(AS_OF_TAG)
    if text:
        return parse_as_of(text)
    if launched_at.tzinfo is not None:
        launched_at = launched_at.astimezone(dt.UTC).replace(tzinfo=None)
    return launched_at.replace(microsecond=0)


def _launched_at(context: AssetExecutionContext) -> dt.datetime:
    root = context.run.root_run_id or context.run.run_id
    record = context.instance.get_run_record_by_id(root)
    if record is not None and record.create_timestamp is not None:
        return record.create_timestamp
    return dt.datetime.now(dt.UTC)


def build_run_assets(lineage: Lineage) -> AssetsDefinition:
    """The multi-asset over the whole graph; both the schedule and `journeys_run` materialize it."""

    @multi_asset(
        name=OP_NAME,
        specs=[*lineage.models, *lineage.engine],
        check_specs=lineage.checks,
        can_subset=False,
        description="One whole journeys run at logical time T (the same engine.run as `journeys run`).",
    )
    def run_journeys(context: AssetExecutionContext, config: RunJourneysConfig, journeys: JourneysResource):
        settings = journeys.settings()
        as_of = as_of_for_run(config.as_of, context.run.tags, _launched_at(context))
        breaker = Breaker(
            journeys.bounds(),
            parse_acks(journeys.breaker_ack) + parse_acks(config.acknowledge),
            f"dagster run {context.run.run_id}",
        )
        context.log.info(f"journeys run at T={as_of:%Y-%m-%d %H:%M:%S} on {settings.db_path}")

        started = time.time()
        try:
            report = run(settings, as_of=as_of, dbt=journeys.dbt(), wait_seconds=journeys.lock_wait_seconds,
                         echo=context.log.info, hold=breaker.hold)  # fmt: skip
        except DbtError:
            yield from _failed_build_events(lineage, settings.project_dir, started)
            raise
        snap = read_snapshot(settings, lineage.model_info, report.run_id, journeys.lock_wait_seconds)
        yield from _run_events(lineage, report, snap, breaker.outcome, _outcomes_report(context, journeys))

    return run_journeys


# ----------------------------------------------------------------------------- events


def _model_result(lineage: Lineage, node: NodeResult, snap: Snapshot) -> MaterializeResult:
    info = lineage.model_info[node.name]
    metadata = {"dbt_status": node.status, "dbt_seconds": round(node.seconds, 3)}
    if node.name in snap.row_counts:
        metadata[ROW_COUNT] = snap.row_counts[node.name]
    if node.name == "journey_outcomes":
        metadata["outcomes"] = MetadataValue.md(outcomes_markdown(snap))
    return MaterializeResult(asset_key=info.key, metadata=metadata)


def _test_result(
    lineage: Lineage, name: str, status: str, seconds: float, message: str | None, failures=None
):
    spec = lineage.test_checks.get(name)
    if spec is None:
        return None
    metadata = {"dbt_status": status, "dbt_seconds": round(seconds, 3)}
    if message:
        metadata["message"] = message[:2000]
    if failures is not None:
        metadata["failing_rows"] = failures
    return AssetCheckResult(
        asset_key=spec.asset_key, check_name=spec.name, passed=status == "pass",
        severity=AssetCheckSeverity.WARN if status == "warn" else AssetCheckSeverity.ERROR, metadata=metadata,
    )  # fmt: skip


def _outcomes_report(context: AssetExecutionContext, journeys: JourneysResource) -> dict:
    """`journeys report` after the run, linked from the actions asset; a report that fails never fails the run."""
    if not journeys.report_dir:
        return {}
    from journeys.trust.report import build_report

    settings = journeys.settings()
    try:  # under the run lock: a queued run must not find the file open for reading
        with run_lock(settings.db_path, wait_seconds=journeys.lock_wait_seconds, what="journeys report", on_takeover=context.log.info):
            index = build_report(settings.db_path, Path(journeys.report_dir))[0]
    except Exception as e:  # noqa: BLE001 - the run is committed; the report is a view of it
        context.log.warning(f"the outcomes report was not written: {type(e).__name__}: {e}")
        return {}
    return {"report": MetadataValue.url(index.resolve().as_uri()), "report_path": MetadataValue.path(str(index.resolve()))}


def _run_events(
    lineage: Lineage, report: RunReport, snap: Snapshot, outcome: BreakerOutcome | None, report_links: dict | None = None
) -> Iterator:
    models = [n for n in report.nodes if n.resource_type == "model" and n.name in lineage.model_info]
    tests: dict = {}
    for n in report.nodes:
        if n.resource_type == "test":
            result = _test_result(lineage, n.name, n.status, n.seconds, n.message)
            if result is not None:
                tests.setdefault(result.asset_key, []).append(result)
    marts = [n for n in models if lineage.model_info[n.name].group == "analyst_relations"]

    for node in [n for n in models if n not in marts]:  # staging → generated
        yield _model_result(lineage, node, snap)
        yield from tests.pop(lineage.model_info[node.name].key, [])

    held = outcome.held_journeys if outcome else set()
    entering = {j: row["entering"] for j, row in sorted(snap.transitions.items())}
    exiting = {j: row["exiting"] for j, row in sorted(snap.transitions.items())}
    yield MaterializeResult(
        asset_key=TRANSITIONS,
        metadata={
            "run_id": report.run_id,
            "as_of": report.as_of.isoformat(sep=" "),
            "transitions": MetadataValue.md(transitions_markdown(snap, held)),
            "entering": MetadataValue.json(entering),
            "exiting": MetadataValue.json(exiting),
            ROW_COUNT: snap.state_rows.get("enrollments", 0),
            "transition_rows": snap.state_rows.get("transitions", 0),
        },
    )
    if outcome is not None:
        yield _breaker_result(report, outcome)

    executed = report.executed
    yield MaterializeResult(
        asset_key=ACTIONS,
        metadata={
            "run_id": report.run_id,
            "executed": MetadataValue.json(dict(sorted(executed.done.items()))),
            "failed": MetadataValue.json(dict(sorted(executed.failed.items()))),
            "held_journeys": MetadataValue.json(sorted(held)),
            "ledger": MetadataValue.md(ledger_markdown(snap)),
            "outcomes": MetadataValue.md(outcomes_markdown(snap)),
            **(report_links or {}),
            ROW_COUNT: snap.state_rows.get("actions", 0),
            **(
                {"errors": MetadataValue.md("\n".join(f"- {e}" for e in executed.errors[:20]))}
                if executed.errors
                else {}
            ),
        },
    )

    for node in marts:  # views over journey state: reported after the actions they show
        yield _model_result(lineage, node, snap)
        yield from tests.pop(lineage.model_info[node.name].key, [])
    for rest in tests.values():
        yield from rest


def _breaker_result(report: RunReport, outcome: BreakerOutcome) -> AssetCheckResult:
    held_md, numbers_md = breaker_markdown(outcome)
    b = outcome.bounds
    metadata = {
        "held": MetadataValue.md(held_md),
        "this_run": MetadataValue.md(numbers_md),
        "held_journeys": MetadataValue.json(sorted(outcome.held_journeys)),
        "bounds": f"trips at >= {b.min_entering} entering and > {b.max_factor:g}x the previous run "
        f"or > {b.max_share:.0%} of the entity table",
    }
    for trip in outcome.held:
        metadata[f"{trip.journey_id}_entering"] = trip.entering
        metadata[f"{trip.journey_id}_previous_entering"] = trip.previous if trip.previous is not None else -1
        metadata[f"{trip.journey_id}_entity_rows"] = trip.entity_count
        metadata[f"{trip.journey_id}_acknowledge"] = trip.ack
    if outcome.unmatched_acks:
        metadata["unmatched_acknowledgements"] = MetadataValue.json(outcome.unmatched_acks)
    return AssetCheckResult(
        asset_key=TRANSITIONS, check_name=BREAKER_CHECK, passed=not outcome.held,
        severity=AssetCheckSeverity.ERROR, metadata=metadata,
        description=(f"held: {', '.join(t.ack for t in outcome.held)}; their actions stay pending until acknowledged "
                     "or the bound is raised") if outcome.held else f"no journey held at {report.run_id}",
    )  # fmt: skip


def _failed_build_events(lineage: Lineage, project_dir, since: float) -> Iterator:
    """dbt failed: report what it built and which tests failed (from run_results.json), then the run fails."""
    for result in read_run_results(project_dir, since):
        unique_id, status = result.get("unique_id", ""), str(result.get("status"))
        seconds = float(result.get("execution_time") or 0.0)
        if unique_id.startswith("model."):
            name = unique_id.split(".", 2)[2]
            if status == "success" and name in lineage.model_info:
                yield MaterializeResult(asset_key=lineage.model_info[name].key,
                                        metadata={"dbt_status": status, "dbt_seconds": round(seconds, 3)})  # fmt: skip
        elif unique_id.startswith("test.") and status in ("pass", "fail", "warn", "error"):
            check = _test_result(
                lineage, unique_id, status, seconds, result.get("message"), result.get("failures")
            )
            if check is not None:
                yield check

"""The `journeys_run` job and its schedule: each tick's time is the run's logical time T.

Missed ticks catch up in order: a tick launches every tick of the cron since the last one this
schedule launched (at most JOURNEYS_SCHEDULE_MAX_CATCHUP), oldest first, each under its own run key,
and the instance's queue (one run at a time, dagster.yaml) runs them in that order. Dagster's own
catch-up only exists for partitioned schedules, and partitions would misdescribe journey state: it
only moves forward, a past T cannot be re-materialized.
"""

from __future__ import annotations

import datetime as dt
import os

from dagster import (
    AssetChecksDefinition,
    AssetSelection,
    AssetsDefinition,
    DefaultScheduleStatus,
    JobDefinition,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
)
from dagster._utils.schedules import cron_string_iterator  # the scheduler's own cron arithmetic

from orchestration.assets import AS_OF_TAG, OP_NAME

JOB_NAME = "journeys_run"
SCHEDULE_NAME = "journeys_schedule"
DEFAULT_CRON = "0 * * * *"  # hourly
DEFAULT_MAX_CATCHUP = 24


def build_run_job(run_assets: AssetsDefinition, data_checks: AssetChecksDefinition | None = None) -> JobDefinition:
    """`journeys_run`: the whole graph, one engine run ("run now" from the UI, or the schedule's target).

    The daily full-scan checks target the same assets; an asset selection would pull them into every run."""
    selection = AssetSelection.assets(*run_assets.keys)
    if data_checks is not None:
        selection = selection - AssetSelection.checks(data_checks)
    return define_asset_job(
        JOB_NAME,
        selection=selection,
        description="One whole journeys run: dbt build, transitions, breaker, due actions. Without run config, "
        "T is the time the run was launched; set ops.run_journeys.config.as_of to run a given T.",
    )


def as_of_text(tick: dt.datetime) -> str:
    """A tick as T: UTC, no zone, seconds (the engine's run id is r<T>)."""
    if tick.tzinfo is not None:
        tick = tick.astimezone(dt.UTC).replace(tzinfo=None)
    return tick.replace(microsecond=0).isoformat()


def ticks_to_launch(cron: str, timezone: str, last_launched: dt.datetime | None, tick: dt.datetime,
                    max_catchup: int) -> list[dt.datetime]:  # fmt: skip
    """The ticks after `last_launched` up to and including `tick`, oldest first, at most `max_catchup`."""
    if last_launched is None or last_launched >= tick:
        return [tick]
    ticks = []
    for t in cron_string_iterator(last_launched.timestamp() + 1, cron, timezone):
        if t.timestamp() > tick.timestamp():
            break
        ticks.append(t)
    if not ticks or ticks[-1].timestamp() != tick.timestamp():
        ticks.append(tick)  # a tick evaluated off the cron (e.g. "Test schedule" in the UI)
    return ticks[-max(max_catchup, 1) :]


def build_schedule(job: JobDefinition, cron: str | None = None, timezone: str | None = None,
                   max_catchup: int | None = None) -> ScheduleDefinition:  # fmt: skip
    cron = cron or os.environ.get("JOURNEYS_SCHEDULE_CRON") or DEFAULT_CRON
    timezone = timezone or os.environ.get("JOURNEYS_SCHEDULE_TIMEZONE") or "UTC"
    max_catchup = max_catchup or int(os.environ.get("JOURNEYS_SCHEDULE_MAX_CATCHUP") or DEFAULT_MAX_CATCHUP)

    @schedule(
        name=SCHEDULE_NAME,
        job=job,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Runs the journeys at every tick of '{cron}' ({timezone}); the tick time is T. "
        f"Missed ticks (daemon down) catch up in order, at most {max_catchup}.",
    )
    def journeys_schedule(context: ScheduleEvaluationContext):
        tick = context.scheduled_execution_time
        if tick is None:
            return SkipReason("no scheduled execution time")
        previous = context.instance.get_runs(
            filters=RunsFilter(job_name=job.name, tags={"dagster/schedule_name": SCHEDULE_NAME}), limit=1
        )
        last = previous[0].tags.get(AS_OF_TAG) if previous else None
        last_launched = dt.datetime.fromisoformat(last).replace(tzinfo=dt.UTC) if last else None
        requests = []
        for t in ticks_to_launch(cron, timezone, last_launched, tick, max_catchup):
            as_of = as_of_text(t)
            requests.append(RunRequest(
                run_key=f"tick-{as_of}",
                run_config={"ops": {OP_NAME: {"config": {"as_of": as_of}}}},
                tags={AS_OF_TAG: as_of},
            ))  # fmt: skip
        return requests

    return journeys_schedule

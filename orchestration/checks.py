"""The daily `journeys_data_checks` job: the dbt tests a run skips because they scan whole tables.

Each run (the tick) keeps the cheap tests on the dimension tables and stops on a failure; the
full-scan ones (unique event ids over the whole event table, the mart relations over journey state)
run here, once a day by default, as Dagster asset checks on the same assets. `journeys check` runs them
from the command line.
"""

from __future__ import annotations

import os

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetChecksDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    JobDefinition,
    ScheduleDefinition,
    define_asset_job,
    multi_asset_check,
)

from journeys.engine.build import check_data
from journeys.engine.lock import run_lock
from orchestration.lineage import Lineage
from orchestration.resources import JourneysResource

CHECKS_NAME = "journeys_data_checks"
DEFAULT_CHECKS_CRON = "30 2 * * *"  # daily, off the hour of the hourly run


def build_data_checks(lineage: Lineage) -> AssetChecksDefinition | None:
    if not lineage.data_checks:
        return None

    @multi_asset_check(specs=lineage.data_checks, name="full_scan_dbt_tests", can_subset=False,
                       description="The full-scan dbt tests (unique event ids, the mart relations), under the run lock.")  # fmt: skip
    def full_scan_dbt_tests(context, journeys: JourneysResource):  # unannotated: dagster cannot read a postponed annotation here
        settings = journeys.settings()
        with run_lock(settings.db_path, wait_seconds=journeys.lock_wait_seconds, what="journeys data checks",
                      on_takeover=context.log.info):  # fmt: skip
            nodes = check_data(settings, journeys.dbt(), raise_on_failure=False)
        results = {n.name: n for n in nodes if n.resource_type == "test"}
        for spec in lineage.data_checks:
            node = results.get(spec.name)
            status = node.status if node else "not run"
            metadata = {"dbt_status": status}
            if node is not None:
                metadata["dbt_seconds"] = round(node.seconds, 3)
                if node.message:
                    metadata["message"] = node.message[:2000]
            yield AssetCheckResult(asset_key=spec.asset_key, check_name=spec.name, passed=status == "pass",
                                   severity=AssetCheckSeverity.ERROR, metadata=metadata)  # fmt: skip

    return full_scan_dbt_tests


def build_checks_job(checks: AssetChecksDefinition) -> JobDefinition:
    return define_asset_job(CHECKS_NAME, selection=AssetSelection.checks(checks),
                            description="The dbt tests too slow for every run (whole-table scans).")  # fmt: skip


def build_checks_schedule(job: JobDefinition) -> ScheduleDefinition:
    cron = os.environ.get("JOURNEYS_CHECKS_CRON") or DEFAULT_CHECKS_CRON
    return ScheduleDefinition(name=f"{CHECKS_NAME}_schedule", job=job, cron_schedule=cron,
                              execution_timezone=os.environ.get("JOURNEYS_SCHEDULE_TIMEZONE") or "UTC",
                              default_status=DefaultScheduleStatus.STOPPED)  # fmt: skip

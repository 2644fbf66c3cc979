"""The one Dagster `Definitions`: `dagster dev -m orchestration.definitions` (or `make ui`).

Loading compiles the rules (so the generated models exist and match them) and parses the dbt project
in-process to draw the asset graph; nothing shells out to dbt. A rule error does not stop the UI from
loading: the graph shows the models as they were last compiled, and a run fails with the error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dagster import Definitions

from journeys.config import Settings
from journeys.engine.build import compile_project
from journeys.errors import JourneysError
from orchestration.assets import build_run_assets
from orchestration.checks import build_checks_job, build_checks_schedule, build_data_checks
from orchestration.jobs import build_run_job, build_schedule
from orchestration.lineage import build_lineage
from orchestration.resources import dbt_project, resolve_paths, resource_from_env

log = logging.getLogger("orchestration")


def load_manifest(project_dir: Path, db_path: Path) -> dict:
    """Compile the rules, then the dbt manifest as a dict (parsed in-process, cached for the runs)."""
    try:
        compile_project(Settings(project_dir, db_path, None))
    except JourneysError as e:
        log.warning("the rules do not compile; the asset graph shows the models last compiled. %s", e)
    project = dbt_project(project_dir, db_path)
    previous = os.environ.get("JOURNEYS_DB")
    try:
        project._runner()  # parses (or reuses the parse while no file changed)
    finally:  # the runner points JOURNEYS_DB at the database for dbt; loading must not change the environment
        if previous is None:
            os.environ.pop("JOURNEYS_DB", None)
        else:
            os.environ["JOURNEYS_DB"] = previous
    return project._manifest.writable_manifest().to_dict()


def build_definitions(
    project_dir: str | Path | None = None, db_path: str | Path | None = None, **resource_overrides
) -> Definitions:
    """Definitions for one project and database (default: from the environment, see resources.py)."""
    root, db = resolve_paths(project_dir, db_path)
    lineage = build_lineage(load_manifest(root, db))
    run_assets = build_run_assets(lineage)
    checks = build_data_checks(lineage)
    job = build_run_job(run_assets, checks)
    checks_job = build_checks_job(checks) if checks else None
    return Definitions(
        assets=[*lineage.sources, run_assets],
        asset_checks=[checks] if checks else [],
        jobs=[job, *([checks_job] if checks_job else [])],
        schedules=[build_schedule(job), *([build_checks_schedule(checks_job)] if checks_job else [])],
        resources={"journeys": resource_from_env(root, db, **resource_overrides)},
    )


defs = build_definitions()

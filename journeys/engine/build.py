"""Rules → generated models → dbt build at a logical time: the first half of every run."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import duckdb

from journeys.compiler.writer import CompileResult, write_models
from journeys.config import Settings
from journeys.engine.dbt import DbtProject, NodeResult
from journeys.engine.state import ensure_state, set_run_context
from journeys.loading import ensure_source_tables
from journeys.rules.load import RuleSet
from journeys.rules.validate import load_and_validate


@dataclass(frozen=True)
class Compiled:
    rules: RuleSet
    result: CompileResult


def compile_project(settings: Settings) -> Compiled:
    """Validate every rule (raising RuleError with all problems) and write the generated models."""
    rules = load_and_validate(settings.project_dir)
    return Compiled(rules, write_models(rules))


def connect(settings: Settings) -> duckdb.DuckDBPyConnection:
    """The engine's connection, with the memory bound dbt's profile uses (JOURNEYS_MEMORY_LIMIT, e.g. 4GB)."""
    settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    limit = os.environ.get("JOURNEYS_MEMORY_LIMIT")
    # DuckDB refuses a second connection to a file open in this process with another config: set it only when asked
    return duckdb.connect(str(settings.db_path), config={"memory_limit": limit} if limit else {})


def prepare_warehouse(settings: Settings) -> None:
    """Source and state tables exist before dbt reads them (a fresh database builds)."""
    con = connect(settings)
    try:
        ensure_source_tables(con, settings.project_dir)
        ensure_state(con)
    finally:
        con.close()


# dbt tests that scan an event-sized table or the engine's own state: `journeys check`, not every tick.
FULL_SCAN_TAG = "full_scan"
FULL_SCAN = f"tag:{FULL_SCAN_TAG}"


def build_models(settings: Settings, dbt: DbtProject, as_of: dt.datetime) -> list[NodeResult]:
    """Materialize staging, features, membership and matches as of T, with the tests a tick runs."""
    prepare_warehouse(settings)
    con = connect(settings)
    try:
        set_run_context(con, as_of)
    finally:
        con.close()  # dbt opens the file itself
    return dbt.build(exclude=[FULL_SCAN])


def check_data(settings: Settings, dbt: DbtProject, *, raise_on_failure: bool = True) -> list[NodeResult]:
    """Every data test, the full-scan ones included, over the views (rebuilt first: they are cheap).

    Raises DbtError naming each failing test (unless not `raise_on_failure`: then the results tell).
    Reads journey state through the mart views; changes none."""
    prepare_warehouse(settings)
    return dbt.build(select=["path:models/staging", "path:models/intermediate", "path:models/marts"], check=raise_on_failure)

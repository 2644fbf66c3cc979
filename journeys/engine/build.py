"""Rules → generated models → dbt build at a logical time: the first half of every run."""

from __future__ import annotations

import datetime as dt
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
    settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(settings.db_path))


def prepare_warehouse(settings: Settings) -> None:
    """Source and state tables exist before dbt reads them (a fresh database builds)."""
    con = connect(settings)
    try:
        ensure_source_tables(con, settings.project_dir)
        ensure_state(con)
    finally:
        con.close()


def build_models(settings: Settings, dbt: DbtProject, as_of: dt.datetime) -> list[NodeResult]:
    """Materialize staging, features, membership and matches as of T."""
    prepare_warehouse(settings)
    con = connect(settings)
    try:
        set_run_context(con, as_of)
    finally:
        con.close()  # dbt opens the file itself
    return dbt.build()

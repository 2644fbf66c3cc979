"""Shared test harness: real project folders, real DuckDB files, real in-process dbt builds."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from journeys.config import Settings
from journeys.contracts import load_contracts
from journeys.engine.build import build_models, compile_project
from journeys.engine.dbt import DbtProject

REPO = Path(__file__).resolve().parents[1]


def copy_project(root: Path, rules_from: Path | None = REPO / "sql_rules") -> Path:
    """A project folder: the repo's dbt_project/ (without generated models) and a copy of some rules."""
    shutil.copytree(REPO / "dbt_project", root / "dbt_project", ignore=shutil.ignore_patterns("target", "logs", "generated"))
    if rules_from is not None:
        shutil.copytree(rules_from, root / "sql_rules")
    else:
        for sub in ("segments", "journeys", "templates"):
            (root / "sql_rules" / sub).mkdir(parents=True, exist_ok=True)
    return root


def days_after(t0: dt.datetime) -> Callable[[float], dt.datetime]:
    """`D = days_after(T0)`: D(n) is T0 plus n days, at T0's time of day (n may be negative or fractional)."""

    def day(n: float) -> dt.datetime:
        return t0 + dt.timedelta(days=n)

    return day


class Project:
    """A project under test: write rules, put rows in the source tables, compile, build, query."""

    def __init__(self, root: Path):
        self.root = root
        self.settings = Settings.resolve(root, root / "warehouse" / "journeys.duckdb")
        self.dbt = DbtProject(root, self.settings.db_path)

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def use_smtp(self, url: str) -> "Project":
        """Send this project's emails through the SMTP server at `url` (for the CLI: JOURNEYS_SMTP_URL)."""
        self.settings = dataclasses.replace(self.settings, smtp_url=url)
        return self

    def connect(self) -> duckdb.DuckDBPyConnection:
        self.settings.db_path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(self.settings.db_path))

    def insert_rows(self, rows: dict[str, list[tuple]]) -> None:
        """Replace source tables with these rows (columns in contract order; None is NULL)."""
        contracts = load_contracts(self.root)
        con = self.connect()
        try:
            con.execute("create schema if not exists raw")
            for table, contract in contracts.items():
                columns = ", ".join(f"{c.name} {c.data_type}" for c in contract.columns)
                con.execute(f"create or replace table raw.{table} ({columns})")
                if rows.get(table):
                    marks = ", ".join("?" for _ in contract.columns)
                    con.executemany(f"insert into raw.{table} values ({marks})", rows[table])
        finally:
            con.close()

    def build(self, as_of: dt.datetime):
        compile_project(self.settings)
        return build_models(self.settings, self.dbt, as_of)

    def run(self, as_of: dt.datetime, **kwargs):
        """One real engine run at T (the same code path as `journeys run`), reusing this project's dbt runner."""
        from journeys.engine.run import run

        return run(self.settings, as_of=as_of, dbt=self.dbt, **kwargs)

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        con = self.connect()
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()


def project_with(root: Path, rules: dict[str, str], rows: dict[str, list[tuple]]) -> Project:
    """A project at `root` holding only these rule files (path → text) and these source rows."""
    project = Project(copy_project(root, rules_from=None))
    for path, text in rules.items():
        project.write(path, text)
    project.insert_rows(rows)
    return project


def copy_of(template: Path, root: Path) -> Project:
    """An independent copy at `root` of the project folder `template` (its database included)."""
    shutil.copytree(template, root)
    return Project(root)


@pytest.fixture
def empty_project(tmp_path: Path) -> Project:
    return Project(copy_project(tmp_path / "project", rules_from=None))

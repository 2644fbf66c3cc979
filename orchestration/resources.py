"""The one Dagster resource: where the project and the database are, SMTP, lock wait and breaker bounds.

Every field defaults from the environment when the definitions load (no journeys.yml):

| variable | default |
|---|---|
| JOURNEYS_PROJECT_DIR | the repository root (the folder holding orchestration/) |
| JOURNEYS_DB | <project>/warehouse/journeys.duckdb |
| JOURNEYS_SMTP_URL | unset: emails go to the email_outbox relation |
| JOURNEYS_LOCK_WAIT | 600 seconds a run waits for another writer (a CLI run, a load) |
| JOURNEYS_BREAKER_MAX_FACTOR / _MAX_SHARE / _MIN_ENTERING | 10 / 0.25 / 50 |
| JOURNEYS_BREAKER_ACK | acknowledged trips, `journey@run_id`, comma separated |
| JOURNEYS_REPORT_DIR | <db folder>/report: each run writes `journeys report` there ("none": no report) |
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from journeys.config import DEFAULT_DB, Settings
from journeys.engine.dbt import DbtProject
from journeys.engine.breaker import Bounds

REPO_ROOT = Path(__file__).resolve().parents[1]


class JourneysResource(ConfigurableResource):
    """The journeys project a Dagster run works on."""

    project_dir: str = Field(description="Project folder (sql_rules/, dbt_project/).")
    db_path: str = Field(description="The DuckDB file.")
    smtp_url: str | None = Field(
        default=None, description="smtp://host:port; unset: emails go to email_outbox."
    )
    lock_wait_seconds: float = Field(
        default=600.0, description="How long a run waits for another writer's lock."
    )
    breaker_max_factor: float = Field(
        default=10.0, description="Trip when entering > this x the previous run's."
    )
    breaker_max_share: float = Field(
        default=0.25, description="Trip when entering > this share of the entity table."
    )
    breaker_min_entering: int = Field(default=50, description="Fewer entering than this never trips.")
    breaker_ack: str = Field(default="", description="Acknowledged trips: journey@run_id, comma separated.")
    report_dir: str = Field(default="", description="Where each run writes `journeys report` (linked from the "
                            "actions asset); empty: no report.")

    def settings(self) -> Settings:
        return Settings(Path(self.project_dir), Path(self.db_path), self.smtp_url or None)

    def bounds(self) -> Bounds:
        return Bounds(self.breaker_max_factor, self.breaker_max_share, self.breaker_min_entering)

    def dbt(self) -> DbtProject:
        return dbt_project(Path(self.project_dir), Path(self.db_path))


_DBT_PROJECTS: dict[tuple[Path, Path], DbtProject] = {}


def dbt_project(project_dir: Path, db_path: Path) -> DbtProject:
    """One DbtProject per (project, db) in a process: the manifest parsed for the asset specs when the
    definitions load is the one the run reuses (a parse costs ~2 s)."""
    key = (Path(project_dir).resolve(), Path(db_path).resolve())
    if key not in _DBT_PROJECTS:
        _DBT_PROJECTS[key] = DbtProject(*key)
    return _DBT_PROJECTS[key]


def resolve_paths(
    project_dir: str | Path | None = None, db_path: str | Path | None = None
) -> tuple[Path, Path]:
    """JOURNEYS_PROJECT_DIR (default: the repository root) and JOURNEYS_DB (default: warehouse/journeys.duckdb
    in the project; a relative path is relative to the current folder, as for `journeys --db`)."""
    root = Path(project_dir or os.environ.get("JOURNEYS_PROJECT_DIR") or REPO_ROOT).resolve()
    db = Path(db_path or os.environ.get("JOURNEYS_DB") or root / DEFAULT_DB)
    return root, (db if db.is_absolute() else Path.cwd() / db).resolve()  # relative to here, as for the CLI


def _env_number(name: str, default: float, kind=float):
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} is not a number; unset it for the default {default}") from None


def resource_from_env(
    project_dir: str | Path | None = None, db_path: str | Path | None = None, **overrides
) -> JourneysResource:
    """The resource as the environment configures it; keyword overrides win (tests, notebooks)."""
    root, db = resolve_paths(project_dir, db_path)
    values = {
        "project_dir": str(root),
        "db_path": str(db),
        # An SMTP URL may carry credentials: Dagster shows the variable's name, never its value.
        "smtp_url": EnvVar("JOURNEYS_SMTP_URL") if os.environ.get("JOURNEYS_SMTP_URL") else None,
        "lock_wait_seconds": _env_number("JOURNEYS_LOCK_WAIT", 600.0),
        "breaker_max_factor": _env_number("JOURNEYS_BREAKER_MAX_FACTOR", 10.0),
        "breaker_max_share": _env_number("JOURNEYS_BREAKER_MAX_SHARE", 0.25),
        "breaker_min_entering": _env_number("JOURNEYS_BREAKER_MIN_ENTERING", 50, int),
        "breaker_ack": os.environ.get("JOURNEYS_BREAKER_ACK", ""),
        "report_dir": _report_dir(db),
    }
    values.update(overrides)
    return JourneysResource(**values)


def _report_dir(db: Path) -> str:
    value = os.environ.get("JOURNEYS_REPORT_DIR")
    if value is None:
        return str(db.parent / "report")
    return "" if value.strip().lower() in ("", "none") else str(Path(value).resolve())

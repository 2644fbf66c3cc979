"""A scratch copy of a project and its database, for commands that must never change live state.

test-path, backtest and diff run the real engine (`journeys.engine.run.run`) against the copy, so what
they show is what a run does; the live files are only read, under the run lock so no run is half-written
while they are copied. Scratch runs never send anything:
the copy's executors write email to its outbox table and rehearse webhooks (`scratch_executors`), through
the same gates (send window, caps) as a real run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import duckdb

from journeys.config import Settings
from journeys.engine.dbt import DBT_DIR
from journeys.engine.ledger import DueAction
from journeys.engine.lock import run_lock
from journeys.rules.load import RULES_DIR
from journeys.rules.settings import SETTINGS_FILE


@contextmanager
def scratch_copy(settings: Settings, *, rules_from: Path | None = None, wait_seconds: float = 30.0,
                 keep: Path | None = None) -> Iterator[Settings]:  # fmt: skip
    """Yield Settings for a copy of the project (dbt_project/, sql_rules/, journeys.yml) and of the database.

    `rules_from`: a folder holding sql_rules/ (and optionally journeys.yml) to use instead of the project's.
    The copy lives in a temporary folder removed afterwards (or `keep`, a folder to leave it in).
    """
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="journeys-scratch-"))
    try:
        project = root / "project"
        _copy_project(settings.project_dir, project, rules_from)
        db_path = root / "warehouse" / settings.db_path.name
        db_path.parent.mkdir(parents=True, exist_ok=True)
        if settings.db_path.exists():
            with run_lock(settings.db_path, wait_seconds=wait_seconds, what="a scratch copy", on_takeover=lambda m: None):
                copy_database(settings.db_path, db_path)
        yield replace(settings, project_dir=project, db_path=db_path, smtp_url=None)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def copy_database(source: Path, target: Path) -> None:
    """A byte copy of the file and its write-ahead log (a committed transaction may still be in the WAL)."""
    shutil.copyfile(source, target)
    wal = Path(f"{source}.wal")
    if wal.exists():
        shutil.copyfile(wal, Path(f"{target}.wal"))


def _copy_project(source: Path, target: Path, rules_from: Path | None) -> None:
    shutil.copytree(source / DBT_DIR, target / DBT_DIR, ignore=shutil.ignore_patterns("target", "logs", "generated"))
    rules_root = Path(rules_from) if rules_from is not None else source
    if (rules_root / RULES_DIR).is_dir():
        shutil.copytree(rules_root / RULES_DIR, target / RULES_DIR)
    else:
        for sub in ("segments", "journeys", "templates"):
            (target / RULES_DIR / sub).mkdir(parents=True, exist_ok=True)
    if (rules_root / SETTINGS_FILE).is_file():
        shutil.copyfile(rules_root / SETTINGS_FILE, target / SETTINGS_FILE)


def scratch_executors(scratch: Settings, rules) -> list:
    """The real executors for the copy, minus the outside world: email goes to the copy's outbox table
    (no SMTP server), webhooks are rehearsed. Attributes and tasks apply as in a real run, since later
    criteria may read the attributes an action wrote."""
    from journeys.engine.run import default_executors

    executors = default_executors(replace(scratch, smtp_url=None), rules)
    return [e for e in executors if "webhook" not in e.action_types] + [RehearsedWebhooks()]


class RehearsedWebhooks:
    """Webhooks in a scratch copy: recorded as done in the copy's ledger, never posted."""

    action_types = ("webhook",)

    def is_internal(self, action: DueAction) -> bool:
        return True

    def apply(self, con: duckdb.DuckDBPyConnection, action: DueAction, ctx) -> None:
        return None

    def deliver(self, action: DueAction, ctx) -> None:  # never called: is_internal is always true
        return None


def set_journey_enabled(scratch: Settings, rules, journey_id: str, enabled: bool) -> None:
    """Set `enabled:` in one journey file of the copy (round-trip YAML: the rest of the file stays as written)."""
    from ruamel.yaml import YAML

    path = Path(scratch.project_dir) / rules.files[("journey", journey_id)].path
    yaml = YAML()
    doc = yaml.load(path.read_text())
    doc["enabled"] = enabled
    with path.open("w") as out:
        yaml.dump(doc, out)

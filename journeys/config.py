"""Where things are: the project folder, the database file, the SMTP server."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DB = Path("warehouse") / "journeys.duckdb"


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    db_path: Path
    smtp_url: str | None

    @classmethod
    def resolve(cls, project_dir: str | Path | None = None, db: str | Path | None = None) -> "Settings":
        """--project-dir (default: here); --db, else $JOURNEYS_DB, else warehouse/journeys.duckdb in the project."""
        root = Path(project_dir or ".").resolve()
        db_path = Path(db or os.environ.get("JOURNEYS_DB") or root / DEFAULT_DB)
        if not db_path.is_absolute():
            db_path = Path.cwd() / db_path
        return cls(root, db_path.resolve(), os.environ.get("JOURNEYS_SMTP_URL") or None)

    def display(self, path: Path) -> str:
        """A path as the user would write it: relative to the project when inside it."""
        try:
            return str(path.relative_to(self.project_dir))
        except ValueError:
            return str(path)

"""dbt, in-process: one runner per project, the parsed manifest reused while the files are unchanged."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from journeys.errors import JourneysError

DBT_DIR = "dbt_project"


class DbtError(JourneysError):
    """A dbt build failed: names the failing nodes and dbt's message."""


@dataclass(frozen=True)
class NodeResult:
    name: str
    resource_type: str
    status: str
    seconds: float
    rows: int | None
    message: str | None


class DbtProject:
    """The project's dbt_project/ against one DuckDB file (set through JOURNEYS_DB)."""

    def __init__(self, project_dir: Path, db_path: Path):
        self.project_dir = Path(project_dir).resolve()
        self.dbt_dir = self.project_dir / DBT_DIR
        self.db_path = Path(db_path).resolve()
        self._manifest = None
        self._manifest_key: str | None = None

    def _args(self) -> list[str]:
        target = self.dbt_dir / "target"
        return ["--project-dir", str(self.dbt_dir), "--profiles-dir", str(self.dbt_dir),
                "--target-path", str(target), "--log-path", str(target / "logs"), "--quiet"]  # fmt: skip

    def _files_key(self) -> str:
        """A fingerprint of every file dbt parses, to know when the cached manifest is stale."""
        digest = hashlib.sha256(str(self.db_path).encode())
        for folder in ("models", "macros", "tests"):
            for path in sorted((self.dbt_dir / folder).rglob("*")):
                if path.is_file():
                    digest.update(str(path).encode())
                    digest.update(path.read_bytes())
        for name in ("dbt_project.yml", "profiles.yml"):
            digest.update((self.dbt_dir / name).read_bytes())
        return digest.hexdigest()

    def _runner(self):
        from dbt.cli.main import dbtRunner  # imported late: dbt's import costs about a second

        os.environ["JOURNEYS_DB"] = str(self.db_path)
        key = self._files_key()
        if self._manifest is None or key != self._manifest_key:
            parsed = dbtRunner().invoke(["parse", *self._args()])
            if not parsed.success:
                raise DbtError(f"dbt could not parse {self.dbt_dir}: {parsed.exception}")
            self._manifest, self._manifest_key = parsed.result, key
        return dbtRunner(manifest=self._manifest)

    def build(self, select: list[str] | None = None, exclude: list[str] | None = None, *, check: bool = True) -> list[NodeResult]:
        """`dbt build` (models and their tests); raises DbtError naming every failed node (with `check`)."""
        args = ["build", *self._args()]
        if select:
            args += ["--select", *select]
        if exclude:
            args += ["--exclude", *exclude]
        try:
            result = self._runner().invoke(args)
        finally:
            release_duckdb_file()
        nodes = [
            NodeResult(r.node.name, r.node.resource_type, str(r.status), float(r.execution_time or 0.0),
                       (r.adapter_response or {}).get("rows_affected"), r.message)
            for r in (result.result or [])
        ]  # fmt: skip
        failed = [n for n in nodes if n.status in ("error", "fail", "runtime error")]
        if not check and nodes:
            return nodes
        if failed or not result.success:
            details = "; ".join(f"{n.resource_type} {n.name}: {_first_line(n.message)}" for n in failed)
            raise DbtError(f"dbt build failed: {details or result.exception}")
        return nodes


def release_duckdb_file() -> None:
    """dbt-duckdb keeps its DuckDB connection open for the life of the process; close it after each build
    so other processes (the CLI, Dagster, a second run waiting on the lock) can open the file."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # another adapter (e.g. Spark) holds no local file
        return
    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        if env is not None:
            env.close()
        DuckDBConnectionManager._ENV = None


def _first_line(message: str | None) -> str:
    return (message or "failed").strip().splitlines()[0][:500]

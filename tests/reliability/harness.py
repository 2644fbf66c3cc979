"""Shared helpers for the reliability tests: the real CLI in a subprocess, checksums of a whole
database, journey state without its wall-clock columns, and a release of dbt's open database."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb

from tests.smtp_server import SmtpServer, _Handler

JOURNEYS_CLI = Path(sys.executable).with_name("journeys")

# Wall-clock bookkeeping: a redone run differs from a crash-free one only here.
WALL_CLOCK = {"runs": {"started_at", "finished_at", "attempts", "error"}}


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`journeys ARGS` in a subprocess, as a user types it (no fault injected unless `env` says so)."""
    base = {k: v for k, v in os.environ.items() if k not in ("JOURNEYS_FAULT", "JOURNEYS_DB", "JOURNEYS_SMTP_URL")}
    return subprocess.run([str(JOURNEYS_CLI), *args], env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def release_dbt() -> None:
    """Make sure this process does not hold a DuckDB file after an in-process build (the engine now releases
    dbt-duckdb's handle itself after each build; this is a no-op then, kept for test isolation)."""
    try:
        from journeys.engine.dbt import release_duckdb_file
    except ImportError:
        return
    release_duckdb_file()


def connect_to_read(db_path: Path) -> duckdb.DuckDBPyConnection:
    """Read only, unless this process already has the file open (then DuckDB wants the same configuration)."""
    try:
        return duckdb.connect(str(db_path), read_only=True)
    except duckdb.ConnectionException:
        return duckdb.connect(str(db_path))


def base_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return con.execute(
        "select table_schema, table_name from information_schema.tables "
        "where table_type = 'BASE TABLE' and table_catalog = current_database() order by 1, 2"
    ).fetchall()


def table_checksums(db_path: Path) -> dict[str, tuple]:
    """Row count and an order-independent hash of every table in the database (read only)."""
    with connect_to_read(db_path) as con:
        return {
            f"{schema}.{table}": tuple(
                con.execute(f'select count(*), sum(hash(t)) from "{schema}"."{table}" as t').fetchone())
            for schema, table in base_tables(con)
        }


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def journey_state(db_path: Path, exclude: dict[str, set[str]] | None = None) -> dict[str, list[tuple]]:
    """Every journey_state table, columns in `exclude` left out, rows sorted: equal dumps, equal state."""
    exclude = WALL_CLOCK if exclude is None else exclude
    out = {}
    with connect_to_read(db_path) as con:
        tables = [t for s, t in base_tables(con) if s == "journey_state"]
        for table in tables:
            columns = [c for (c,) in con.execute(
                "select column_name from information_schema.columns where table_schema = 'journey_state' "
                "and table_name = ? order by ordinal_position", [table]).fetchall()
                if c not in exclude.get(table, set())]  # fmt: skip
            select = ", ".join(f'"{c}"' for c in columns)
            out[table] = [tuple(map(str, r)) for r in con.execute(f"select {select} from journey_state.{table}").fetchall()]
            out[table].sort()
    return out


def query(db_path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with connect_to_read(db_path) as con:
        return con.execute(sql, params or []).fetchall()



class _GatedHandler(_Handler):
    async def handle_DATA(self, smtp, session, envelope):
        server = self.server
        server.entered.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + server.hold
        while not server.gate.is_set() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return await super().handle_DATA(smtp, session, envelope)


class GatedSmtpServer(SmtpServer):
    """The real SMTP server of tests/smtp_server.py, whose DATA replies wait at a gate: a run sending
    through it holds its lock, deterministically, until the test opens the gate (or `hold` seconds pass,
    kept below the executor's 10 s SMTP timeout so that the message is still accepted)."""

    handler = _GatedHandler

    def __init__(self, hold: float = 8.0):
        super().__init__()
        self.entered, self.gate, self.hold = threading.Event(), threading.Event(), hold


def wait_until_file_is_open(pid: int, path: Path, timeout: float = 120) -> bool:
    """True once process `pid` has `path` open (Linux /proc): e.g. a run that reached the lock and waits on it."""
    import time

    deadline, target = time.monotonic() + timeout, str(Path(path).resolve())
    while time.monotonic() < deadline:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return True
                except OSError:
                    continue
        except FileNotFoundError:  # the process ended
            return False
        time.sleep(0.05)
    return False

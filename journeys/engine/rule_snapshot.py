"""The rules a run used, kept in the database by their hash, so `journeys diff` can compare with them later."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path, PurePosixPath

import duckdb

from journeys.engine.state import STATE_SCHEMA as S
from journeys.rules.load import RULES_DIR
from journeys.rules.settings import SETTINGS_FILE


def rule_files(project_dir: Path) -> dict[str, bytes]:
    """Every file under sql_rules/ and journeys.yml, by project-relative path: what a run's rules hash covers."""
    root = Path(project_dir)
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in (root / RULES_DIR).rglob("*") if p.is_file()}
    if (root / SETTINGS_FILE).is_file():
        files[SETTINGS_FILE] = (root / SETTINGS_FILE).read_bytes()
    return files


def digest(files: dict[str, bytes]) -> str:
    hasher = hashlib.sha256()
    for path in sorted(files):
        hasher.update(path.encode())
        hasher.update(files[path])
    return hasher.hexdigest()[:16]


def record_snapshot(con: duckdb.DuckDBPyConnection, files: dict[str, bytes], as_of: dt.datetime) -> str:
    """Store the files under their hash (once: the first run that used them keeps its T) and return the hash."""
    key = digest(files)
    con.execute(
        f"insert into {S}.rule_snapshots values (?, ?, ?) on conflict (rules_hash) do nothing",
        [key, json.dumps({path: _encode(data) for path, data in sorted(files.items())}), as_of],
    )
    return key


def read_snapshot(con: duckdb.DuckDBPyConnection, rules_hash: str) -> dict[str, bytes] | None:
    row = con.execute(f"select files from {S}.rule_snapshots where rules_hash = ?", [rules_hash]).fetchone()
    return None if row is None else {path: _decode(value) for path, value in json.loads(row[0]).items()}


def write_rule_files(files: dict[str, bytes], root: Path) -> None:
    """Lay the files out as a project folder (sql_rules/..., journeys.yml); refuses any other path."""
    for path, data in files.items():
        parts = PurePosixPath(path).parts
        if not (path == SETTINGS_FILE or (len(parts) > 1 and parts[0] == RULES_DIR)) or ".." in parts:
            raise ValueError(f"not a rule file path: {path!r}")
        target = Path(root, *parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _encode(data: bytes) -> str | dict[str, str]:
    # Rule files are text; anything else (a stray binary file) still counts in the hash, so keep its bytes.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _decode(value: str | dict[str, str]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else base64.b64decode(value["base64"])

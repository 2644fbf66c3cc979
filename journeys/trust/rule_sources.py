"""The rules `journeys diff` compares with: the files at a git ref, or the snapshot the last committed run recorded."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path

import duckdb

from journeys.engine.rule_snapshot import read_snapshot
from journeys.engine.state import STATE_SCHEMA as S
from journeys.errors import JourneysError
from journeys.rules.load import RULES_DIR
from journeys.rules.settings import SETTINGS_FILE


@dataclass(frozen=True)
class RuleSource:
    """A rule set that is not the working tree: `label` prefixes its paths in errors (`origin/main:sql_rules/...`)."""

    label: str
    description: str
    files: dict[str, bytes]


@dataclass(frozen=True)
class LastRun:
    run_id: str
    as_of: dt.datetime
    rules_hash: str | None


def last_committed_run(db_path: Path) -> LastRun | None:
    """The latest committed run in a database (a scratch copy: the live file is only ever copied)."""
    if not Path(db_path).exists():
        return None
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        has_runs = con.execute(
            f"select count(*) from information_schema.tables where table_schema = '{S}' and table_name = 'runs'"
        ).fetchone()[0]
        if not has_runs:
            return None
        row = con.execute(
            f"select run_id, as_of, rules_hash from {S}.runs where status = 'committed' order by as_of desc limit 1"
        ).fetchone()
    finally:
        con.close()
    return LastRun(*row) if row else None


def rules_of_run(db_path: Path, run: LastRun | None, db_label: str) -> RuleSource:
    """The rule files the last committed run used, from journey_state.rule_snapshots."""
    if run is None:
        raise JourneysError(f"{db_label} has no committed run to compare with; pass --against HEAD (or another git ref)")
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        has_table = con.execute(
            f"select count(*) from information_schema.tables where table_schema = '{S}' and table_name = 'rule_snapshots'"
        ).fetchone()[0]
        files = read_snapshot(con, run.rules_hash) if has_table and run.rules_hash else None
    finally:
        con.close()
    if files is None:
        raise JourneysError(
            f"the last run ({run.run_id}) recorded no rule snapshot (it ran before snapshots were kept); "
            "pass --against HEAD (or another git ref), or diff again after the next run"
        )
    return RuleSource(run.run_id, f"the rules of the last run {run.run_id}", files)


def rules_at_git_ref(project_dir: Path, ref: str) -> RuleSource:
    """sql_rules/** and journeys.yml as committed at REF, read with git (the working tree is not touched)."""
    if not ref or ref.startswith("-"):
        raise JourneysError(f"'{ref}' is not a git ref; e.g. HEAD, main, origin/main or a commit id")
    if _git(project_dir, "rev-parse", "--show-toplevel").returncode != 0:
        raise JourneysError(
            f"{project_dir} is not in a git repository, so --against {ref} has nothing to read; "
            "omit --against to compare with the rules of the last run"
        )
    found = _git(project_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode != 0:
        raise JourneysError(f"unknown git ref '{ref}' in {project_dir}; e.g. HEAD, main, origin/main or a commit id")
    commit = found.stdout.decode().strip()
    # Paths are given and listed relative to the project folder, which may sit below the repository root.
    listing = _git(project_dir, "ls-tree", "-r", "-z", commit, "--", RULES_DIR, SETTINGS_FILE)
    if listing.returncode != 0:
        raise JourneysError(f"git ls-tree {ref} failed: {listing.stderr.decode().strip()}")
    blobs = []
    for entry in filter(None, listing.stdout.split(b"\0")):
        meta, path = entry.split(b"\t", 1)
        mode, kind, oid = meta.split()
        if kind == b"blob" and mode != b"120000":  # symlinks and submodules hold no rule text
            blobs.append((path.decode(), oid.decode()))
    return RuleSource(ref, f"the rules at git {ref} ({commit[:10]})", _read_blobs(project_dir, blobs))


def _read_blobs(project_dir: Path, blobs: list[tuple[str, str]]) -> dict[str, bytes]:
    """Every blob in one `git cat-file --batch` call: `<oid> blob <size>\\n<bytes>\\n` per object."""
    if not blobs:
        return {}
    out = _git(project_dir, "cat-file", "--batch", stdin="".join(f"{oid}\n" for _, oid in blobs).encode())
    if out.returncode != 0:
        raise JourneysError(f"git cat-file failed: {out.stderr.decode().strip()}")
    files, data, at = {}, out.stdout, 0
    for path, _ in blobs:
        header_end = data.index(b"\n", at)
        size = int(data[at:header_end].split()[2])
        files[path] = data[header_end + 1 : header_end + 1 + size]
        at = header_end + 1 + size + 1
    return files


def _git(project_dir: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "-C", str(project_dir), *args], input=stdin, capture_output=True, check=False,
                              timeout=120)  # fmt: skip
    except FileNotFoundError:
        raise JourneysError(
            "--against needs git, which is not installed; omit --against to compare with the last run's rules"
        ) from None

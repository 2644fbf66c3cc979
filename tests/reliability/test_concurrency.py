"""Two processes on one database (SPEC §4.3, docs/runs.md "Lock"): a second `journeys run` fails at once
with a message naming the database and the holder, or with --wait waits and then runs; `journeys load`
during a run fails clearly; the final state is the state of the same runs one after the other.

The first run is held deterministically: it sends its emails through an SMTP server whose DATA reply
waits at a gate the test opens, so the run is inside its lock (actions phase) for as long as needed.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from journeys.engine.lock import run_lock
from tests.conftest import Project, copy_of, project_with
from tests.reliability.harness import (JOURNEYS_CLI, GatedSmtpServer, cli, journey_state, query, release_dbt,
                                      wait_until_file_is_open)
from tests.smtp_server import SmtpServer

T1 = dt.datetime(2026, 6, 15, 9, 0)
T2 = T1 + dt.timedelta(days=1)
D = dt.datetime

RULES = {
    "sql_rules/segments/named_users.yml":
        "segment: named_users\nentity: user\ncriteria: {property: user.first_name, op: is_set}\n",
    "sql_rules/journeys/welcome.yml": """\
journey: welcome
name: Welcome
entity: user
entry: {segments: [named_users], existing_members: enroll}
actions:
  - send_email: {template: welcome}
  - increase_attribute: {name: visits, by: 1}
  - wait: 1d
  - increase_attribute: {name: visits, by: 10}
""",
    "sql_rules/templates/welcome.txt": "Hi {{ user.first_name }}.\n",
}
ROWS = {
    "accounts": [("a1", "Acme", 1.0, 1.0, D(2026, 6, 1), None, 1, "onboarding", "active")],
    "users": [(f"u{i}", "a1", f"u{i}@example.com", f"User{i}", None, D(2026, 6, 1), None) for i in range(1, 4)],
}
USERS_CSV = "user_id,account_id,email,first_name,last_name,created_at,last_seen_at\nu9,a1,u9@example.com,Zed,,2026-06-01,\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A fresh project (no run yet), and the state after the runs at T1 then T2 made one after the other."""
    base = tmp_path_factory.mktemp("concurrency")
    template = project_with(base / "template", RULES, ROWS)

    sequential = copy_of(template.root, base / "sequential")
    with SmtpServer() as server:
        try:
            sequential.use_smtp(server.url).run(T1)
            sequential.run(T2)
            after_t2 = journey_state(sequential.settings.db_path)
        finally:
            release_dbt()
    return template.root, None, after_t2


def copy_world(world, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "project"
    shutil.copytree(world[0], root)
    return root, root / "warehouse" / "journeys.duckdb"


def start_run(root: Path, db: Path, as_of: dt.datetime, server, *more: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNEYS_FAULT", "JOURNEYS_DB")}
    env["JOURNEYS_SMTP_URL"] = server.url
    return subprocess.Popen([str(JOURNEYS_CLI), "--project-dir", str(root), "--db", str(db), "run", "--as-of",
                             as_of.isoformat(), *more], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def held_run(root: Path, db: Path, as_of: dt.datetime, server: GatedSmtpServer) -> subprocess.Popen:
    """A run that is inside its lock, waiting for the SMTP server's gate."""
    first = start_run(root, db, as_of, server)
    if not server.entered.wait(timeout=180):
        first.kill()
        pytest.fail(f"the first run never reached its emails: {first.communicate()}")
    assert first.poll() is None
    return first


def test_while_a_run_holds_the_lock_a_run_and_a_load_fail_clearly_and_a_waiting_run_runs_after_it(world, tmp_path):
    root, db = copy_world(world, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "users.csv").write_text(USERS_CSV)
    with GatedSmtpServer() as server:
        first = held_run(root, db, T1, server)
        holder = f"pid {first.pid} on {socket.gethostname()}, journeys run r20260615T090000"

        second = cli("--project-dir", str(root), "--db", str(db), "run", "--as-of", T1.isoformat(),
                     env={"JOURNEYS_SMTP_URL": server.url})  # fmt: skip
        load = cli("--project-dir", str(root), "--db", str(db), "load", str(data))
        waiting = start_run(root, db, T2, server, "--wait", "300")
        assert wait_until_file_is_open(waiting.pid, Path(f"{db}.lock")), "the waiting run never reached the lock"
        time.sleep(0.5)  # it polls the lock every 0.2 s: it has tried and is waiting
        assert first.poll() is None, "the first run must still hold the lock: the checks above are meaningless"
        assert waiting.poll() is None
        server.gate.set()
        out1, err1 = first.communicate(timeout=180)
        out3, err3 = waiting.communicate(timeout=300)

    # refused at once, naming the database and the holder
    assert (second.returncode, second.stdout) == (1, "")
    assert second.stderr == (f"error: {db} is locked by another run ({holder}); wait for it to finish, "
                             "pass --wait SECONDS, or use another --db\n")  # fmt: skip
    assert (load.returncode, load.stdout) == (1, "")
    assert load.stderr.startswith(f"error: {db} is locked by another run ({holder}); wait for it to finish")
    # the holder finished; the waiting run ran after it (no takeover: the lock was released cleanly)
    assert first.returncode == 0, err1
    assert waiting.returncode == 0, err3
    assert "taking over" not in err3
    [(finished_first,)] = query(db, "select finished_at from journey_state.runs where as_of = ?", [T1])
    [(started_waiting,)] = query(db, "select started_at from journey_state.runs where as_of = ?", [T2])
    assert started_waiting >= finished_first
    # the refused run left no trace, the refused load changed nothing: the state of the two runs one after the other
    assert query(db, "select run_id, status, attempts from journey_state.runs order by 1") == [
        ("r20260615T090000", "committed", 1), ("r20260616T090000", "committed", 1)]
    assert journey_state(db) == world[2]
    assert query(db, "select user_id from raw.users order by 1") == [("u1",), ("u2",), ("u3",)]
    assert dict(query(db, "select entity_id, value from journey_state.attributes")) == {"u1": "11", "u2": "11", "u3": "11"}
    assert sorted(len(v) for v in server.by_message_id().values()) == [1, 1, 1]


def test_the_lock_message_of_a_load_suggests_only_options_load_accepts(world, tmp_path):
    """Found by this suite: a refused `journeys load` was told to pass --wait, which only `run` had."""
    root, db = copy_world(world, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "users.csv").write_text(USERS_CSV)
    with run_lock(db, what="journeys run r20260615T090000"):  # a run holds the lock (the real case is tested above)
        load = cli("--project-dir", str(root), "--db", str(db), "load", str(data))
        retried = cli("--project-dir", str(root), "--db", str(db), "load", "--wait", "1", str(data))
    assert load.returncode == 1 and "is locked by another run" in load.stderr
    if "--wait" in load.stderr:  # the advice must work: waited the second, then refused the same way
        assert "No such option" not in retried.stderr
        assert retried.returncode == 1 and "is locked by another run" in retried.stderr


def test_a_process_that_finished_a_run_does_not_keep_the_database_locked(world, tmp_path):
    """dbt-duckdb 1.11 keeps its DuckDB file open for the life of the process (keep_open defaults to true): a
    long-lived process (Dagster's code server, a notebook) that ran once locked every other process out until
    journeys/engine/dbt.py began releasing it after each build. Found by this suite, fixed upstream."""
    root, db = copy_world(world, tmp_path)
    project = Project(root)
    project.run(T1)  # in this (long-lived) process, as the Dagster code server or a notebook would
    try:
        status = cli("--project-dir", str(root), "--db", str(db), "status")
    finally:
        release_dbt()
    assert status.returncode == 0, status.stderr

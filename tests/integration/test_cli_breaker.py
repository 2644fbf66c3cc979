"""`journeys run` applies the same segment-size circuit breaker as the Dagster job."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Project, copy_project

JOURNEYS = str(Path(sys.executable).with_name("journeys"))
D = dt.datetime


def test_cli_run_holds_an_exploding_journey_until_acknowledged(tmp_path):
    project = Project(copy_project(tmp_path / "p", rules_from=None))
    project.write("sql_rules/segments/flagged.yml", "segment: flagged\nentity: user\ncriteria: {property: user.custom.flag, op: is_set}\n")
    project.write("sql_rules/journeys/hello.yml", "journey: hello\nentity: user\nentry: {segments: [flagged]}\n"
                  "actions:\n  - set_attribute: {name: greeted, value: 'yes'}\n")  # fmt: skip
    users = [(f"u{i}", "a1", f"u{i}@x.example", "N", "M", D(2026, 1, 1), None) for i in range(1, 5)]
    flags = [("user", f"u{i}", "flag", "1") for i in range(1, 5)]
    project.insert_rows({"accounts": [("a1", "A", 1.0, 1.0, D(2025, 1, 1), None, 1, "adoption", "active")], "users": users})
    env = {**os.environ, "JOURNEYS_BREAKER_MIN_ENTERING": "2", "JOURNEYS_BREAKER_MAX_SHARE": "0.5"}
    cli = [JOURNEYS, "--project-dir", str(project.root), "--db", str(project.settings.db_path), "run"]

    assert subprocess.run([*cli, "--as-of", "2026-03-01T09:00"], env=env, capture_output=True, text=True).returncode == 0
    project.insert_rows({"accounts": [("a1", "A", 1.0, 1.0, D(2025, 1, 1), None, 1, "adoption", "active")], "users": users,
                         "custom_attributes": flags})  # 4 of 4 users enter at once: 100% > 50%
    tripped = subprocess.run([*cli, "--as-of", "2026-03-02T09:00"], env=env, capture_output=True, text=True)
    assert tripped.returncode == 0, tripped.stderr
    assert "circuit breaker holds hello's actions: release with --ack hello@r20260302T090000" in tripped.stderr
    assert project.query("select status, count(*) from journey_state.actions group by all") == [("pending", 4)]

    released = subprocess.run([*cli, "--as-of", "2026-03-02T10:00", "--ack", "hello@r20260302T090000"],
                              env=env, capture_output=True, text=True)  # fmt: skip
    assert released.returncode == 0, released.stderr
    assert project.query("select status, count(*) from journey_state.actions group by all") == [("done", 4)]
    assert project.query("select count(*) from journey_state.attributes where name = 'greeted'") == [(4,)]

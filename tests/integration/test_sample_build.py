"""The sample rules build against the sample data through the real CLI: load, validate, compile, build."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from journeys.engine.build import build_models, compile_project
from journeys.sample.generate import write_sample_files
from tests.conftest import Project, copy_project

ORIGIN = dt.datetime(2026, 11, 2, 9, 0)
JOURNEYS = str(Path(sys.executable).with_name("journeys"))


def journeys(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([JOURNEYS, "--project-dir", str(project), *args], capture_output=True, text=True, timeout=600)


def test_sample_rules_build_on_loaded_sample_data(tmp_path):
    root = copy_project(tmp_path / "project")
    project = Project(root)
    data = tmp_path / "data"
    write_sample_files(data, users=600, origin=ORIGIN, fmt="csv")

    loaded = journeys(root, "--db", str(project.settings.db_path), "load", str(data))
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded users: " in loaded.stdout
    assert journeys(root, "validate").returncode == 0

    compile_project(project.settings)
    nodes = build_models(project.settings, project.dbt, ORIGIN)
    assert {n.name for n in nodes if n.resource_type == "model"} >= {"stg_users", "segment_membership", "journey_goal_matches"}
    assert all(n.status in ("success", "pass") for n in nodes)

    sizes = dict(project.query("select segment_id, count(*) from segment_membership group by all"))
    for segment in ("new_users", "inactive_users", "dashboards_not_adopted", "power_users", "checkin_due", "renewal_window", "at_risk_accounts"):
        assert sizes.get(segment, 0) > 0, f"sample segment {segment} is empty: {sizes}"
    eligible = dict(project.query("select journey_id, count(*) from journey_eligible group by all"))
    assert set(eligible) == {"onboarding_drip", "reengagement", "dashboards_intro", "periodic_checkin", "renewal", "account_health"}


def test_compile_cli_is_deterministic(tmp_path):
    root = copy_project(tmp_path / "project")
    first = journeys(root, "compile")
    assert first.returncode == 0 and "(18 files changed)" in first.stdout, first.stdout + first.stderr
    snapshot = {p.name: p.read_bytes() for p in (root / "dbt_project/models/generated").iterdir()}
    second = journeys(root, "compile")
    assert "(0 files changed)" in second.stdout
    assert {p.name: p.read_bytes() for p in (root / "dbt_project/models/generated").iterdir()} == snapshot


def test_demo_runs_simulated_days_and_prints_the_outcomes(tmp_path):
    root = copy_project(tmp_path / "project")
    db = tmp_path / "demo.duckdb"
    result = journeys(root, "--db", str(db), "demo", "--users", "300", "--days", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(committed)") == 6  # two runs a simulated day
    assert "outcomes (journey_outcomes)" in result.stdout
    outcome_lines = [line for line in result.stdout.splitlines() if line.startswith("  ") and "%" in line]
    assert outcome_lines, result.stdout  # one line per journey with enrollments

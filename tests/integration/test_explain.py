"""`journeys explain` agrees with what a run materializes, and shows each leaf's value and verdict."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from journeys.compiler.features import collect_features
from journeys.contracts import load_contracts
from journeys.rules.validate import load_and_validate
from journeys.trust.explain import Explainer, explain_entity
from tests.conftest import Project, copy_project
from tests.integration.test_criteria_semantics import CASES, ROWS, T

JOURNEYS = str(Path(sys.executable).with_name("journeys"))

JOURNEY = """\
journey: welcome
entity: user
entry:
  segments: [p_after_relative]
  existing_members: enroll
actions:
  - wait: 30d
goal:
  criteria: {event: login, op: performed, within: 7d}
exit:
  blacklist:
    any:
      - {property: user.email, op: contains, value: "@competitor.example"}
      - {property: account.mrr, op: more_than, value: 1000}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    project = Project(copy_project(tmp_path_factory.mktemp("explain") / "project", rules_from=None))
    for seg_id, entity, criteria, _ in CASES:
        project.write(f"sql_rules/segments/{seg_id}.yml", f"segment: {seg_id}\nentity: {entity}\ncriteria: {criteria}\n")
    project.write("sql_rules/journeys/welcome.yml", JOURNEY)
    project.insert_rows(ROWS)
    project.run(T)
    return project


def quiet(_message: str) -> None:
    pass


def test_explain_shows_each_leaf_value_and_verdict(project):
    report = explain_entity(project.settings, "u1", segment="bool_all_not", echo=quiet)
    [segment] = report["segments"]
    assert segment["member"] is False
    assert segment["criteria"] == {
        "test": "all of", "verdict": False, "children": [
            {"test": "account.mrr more_than 10", "verdict": True, "value": 500.0},
            {"test": "not", "verdict": False, "children": [
                {"test": "user.first_name equal_to 'Alice'", "verdict": True, "value": "Alice"}]},
        ]}  # fmt: skip


def test_explain_counts_events_in_the_window(project):
    [segment] = explain_entity(project.settings, "u1", segment="e_within_includes_t", echo=quiet)["segments"]
    assert segment["member"] is True
    assert segment["criteria"]["value"] == 2  # e1 and e2 in the last 7 days; e3 is older
    [segment] = explain_entity(project.settings, "u2", segment="e_within_includes_t", echo=quiet)["segments"]
    assert (segment["member"], segment["criteria"]["value"]) == (False, 0)  # u2's login is after T


def test_explain_a_suppressed_entry_and_the_journey_history(project):
    report = explain_entity(project.settings, "u3", journey="welcome", echo=quiet)
    assert report["segments"][0]["member"] is True
    assert report["blacklist"]["verdict"] is True
    assert report["blacklist"]["children"][0] == {
        "test": "user.email contains '@competitor.example'", "verdict": True, "value": "carol@competitor.example"}
    assert [(h["event"], h["reason"]) for h in report["history"]] == [("suppressed", "blacklist")]

    enrolled = explain_entity(project.settings, "u1", journey="welcome", echo=quiet)
    assert enrolled["blacklist"]["verdict"] is False
    assert enrolled["goal"] == {"test": "event login performed within 7d (value: count)", "verdict": True, "value": 2}
    assert [(h["event"], h["to_status"]) for h in enrolled["history"]] == [("enrolled", "active"), ("goal_achieved", "goal_achieved")]


def test_explain_subscription_names_the_row_that_decided(project):
    [segment] = explain_entity(project.settings, "a1", segment="sub_match", echo=quiet)["segments"]
    assert segment["criteria"]["detail"] == "subscription s2 satisfies the whole sub-tree"
    [segment] = explain_entity(project.settings, "a1", segment="sub_needs_one_row", echo=quiet)["segments"]
    assert segment["member"] is False
    assert segment["criteria"]["detail"].endswith("closest: 1 of 2 tests true")


def test_explain_verdict_equals_the_materialized_membership_for_every_entity(project):
    """The property explain promises: its verdict is the run's, for every segment and every entity."""
    rules = load_and_validate(project.root)
    con = project.connect()
    try:
        explainer = Explainer(con, rules, collect_features(rules), load_contracts(project.root))
        members = set(con.execute("select segment_id, entity_id from segment_membership").fetchall())
        entities = {"user": [r[0] for r in ROWS["users"]], "account": [r[0] for r in ROWS["accounts"]]}
        disagreements = [
            (seg_id, entity_id)
            for seg_id, entity, _, _ in CASES
            for entity_id in entities[entity]
            if explainer.explain(rules.segments[seg_id].criteria, entity, entity_id).verdict != ((seg_id, entity_id) in members)
        ]
    finally:
        con.close()
    assert disagreements == []
    assert len(members) > 100  # the fixture has members to agree on


def test_explain_cli_prints_json(project):
    result = subprocess.run(
        [JOURNEYS, "--project-dir", str(project.root), "--db", str(project.settings.db_path),
         "explain", "u5", "--segment", "m_has_not_met", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["segments"][0]["member"] is True
    assert report["as_of"] == T.isoformat(sep=" ")


def test_explain_of_an_unknown_entity_is_a_clear_error(project):
    result = subprocess.run(
        [JOURNEYS, "--project-dir", str(project.root), "--db", str(project.settings.db_path), "explain", "nobody"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: no user or account 'nobody' in the built models at 2026-06-15 12:00:00")

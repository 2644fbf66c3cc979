"""The compiler: deterministic files, shared feature scans, literal-only values, portable SQL."""

from __future__ import annotations

import re

import pytest
import sqlglot
from sqlglot import exp

from journeys.compiler.sql import jinja_safe, lowercase_keywords
from journeys.compiler.writer import build_models, render_models, write_models
from journeys.rules.validate import load_and_validate
from tests.conftest import REPO, copy_project

GENERATED = {
    "event_features", "user_features", "account_features", "segment_membership",
    "journey_eligible", "journey_candidates", "journey_goal_matches", "journey_exit_matches", "journey_condition_matches",
}  # fmt: skip


def test_compiling_twice_writes_identical_files_and_the_second_writes_none(tmp_path):
    root = copy_project(tmp_path / "p")
    rules = load_and_validate(root)
    first = write_models(rules)
    texts = {p.name: p.read_text() for p in (root / "dbt_project/models/generated").iterdir()}
    second = write_models(load_and_validate(root))
    assert first.written and not second.written and not second.removed
    assert {p.name: p.read_text() for p in (root / "dbt_project/models/generated").iterdir()} == texts


def test_the_model_set_is_fixed_whatever_the_number_of_rules(tmp_path):
    empty = copy_project(tmp_path / "empty", rules_from=None)
    assert {m.name for m in build_models(load_and_validate(empty))} == GENERATED
    assert {m.name for m in build_models(load_and_validate(copy_project(tmp_path / "full")))} == GENERATED


def test_stale_generated_files_are_removed(tmp_path):
    root = copy_project(tmp_path / "p")
    out = root / "dbt_project/models/generated"
    out.mkdir(parents=True)
    (out / "seg_old_segment.sql").write_text("select 1")
    result = write_models(load_and_validate(root))
    assert [p.name for p in result.removed] == ["seg_old_segment.sql"]


def _project_with(tmp_path, segments: dict[str, str], journeys: dict[str, str] | None = None):
    root = copy_project(tmp_path / "p", rules_from=None)
    for seg_id, criteria in segments.items():
        entity = "account" if seg_id.startswith("acc") else "user"
        (root / f"sql_rules/segments/{seg_id}.yml").write_text(f"segment: {seg_id}\nentity: {entity}\ncriteria: {criteria}\n")
    for journey_id, text in (journeys or {}).items():
        (root / f"sql_rules/journeys/{journey_id}.yml").write_text(text)
    return render_models(build_models(load_and_validate(root)))


def test_journeys_sharing_an_event_criterion_share_one_feature_column(tmp_path):
    criterion = "{event: feature_used, op: performed, where: {property: event.feature, op: equal_to, value: x}, within: 30d}"
    segments = {f"s{i}": "{all: [" + criterion + ", {property: user.email, op: is_set}]}" for i in range(5)}
    segments["other"] = "{event: feature_used, op: not_performed, within: 30d, where: {property: event.feature, op: equal_to, value: x}}"
    files = _project_with(tmp_path, segments)
    events_sql = files["event_features.sql"]
    assert events_sql.count("as event__feature_used__30d") == 1
    assert "event__feature_used__30d_2" not in events_sql
    assert events_sql.count("from events as e") == 1  # one scan of the events for all six segments


def test_different_windows_are_different_features_in_the_same_scan(tmp_path):
    files = _project_with(tmp_path, {
        "a": "{event: login, op: performed, within: 7d}",
        "b": "{event: login, op: performed, within: 30d}",
    })
    events_sql = files["event_features.sql"]
    assert "event__login__7d" in events_sql and "event__login__30d" in events_sql
    assert events_sql.count("from events as e") == 1
    # only the widest window is scanned
    assert "interval '30' day" in events_sql


def test_string_values_never_form_jinja_delimiters():
    tree = exp.EQ(this=exp.column("x"), expression=exp.Literal.string("a{{b}}{%c%}{#d#}"))
    sql = jinja_safe(tree).sql()
    assert not re.search(r"\{[{%#]", sql)
    assert sqlglot.transpile(f"select {sql}", read="duckdb")  # still valid SQL


def test_lowercasing_keeps_string_literals():
    assert lowercase_keywords("SELECT 'KEEP Me' AS X FROM T") == "select 'KEEP Me' as x from t"


def _logic_ctes(sql_text: str) -> list[str]:
    """The SQL of the generated model with Jinja relations replaced by plain table names."""
    plain = re.sub(r"\{\{\s*(?:ref|source)\(([^)]*)\)\s*\}\}", lambda m: m.group(1).split(",")[-1].strip(" '\""), sql_text)
    return [plain]


@pytest.mark.parametrize("model", sorted(GENERATED))
def test_generated_sql_of_the_sample_rules_is_portable_to_spark(tmp_path, model):
    files = render_models(build_models(load_and_validate(copy_project(tmp_path / "p"))))
    sql = _logic_ctes(files[f"{model}.sql"])[0]
    if "as_of()" in sql:
        sql = sql.replace("{{ as_of() }}", "(select as_of from run_context)")
    parsed = sqlglot.parse_one(sql, dialect="duckdb")
    assert parsed is not None
    spark = parsed.sql(dialect="spark")
    assert sqlglot.parse_one(spark, dialect="spark") is not None


def test_generated_files_say_they_are_generated_and_name_their_rule(tmp_path):
    files = render_models(build_models(load_and_validate(copy_project(tmp_path / "p"))))
    for name, text in files.items():
        if name.endswith(".sql"):
            assert text.startswith("-- generated from sql_rules/")
    assert "-- from sql_rules/segments/new_users.yml" in files["segment_membership.sql"]
    assert "-- from sql_rules/journeys/renewal.yml" in files["journey_goal_matches.sql"]


def test_sample_rules_exist_for_every_seed_use_case():
    journeys = {p.stem for p in (REPO / "sql_rules/journeys").glob("*.yml")}
    assert {"onboarding_drip", "reengagement", "dashboards_intro", "periodic_checkin", "renewal", "account_health"} <= journeys

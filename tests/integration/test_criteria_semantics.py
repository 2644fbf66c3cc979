"""Every leaf and operator of SPEC §5 on a tiny hand-made world; expected members are written by hand.

One segment per case, all built in one real dbt build at T = 2026-06-15 12:00.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.conftest import Project, copy_project

T = dt.datetime(2026, 6, 15, 12, 0)
D = dt.datetime
d = dt.date

INJECTION_1 = "It's {{ me }}; -- ok"
INJECTION_2 = "back\\slash ünï 🙂 {# x #} {% y %} /* c */"

ROWS = {
    "accounts": [
        # account_id, name, mrr, amount, created_at, next_billing_on, licenses, stage, status
        ("a1", "Acme Corp", 500.0, 6000.0, D(2025, 1, 10), d(2026, 7, 1), 10, "adoption", "active"),
        ("a2", "Globex", 50.0, 600.0, D(2026, 6, 1), d(2026, 9, 1), 2, "onboarding", "trial"),
        ("a3", "Initech", None, None, D(2024, 3, 1), None, None, "churned", "churned"),
    ],
    "users": [
        # user_id, account_id, email, first_name, last_name, created_at, last_seen_at
        ("u1", "a1", "Alice@Example.com", "Alice", "Martin", D(2026, 6, 10, 10), D(2026, 6, 15, 9)),
        ("u2", "a1", "bob@example.com", "Bob", None, D(2025, 2, 1), D(2026, 5, 1)),
        ("u3", "a2", "carol@competitor.example", "Carol", "Diaz", D(2026, 6, 14), None),
        ("u4", "a2", None, "", "Evans", D(2026, 6, 1), D(2026, 6, 15, 12)),
        ("u5", "a3", "eve@initech.example", "Eve", "O'Brien", D(2024, 3, 5), D(2025, 12, 1)),
        ("u6", "a9", "frank@x.example", "Frank", None, D(2026, 6, 16), None),  # a9 does not exist
    ],
    "subscriptions": [
        # id, account, status, amount, mrr, product, plan, qty, unit price, activated, cancelled, created,
        # next_billing_on, ends_on, starts_on, trial_ends_on, trial_starts_on
        ("s1", "a1", "active", 4800.0, 400.0, "Core Platform", "Growth", 10, 40.0, d(2025, 1, 10), None, d(2025, 1, 10), d(2026, 7, 1), None, d(2025, 1, 10), None, None),
        ("s2", "a1", "cancelled", 1200.0, 100.0, "Analytics Add-on", "Starter", 1, 100.0, d(2025, 1, 10), d(2026, 3, 1), d(2025, 1, 10), d(2026, 6, 20), d(2026, 3, 31), d(2025, 1, 10), None, None),
        ("s3", "a2", "trialing", 0.0, 0.0, "Core Platform", "Growth", 2, 25.0, None, None, d(2026, 6, 1), d(2026, 8, 1), None, d(2026, 6, 1), d(2026, 6, 20), d(2026, 6, 1)),
        ("s4", "a3", "cancelled", 0.0, 0.0, "Core Platform", "Starter", 5, 10.0, d(2024, 3, 1), d(2025, 12, 1), d(2024, 3, 1), None, d(2025, 12, 31), d(2024, 3, 1), None, None),
    ],
    "account_team": [
        ("a1", "csm", "csm1@vendor.example"),
        ("a1", "sales_manager", "sm1@vendor.example"),
        ("a2", "csm", "CSM2@vendor.example"),
    ],
    "milestones": [
        ("a1", "first_report", D(2026, 5, 1)),
        ("a2", "first_report", D(2026, 6, 20)),  # after T: not yet met
        ("a3", "integration_live", None),  # undated: counts as met
    ],
    "outcomes": [
        ("a1", "renewed", D(2026, 1, 1)),
        ("a3", "churn_risk_resolved", D(2025, 1, 1)),
    ],
    "playbook_enrollments": [
        # account, playbook, status, enrolled_at, due_at, completed_at
        ("a1", "onboarding", "completed", D(2025, 1, 11), D(2025, 2, 10), D(2025, 2, 1)),
        ("a1", "renewal_prep", "active", D(2026, 5, 1), D(2026, 6, 10), None),  # overdue at T
        ("a2", "onboarding", "active", D(2026, 6, 2), D(2026, 7, 2), None),
        ("a3", "onboarding", "completed", D(2024, 3, 6), D(2024, 4, 6), D(2026, 7, 1)),  # completed after T
    ],
    "custom_attributes": [
        ("user", "u1", "plan_tier", "Pro"),
        ("user", "u2", "plan_tier", "free"),
        ("user", "u1", "score", "42"),
        ("user", "u2", "score", "abc"),
        ("user", "u3", "score", "7.5"),
        ("user", "u4", "signup_date", "2026-06-01"),
        ("user", "u1", "nickname", INJECTION_1),
        ("user", "u2", "nickname", INJECTION_2),
        ("account", "a1", "health_score", "80"),
        ("account", "a2", "health_score", "30"),
    ],
    "events": [
        ("e1", "u1", "a1", "login", json.dumps({"source": {"channel": "web"}}), D(2026, 6, 15, 8)),
        ("e2", "u1", "a1", "login", "{}", D(2026, 6, 14, 8)),
        ("e3", "u1", "a1", "login", "{}", D(2026, 6, 1, 8)),
        ("e4", "u1", "a1", "feature_used", json.dumps({"feature": "dashboards", "n": 5}), D(2026, 6, 10)),
        ("e5", "u2", "a1", "feature_used", json.dumps({"feature": "Exports", "n": "12"}), D(2026, 6, 12)),
        ("e6", "u2", "a1", "login", json.dumps({"source": {"channel": "mobile"}}), D(2026, 6, 16)),  # after T
        ("e7", "u3", "a2", "feature_used", json.dumps({"feature": None}), D(2026, 6, 14)),
        ("e8", "u4", "a2", "login", "{}", D(2026, 6, 15, 12)),  # exactly T
        ("e9", "u5", "a3", "login", "{}", D(2026, 5, 16, 12)),  # exactly T - 30d
    ],
}

# (segment id, entity, criteria as YAML flow text, expected members written by hand)
CASES = [
    # property: text
    ("p_eq_text", "user", "{property: user.first_name, op: equal_to, value: Alice}", {"u1"}),
    ("p_eq_is_case_sensitive", "user", "{property: user.first_name, op: equal_to, value: alice}", set()),
    ("p_neq_null_is_false", "user", "{property: user.last_name, op: not_equal_to, value: Martin}", {"u3", "u4", "u5"}),
    ("p_contains_ignores_case", "user", "{property: user.email, op: contains, value: EXAMPLE.COM}", {"u1", "u2"}),
    ("p_does_not_contain", "user", "{property: user.email, op: does_not_contain, value: COMPETITOR}", {"u1", "u2", "u5", "u6"}),
    ("p_in", "user", "{property: user.first_name, op: in, value: [Alice, Bob, Zed]}", {"u1", "u2"}),
    ("p_not_in", "user", "{property: user.first_name, op: not_in, value: [Alice, Bob]}", {"u3", "u4", "u5", "u6"}),
    ("p_is_set", "user", "{property: user.first_name, op: is_set}", {"u1", "u2", "u3", "u5", "u6"}),
    ("p_is_not_set_empty_text", "user", "{property: user.first_name, op: is_not_set}", {"u4"}),
    ("p_is_not_set_null", "user", "{property: user.last_name, op: is_not_set}", {"u2", "u6"}),
    # property: time
    ("p_after_relative", "user", "{property: user.created_at, op: after, value: -7d}", {"u1", "u3", "u6"}),
    ("p_before_is_strict", "user", "{property: user.created_at, op: before, value: 2026-06-01}", {"u2", "u5"}),
    ("p_between_time_inclusive", "user", "{property: user.created_at, op: between, value: [2026-06-01, 2026-06-14]}", {"u1", "u3", "u4"}),
    ("p_iso_offset_is_converted_to_utc", "user", "{property: user.created_at, op: after, value: '2026-06-10T11:30:00+02:00'}", {"u1", "u3", "u6"}),
    ("p_between_absolute_and_relative", "user", "{property: user.created_at, op: between, value: [2026-06-10, +1d]}", {"u1", "u3", "u6"}),
    ("p_before_null_is_false", "user", "{property: user.last_seen_at, op: before, value: -30d}", {"u2", "u5"}),
    ("p_not_over_null_is_true", "user", "{not: {property: user.last_seen_at, op: before, value: -30d}}", {"u1", "u3", "u4", "u6"}),
    ("p_date_column_vs_relative", "user", "{property: account.next_billing_on, op: before, value: +30d}", {"u1", "u2"}),
    # property: numbers and account properties in user criteria
    ("a_more_than", "user", "{property: account.mrr, op: more_than, value: 100}", {"u1", "u2"}),
    ("a_less_than_null_is_false", "user", "{property: account.mrr, op: less_than, value: 100}", {"u3", "u4"}),
    ("a_between_numbers_inclusive", "user", "{property: account.mrr, op: between, value: [50, 500]}", {"u1", "u2", "u3", "u4"}),
    ("a_equal_number", "user", "{property: account.licenses, op: equal_to, value: 10}", {"u1", "u2"}),
    ("a_not_equal_missing_account", "user", "{property: account.status, op: not_equal_to, value: churned}", {"u1", "u2", "u3", "u4"}),
    ("acc_stage_in", "account", "{property: account.stage, op: in, value: [adoption, onboarding]}", {"a1", "a2"}),
    # custom attributes (text, cast when compared as numbers or times)
    ("c_equal_text", "user", "{property: user.custom.plan_tier, op: equal_to, value: Pro}", {"u1"}),
    ("c_more_than_casts", "user", "{property: user.custom.score, op: more_than, value: 10}", {"u1"}),
    ("c_less_than_not_a_number_false", "user", "{property: user.custom.score, op: less_than, value: 10}", {"u3"}),
    ("c_equal_number_on_text", "user", "{property: user.custom.score, op: equal_to, value: 42}", {"u1"}),
    ("c_is_not_set", "user", "{property: user.custom.plan_tier, op: is_not_set}", {"u3", "u4", "u5", "u6"}),
    ("c_account_attribute", "user", "{property: account.custom.health_score, op: less_than, value: 50}", {"u3", "u4"}),
    ("c_time_text", "user", "{property: user.custom.signup_date, op: after, value: 2026-05-31}", {"u4"}),
    # segments
    ("s_has_met", "user", "{segment: p_eq_text, op: has_met}", {"u1"}),
    ("s_has_not_met", "user", "{segment: p_after_relative, op: has_not_met}", {"u2", "u4", "u5"}),
    ("s_account_segment_in_user", "user", "{segment: acc_stage_in, op: has_met}", {"u1", "u2", "u3", "u4"}),
    # milestones, outcomes
    ("m_has_met", "user", "{milestone: first_report, op: has_met}", {"u1", "u2"}),
    ("m_has_not_met", "user", "{milestone: first_report, op: has_not_met}", {"u3", "u4", "u5", "u6"}),
    ("m_undated_counts", "account", "{milestone: integration_live, op: has_met}", {"a3"}),
    ("o_has_met", "account", "{outcome: renewed, op: has_met}", {"a1"}),
    ("o_has_not_met", "account", "{outcome: churn_risk_resolved, op: has_not_met}", {"a1", "a2"}),
    # playbooks, as of T
    ("pb_active_in", "account", "{playbook: onboarding, op: active_in}", {"a2", "a3"}),
    ("pb_never_enrolled", "account", "{playbook: renewal_prep, op: never_enrolled}", {"a2", "a3"}),
    ("pb_never_enrolled_user_without_account", "user", "{playbook: renewal_prep, op: never_enrolled}", {"u3", "u4", "u5", "u6"}),
    ("pb_has_completed", "account", "{playbook: onboarding, op: has_completed}", {"a1"}),
    ("pb_is_overdue", "account", "{playbook: renewal_prep, op: is_overdue}", {"a1"}),
    # team
    ("t_equal", "account", "{team: csm, op: equal_to, value: csm1@vendor.example}", {"a1"}),
    ("t_equal_is_case_sensitive", "account", "{team: csm, op: equal_to, value: csm2@vendor.example}", set()),
    ("t_not_equal_unstaffed_true", "account", "{team: csm, op: not_equal_to, value: csm1@vendor.example}", {"a2", "a3"}),
    ("t_is_set", "account", "{team: sales_manager, op: is_set}", {"a1"}),
    ("t_is_not_set", "account", "{team: csm, op: is_not_set}", {"a3"}),
    # subscriptions: ONE subscription satisfies the whole sub-tree
    ("sub_needs_one_row", "account",
     "{subscription: {all: [{property: subscription.status, op: equal_to, value: active}, "
     "{property: subscription.next_billing_on, op: before, value: 2026-06-25}]}}", set()),
    ("sub_match", "account",
     "{subscription: {all: [{property: subscription.status, op: equal_to, value: cancelled}, "
     "{property: subscription.plan_name, op: equal_to, value: Starter}]}}", {"a1", "a3"}),
    ("sub_in_user_criteria", "user", "{subscription: {property: subscription.status, op: equal_to, value: trialing}}", {"u3", "u4"}),
    ("sub_not", "account", "{not: {subscription: {property: subscription.status, op: equal_to, value: active}}}", {"a2", "a3"}),
    # events
    ("e_performed_until_t", "user", "{event: login, op: performed}", {"u1", "u4", "u5"}),
    ("e_within_includes_t", "user", "{event: login, op: performed, within: 7d}", {"u1", "u4"}),
    ("e_within_includes_start", "user", "{event: login, op: performed, within: 30d}", {"u1", "u4", "u5"}),
    ("e_count_at_least", "user", "{event: login, op: performed, count: {at_least: 3}}", {"u1"}),
    ("e_count_at_most_includes_zero", "user", "{event: login, op: performed, count: {at_most: 1}}", {"u2", "u3", "u4", "u5", "u6"}),
    ("e_not_performed", "user", "{event: login, op: not_performed, within: 7d}", {"u2", "u3", "u5", "u6"}),
    ("e_where_equal", "user", "{event: feature_used, op: performed, where: {property: event.feature, op: equal_to, value: dashboards}}", {"u1"}),
    ("e_where_contains", "user", "{event: feature_used, op: performed, where: {property: event.feature, op: contains, value: EXPORT}}", {"u2"}),
    ("e_where_nested_key", "user", "{event: login, op: performed, where: {property: event.source.channel, op: equal_to, value: web}}", {"u1"}),
    ("e_where_json_null_missing", "user", "{event: feature_used, op: performed, where: {property: event.feature, op: is_not_set}}", {"u3"}),
    ("e_where_number_cast", "user", "{event: feature_used, op: performed, where: {property: event.n, op: more_than, value: 10}}", {"u2"}),
    ("e_account_events", "account", "{event: login, op: performed, within: 7d}", {"a1", "a2"}),
    # escape hatch and boolean structure
    ("sql_user_and_account", "user", "{sql: \"lower(email) like '%example.com' and account.mrr > 100\"}", {"u1", "u2"}),
    ("sql_null_is_false_under_not", "user", "{not: {sql: \"last_name = 'Martin'\"}}", {"u2", "u3", "u4", "u5", "u6"}),
    ("bool_any", "user", "{any: [{property: user.first_name, op: equal_to, value: Alice}, {property: user.first_name, op: equal_to, value: Bob}]}", {"u1", "u2"}),
    ("bool_all_not", "user", "{all: [{property: account.mrr, op: more_than, value: 10}, {not: {property: user.first_name, op: equal_to, value: Alice}}]}", {"u2", "u3", "u4"}),
    # injection: values reach SQL only as literals
    ("inj_quote", "user", "{property: user.last_name, op: equal_to, value: \"O'Brien\"}", {"u5"}),
    ("inj_jinja_and_comment", "user", "{property: user.custom.nickname, op: equal_to, value: " + json.dumps(INJECTION_1, ensure_ascii=False) + "}", {"u1"}),
    ("inj_backslash_unicode", "user", "{property: user.custom.nickname, op: equal_to, value: " + json.dumps(INJECTION_2, ensure_ascii=False) + "}", {"u2"}),
    ("inj_nothing_matches", "user",
     "{property: user.first_name, op: in, value: " + json.dumps(["x'; drop table raw.users; --", "\\", "é🙂", "{{ ref('x') }}", "{% raw %}", "{# c #}", "*/"], ensure_ascii=False) + "}",
     set()),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Project:
    project = Project(copy_project(tmp_path_factory.mktemp("criteria") / "project", rules_from=None))
    for seg_id, entity, criteria, _ in CASES:
        project.write(f"sql_rules/segments/{seg_id}.yml", f"segment: {seg_id}\nentity: {entity}\ncriteria: {criteria}\n")
    project.write(
        "sql_rules/segments/raw_sql_created_by_t.sql",
        "-- entity: user\nselect user_id as entity_id\nfrom {{ ref('stg_users') }}\nwhere created_at <= {{ as_of() }};\n",
    )
    project.insert_rows(ROWS)
    project.build(T)
    return project


def members(project: Project, segment_id: str) -> set[str]:
    rows = project.query("select entity_id from segment_membership where segment_id = ?", [segment_id])
    return {r[0] for r in rows}


@pytest.mark.parametrize("seg_id,entity,criteria,expected", CASES, ids=[c[0] for c in CASES])
def test_criterion_selects_exactly_the_expected_members(built, seg_id, entity, criteria, expected):
    assert members(built, seg_id) == expected


def test_raw_sql_segment_reads_the_run_time(built):
    assert members(built, "raw_sql_created_by_t") == {"u1", "u2", "u3", "u4", "u5"}


def test_injection_values_change_nothing_else(built):
    assert built.query("select count(*) from raw.users")[0][0] == 6
    assert built.query("select count(*) from staging.stg_users")[0][0] == 6


def test_membership_rows_are_unique_and_typed(built):
    duplicates = built.query(
        "select segment_id, entity_id, count(*) from segment_membership group by all having count(*) > 1"
    )
    assert duplicates == []
    types = dict(built.query("select entity_type, count(*) from segment_membership group by all"))
    assert set(types) == {"user", "account"}

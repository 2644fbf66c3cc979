"""Bad rule files are rejected before any SQL runs, naming the file, line, column, field and what is expected.

Each case copies the valid sample rules (sql_rules/) and the staging contracts into a fresh project,
adds one bad file from tests/fixtures/bad_rules/ (two or three when the case needs them, e.g. a
cycle or a bad template) and checks the exact problems. Line and column are 1-based; a problem
about a whole file (empty, too big, a raw SQL segment, a template) has no column.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from journeys.errors import RuleError
from journeys.rules.load import MAX_RULE_FILE_BYTES
from journeys.rules.validate import load_and_validate
from tests.validation_harness import REPO, add_new_rule, make_base_project, problems_of
from tests.validation_harness import project  # noqa: F401  (fixture)

BAD = REPO / "tests" / "fixtures" / "bad_rules"
JOURNEYS_CLI = Path(sys.executable).with_name("journeys")

# Tails that many messages share, spelled out once.
DURATION = "is not a duration; expected a number and a unit m, h, d or w, e.g. 30m, 12h, 2d, 1w"
BAD_ID = "is not a valid id; expected lowercase letters, digits and _ (starting with a letter)"
SEGMENTS = "at_risk_accounts, checkin_due, dashboards_not_adopted, inactive_users, new_users, power_users, renewal_window"
JOURNEYS = "account_health, dashboards_intro, onboarding_drip, periodic_checkin, reengagement, renewal"
USER_COLUMNS = "user_id, account_id, email, first_name, last_name, created_at, last_seen_at"
ACCOUNT_COLUMNS = "account_id, name, mrr, amount, created_at, next_billing_on, licenses, stage, status"
CRITERIA = "all, any, not, segment, milestone, outcome, playbook, team, property, subscription, event, sql"
STEPS = "send_email, create_task, set_attribute, copy_attribute, clear_attribute, increase_attribute, webhook, wait, wait_until, wait_until_date, split, if"
PROPERTY_OPS = (
    "more_than, less_than, equal_to, not_equal_to, contains, does_not_contain, in, not_in, between, before, after, "
    "is_set, is_not_set"
)
TIME = "is not a time; expected an ISO date/timestamp or a relative time like -30d or +7d"
NOT_BOOLEAN = "expected one boolean expression over the entity's columns, e.g. \"mrr > 100 and stage <> 'churned'\""
NO_SUBQUERY = "subqueries, tables and * are not allowed; expected an expression over the entity's columns"
SQL_HEADER = "expected a first line '-- entity: user' or '-- entity: account'"
RECIPIENTS = "expected one of: csm, sales_manager, users or an address"
TEMPLATE_VARIABLES = "account, action_key, entity, journey, recipient, user"
CYCLE = "expected segments that do not refer back to themselves"

S = "sql_rules/segments/"
J = "sql_rules/journeys/"
T = "sql_rules/templates/"

# (fixture file(s) under tests/fixtures/bad_rules/, the exact problems)
CASES = [
    # ---- the file itself: encoding, YAML syntax, shape
    ("segments/latin1.yml", [  # é in latin-1: byte 0xe9 on line 3 after "description: Utilisateurs cr"
        f"{S}latin1.yml:3:29: not UTF-8 text (invalid continuation byte 0xe9); expected the file saved as UTF-8"]),
    ("segments/yaml_tab.yml", [
        f"{S}yaml_tab.yml:4:1: YAML syntax: while scanning for the next token found character '\\t' that cannot start"
        " any token; expected spaces for indentation, not tabs"]),
    ("segments/yaml_bad_indent.yml", [
        f"{S}yaml_bad_indent.yml:5:3: YAML syntax: while parsing a block mapping expected <block end>, but found"
        " '<block mapping start>'; expected this line indented like the keys above it"]),
    ("segments/yaml_unclosed.yml", [  # points at the '[' that is never closed, not past the end of the file
        f"{S}yaml_unclosed.yml:4:8: YAML syntax: '[' is never closed; expected a matching ']' before the end of the file"]),
    ("segments/duplicate_key.yml", [
        f"{S}duplicate_key.yml:4:1: YAML syntax: while constructing a mapping found duplicate key \"entity\" with value"
        " \"account\" (original value: \"user\"); expected each key once"]),
    ("segments/empty.yml", [f"{S}empty.yml:1: empty file; expected a segment definition"]),
    ("segments/top_level_list.yml", [
        f"{S}top_level_list.yml:1:1: expected a mapping with keys: segment, entity, description, criteria"]),
    ("segments/unknown_top_key.yml", [
        f"{S}unknown_top_key.yml:3:1: owner: unknown key 'owner'; expected one of: segment, entity, description, criteria"]),
    ("segments/missing_entity.yml", [f"{S}missing_entity.yml:1:1: entity: missing; this key is required"]),
    ("segments/missing_criteria.yml", [f"{S}missing_criteria.yml:1:1: criteria: missing; this key is required"]),
    ("journeys/missing_entity.yml", [f"{J}missing_entity.yml:1:1: entity: missing; this key is required"]),
    ("journeys/missing_entry_segments.yml", [
        f"{J}missing_entry_segments.yml:3:1: entry.segments: missing; this key is required"]),
    # ---- ids
    ("segments/bad_id_uppercase.yml", [f"{S}bad_id_uppercase.yml:1:1: segment: 'Bad_Id_Uppercase' {BAD_ID}"]),
    ("segments/2fast.yml", [f"{S}2fast.yml:1:1: segment: '2fast' {BAD_ID}"]),
    ("segments/id_differs.yml", [
        f"{S}id_differs.yml:1:1: segment: id 'some_other_name' differs from the file name; expected 'id_differs'"]),
    (("segments/duplicate_id.yml", "segments/duplicate_id.sql"), [  # the .sql is read first (sorted names)
        f"{S}duplicate_id.yml:1:1: segment: duplicate segment id 'duplicate_id'; already defined in"
        f" {S}duplicate_id.sql"]),
    # ---- wrong types
    ("journeys/enabled_yes.yml", [f"{J}enabled_yes.yml:3:1: enabled: expected true or false, got 'yes'"]),
    ("journeys/segments_as_text.yml", [f"{J}segments_as_text.yml:4:3: entry.segments: expected a list, got 'new_users'"]),
    ("segments/value_list_for_scalar.yml", [
        f"{S}value_list_for_scalar.yml:6:3: criteria.value: op 'equal_to' needs a single value, not a list or mapping"]),
    # ---- criteria: keys and operators
    ("segments/unknown_criterion.yml", [
        f"{S}unknown_criterion.yml:6:8: criteria.all[1].propety: unknown criterion 'propety'; expected one of: {CRITERIA}"]),
    ("segments/op_unknown_property.yml", [
        f"{S}op_unknown_property.yml:3:34: criteria.op: 'equals' is not allowed; expected one of: {PROPERTY_OPS}"]),
    ("segments/op_unknown_segment.yml", [
        f"{S}op_unknown_segment.yml:3:32: criteria.op: 'is_member' is not allowed; expected one of: has_met, has_not_met"]),
    ("segments/op_unknown_milestone.yml", [
        f"{S}op_unknown_milestone.yml:5:3: criteria.op: 'achieved' is not allowed; expected one of: has_met, has_not_met"]),
    ("segments/op_unknown_playbook.yml", [
        f"{S}op_unknown_playbook.yml:5:3: criteria.op: 'completed' is not allowed; expected one of: active_in,"
        " never_enrolled, has_completed, is_overdue"]),
    ("segments/op_unknown_team.yml", [
        f"{S}op_unknown_team.yml:5:3: criteria.op: 'contains' is not allowed; expected one of: equal_to, not_equal_to,"
        " is_set, is_not_set"]),
    ("segments/op_unknown_event.yml", [
        f"{S}op_unknown_event.yml:5:3: criteria.op: 'did' is not allowed; expected one of: performed, not_performed"]),
    ("segments/team_without_value.yml", [
        f"{S}team_without_value.yml:5:7: criteria.all[0].value: op 'equal_to' needs a 'value' (the member's email)"]),
    # ---- property ops and values against the contract types
    ("segments/op_contains_on_number.yml", [
        f"{S}op_contains_on_number.yml:5:3: criteria.op: op 'contains' does not apply to number property account.mrr;"
        " expected one of: between, equal_to, in, is_not_set, is_set, less_than, more_than, not_equal_to, not_in"]),
    ("segments/op_before_on_text.yml", [
        f"{S}op_before_on_text.yml:5:3: criteria.op: op 'before' does not apply to text property user.email;"
        " expected one of: contains, does_not_contain, equal_to, in, is_not_set, is_set, not_equal_to, not_in"]),
    ("segments/op_more_than_on_date.yml", [
        f"{S}op_more_than_on_date.yml:5:3: criteria.op: op 'more_than' does not apply to time property"
        " account.next_billing_on; expected one of: after, before, between, equal_to, is_not_set, is_set, not_equal_to"]),
    ("segments/number_for_time.yml", [f"{S}number_for_time.yml:6:3: criteria.value: 30 {TIME}"]),
    ("segments/time_for_number.yml", [
        f"{S}time_for_number.yml:6:3: criteria.value: '-30d' is not a number; expected a number for op 'less_than'"]),
    ("segments/between_one_value.yml", [
        f"{S}between_one_value.yml:6:3: criteria.value: op 'between' needs 'value: [low, high]' (two values)"]),
    ("segments/between_low_above_high.yml", [
        f"{S}between_low_above_high.yml:6:3: criteria.value: [50, 10] is empty; expected [low, high] with low <= high"]),
    ("segments/is_set_with_value.yml", [
        f"{S}is_set_with_value.yml:6:3: criteria.value: op 'is_set' takes no value; remove 'value'"]),
    ("segments/in_empty_list.yml", [f"{S}in_empty_list.yml:6:3: criteria.value: op 'in' needs a non-empty list of values"]),
    # ---- property names and where they may be used
    ("segments/unknown_column.yml", [
        f"{S}unknown_column.yml:5:8: criteria.all[0].property: unknown column 'nme' of users; expected one of:"
        f" {USER_COLUMNS}"]),
    ("segments/unknown_scope.yml", [
        f"{S}unknown_scope.yml:4:3: criteria.property: 'users.email' is not a property; expected user.<column>,"
        " account.<column>, user.custom.<name>, account.custom.<name>, subscription.<column> or event.<key>"]),
    ("segments/user_property_in_account.yml", [
        f"{S}user_property_in_account.yml:4:3: criteria.property: user.email cannot be used in an account criterion;"
        " expected account.*"]),
    ("segments/event_property_outside_where.yml", [
        f"{S}event_property_outside_where.yml:4:3: criteria.property: event.feature cannot be used in a user criterion;"
        " expected account.*, user.* (event.* only inside an event's where)"]),
    ("segments/user_property_in_where.yml", [
        f"{S}user_property_in_where.yml:7:5: criteria.where.property: user.email cannot be used in an event's where;"
        " expected event.*"]),
    ("segments/account_property_in_subscription.yml", [
        f"{S}account_property_in_subscription.yml:7:10: criteria.subscription.all[1].property: account.stage cannot be"
        " used in a subscription criterion; expected subscription.*"]),
    ("journeys/copy_unknown_column.yml", [
        f"{J}copy_unknown_column.yml:6:22: actions[0].copy_attribute.from: unknown column 'seats' of accounts;"
        f" expected one of: {ACCOUNT_COLUMNS}"]),
    # ---- durations and event counts
    ("segments/within_bad_unit.yml", [f"{S}within_bad_unit.yml:6:3: criteria.within: '2x' {DURATION}"]),
    ("segments/within_negative.yml", [f"{S}within_negative.yml:3:41: criteria.within: '-3d' {DURATION}"]),
    ("segments/within_fraction.yml", [f"{S}within_fraction.yml:3:41: criteria.within: '1.5d' {DURATION}"]),
    ("journeys/wait_bad_unit.yml", [f"{J}wait_bad_unit.yml:8:5: actions[1].wait: '2x' {DURATION}"]),
    ("journeys/wait_zero.yml", [f"{J}wait_zero.yml:6:5: actions[0].wait: '0d' {DURATION}"]),
    ("journeys/wait_negative.yml", [f"{J}wait_negative.yml:6:5: actions[0].wait: '-3d' {DURATION}"]),
    ("segments/count_both_bounds.yml", [
        f"{S}count_both_bounds.yml:6:3: criteria.count: expected exactly one of 'at_least' or 'at_most'"]),
    ("segments/count_negative.yml", [
        f"{S}count_negative.yml:7:5: criteria.count.at_least: expected a number >= 0, got -1"]),
    # ---- references between files
    ("journeys/unknown_entry_segment.yml", [
        f"{J}unknown_entry_segment.yml:4:25: entry.segments[1]: unknown segment 'new_usrs'; expected one of: {SEGMENTS}"]),
    ("segments/unknown_segment_in_criterion.yml", [  # the list includes the file's own id: it is a segment too
        f"{S}unknown_segment_in_criterion.yml:4:9: criteria.not.segment: unknown segment 'new_usrs'; expected one of:"
        f" {SEGMENTS.replace('renewal_window', 'renewal_window, unknown_segment_in_criterion')}"]),
    ("journeys/entry_segment_wrong_entity.yml", [
        f"{J}entry_segment_wrong_entity.yml:4:32: entry.segments[1]: segment 'new_users' is a user segment;"
        " expected an account segment"]),
    ("segments/user_segment_in_account.yml", [
        f"{S}user_segment_in_account.yml:6:8: criteria.any[1].segment: segment 'new_users' is a user segment;"
        " an account criterion needs an account segment"]),
    (("segments/cycle_a.yml", "segments/cycle_b.yml"), [  # reported where the cycle closes
        f"{S}cycle_b.yml:3:12: criteria.segment: segment cycle cycle_a -> cycle_b -> cycle_a; {CYCLE}"]),
    (("segments/loop_one.yml", "segments/loop_two.yml", "segments/loop_three.yml"), [
        f"{S}loop_three.yml:5:8: criteria.any[0].segment: segment cycle loop_one -> loop_two -> loop_three -> loop_one;"
        f" {CYCLE}"]),
    ("journeys/unenroll_unknown.yml", [
        f"{J}unenroll_unknown.yml:6:33: exit.unenroll_from[1]: unknown journey 'onboarding'; expected one of:"
        f" {JOURNEYS.replace('renewal', 'renewal, unenroll_unknown')}"]),
    ("journeys/unenroll_self.yml", [
        f"{J}unenroll_self.yml:7:7: exit.unenroll_from[0]: a journey cannot unenroll from itself;"
        " expected another journey"]),
    # ---- action steps
    ("journeys/step_typo.yml", [
        f"{J}step_typo.yml:7:5: actions[1].sendemail: unknown step 'sendemail'; expected one of: {STEPS}"]),
    ("journeys/empty_then.yml", [f"{J}empty_then.yml:7:5: actions[0].then: expected at least 1 item(s)"]),
    ("journeys/empty_else.yml", [f"{J}empty_else.yml:9:5: actions[0].else: expected at least 1 item(s)"]),
    ("journeys/if_without_then.yml", [f"{J}if_without_then.yml:7:5: actions[1].then: missing; this key is required"]),
    ("journeys/bad_reenrollment.yml", [
        f"{J}bad_reenrollment.yml:5:3: entry.reenrollment: 'always' is not allowed; expected one of: never, after_exit,"
        " or {cooldown: <duration>}"]),
    ("journeys/bad_cooldown.yml", [f"{J}bad_cooldown.yml:5:18: entry.reenrollment.cooldown: '30 days' {DURATION}"]),
    # ---- email, templates and task text
    ("journeys/unknown_template.yml", [
        f"{J}unknown_template.yml:7:7: actions[0].send_email.template: unknown template 'welcom'; expected a file in"
        " sql_rules/templates/ (checkin_reminder, dashboards_intro, dashboards_tips, first_report_tips,"
        " renewal_heads_up, we_miss_you, welcome)"]),
    (("journeys/template_syntax.yml", "templates/broken_syntax.html"), [  # `{{ user.last_name }` on line 3
        f"{T}broken_syntax.html:3: template syntax: unexpected '}}'"]),
    (("journeys/template_unknown_variable.yml", "templates/unknown_variable.html"), [
        f"{T}unknown_variable.html:2: unknown template variable 'plan'; expected one of: {TEMPLATE_VARIABLES}"]),
    (("journeys/template_unknown_field.yml", "templates/unknown_field.html"), [
        f"{T}unknown_field.html:2: unknown field 'account.nope'; expected one of: account_id, amount, created_at,"
        " custom, licenses, mrr, name, next_billing_on, stage, status"]),
    ("journeys/subject_unknown_field.yml", [
        f"{J}subject_unknown_field.yml:8:7: actions[0].send_email.subject: unknown field 'user.nope'; expected one of:"
        " account_id, created_at, custom, email, first_name, last_name, last_seen_at, user_id"]),
    ("journeys/task_title_unknown_variable.yml", [
        f"{J}task_title_unknown_variable.yml:7:7: actions[0].create_task.title: unknown template variable 'contact';"
        f" expected one of: {TEMPLATE_VARIABLES}"]),
    ("journeys/account_email_without_to.yml", [
        f"{J}account_email_without_to.yml:6:5: actions[0].send_email: an account journey must name 'to'; {RECIPIENTS}"]),
    ("journeys/email_bad_to.yml", [
        f"{J}email_bad_to.yml:6:46: actions[0].send_email.to: 'account_manager' is not a recipient; {RECIPIENTS}"]),
    # ---- the {sql: ...} escape hatch
    ("segments/sql_not_boolean.yml", [f"{S}sql_not_boolean.yml:4:3: criteria.sql: {NOT_BOOLEAN}"]),
    ("segments/sql_subquery.yml", [f"{S}sql_subquery.yml:4:3: criteria.sql: {NO_SUBQUERY}"]),
    ("segments/sql_unknown_column.yml", [
        f"{S}sql_unknown_column.yml:6:7: criteria.all[1].sql: unknown column 'seats' of accounts; expected one of:"
        f" {ACCOUNT_COLUMNS}"]),
    ("segments/sql_getenv.yml", [
        f"{S}sql_getenv.yml:4:3: criteria.sql: unknown function 'getenv'; expected standard SQL functions"]),
    ("segments/sql_read_csv.yml", [f"{S}sql_read_csv.yml:4:3: criteria.sql: {NO_SUBQUERY}"]),
    ("segments/sql_read_csv_scalar.yml", [
        f"{S}sql_read_csv_scalar.yml:4:3: criteria.sql: unknown function 'read_csv'; expected standard SQL functions"]),
    ("segments/sql_read_parquet.yml", [
        f"{S}sql_read_parquet.yml:4:3: criteria.sql: unknown function 'read_parquet'; expected standard SQL functions"]),
    ("segments/sql_ddl.yml", [f"{S}sql_ddl.yml:4:3: criteria.sql: {NOT_BOOLEAN}"]),
    ("segments/sql_current_date.yml", [  # only the run's logical time may be read, never the wall clock
        f"{S}sql_current_date.yml:4:3: criteria.sql: unknown function 'current_date'; expected standard SQL functions"]),
    ("segments/raw_ref_generated.sql", [
        f"{S}raw_ref_generated.sql:3: sql: ref('segment_membership') is a generated model that depends on the segments"
        " (a cycle); expected staging models (stg_*), entity_attributes or sources"]),
    ("segments/Bad-Name.sql", [
        f"{S}Bad-Name.sql:1: 'Bad-Name' is not a valid segment id (the file name); expected lowercase letters,"
        " digits and _ (starting with a letter)"]),
    ("journeys/unenroll_other_entity.yml", [
        f"{J}unenroll_other_entity.yml:6:19: exit.unenroll_from[0]: journey 'renewal' is an account journey;"
        " expected a user journey"]),
    # ---- raw SQL segments
    ("segments/raw_no_header.sql", [f"{S}raw_no_header.sql:1: entity: no '-- entity:' header; {SQL_HEADER}"]),
    ("segments/raw_bad_entity.sql", [f"{S}raw_bad_entity.sql:1: entity: 'users' is not an entity; {SQL_HEADER}"]),
    ("segments/raw_not_select.sql", [f"{S}raw_not_select.sql:1: sql: expected exactly one select statement"]),
    ("segments/raw_no_entity_id.sql", [
        f"{S}raw_no_entity_id.sql:1: sql: the select returns account_id; expected a column named entity_id"]),
    ("segments/raw_jinja_if.sql", [
        f"{S}raw_jinja_if.sql:4: sql: Jinja '{{%' is not allowed; expected only {{{{ ref(...) }}}},"
        " {{ source(...) }} and {{ as_of() }}"]),
    ("segments/raw_syntax_error.sql", [  # the unclosed '(' is on line 4
        f"{S}raw_syntax_error.sql:4: sql: not valid SQL (Expecting )); expected one select statement"]),
]


def _case_files(case) -> tuple[str, ...]:
    return (case,) if isinstance(case, str) else case


def _case_id(case) -> str:
    return "+".join(Path(f).name for f in _case_files(case))


@pytest.fixture(scope="session")
def base_project(tmp_path_factory) -> Path:
    """The valid sample rules and the staging contracts, built once; each test copies it."""
    return make_base_project(tmp_path_factory.mktemp("base") / "project")


def add_bad_files(project: Path, *files: str) -> None:
    for relative in files:
        add_new_rule(BAD / relative, project / "sql_rules" / relative, relative)


def test_the_sample_rules_are_a_valid_base(project):
    rules = load_and_validate(project)
    assert len(rules.segments) == 7 and len(rules.journeys) == 6


def test_every_fixture_file_is_used_by_a_case():
    used = {f for case, _ in CASES for f in _case_files(case)}
    on_disk = {p.relative_to(BAD).as_posix() for p in BAD.rglob("*") if p.is_file()}
    assert on_disk == used


@pytest.mark.parametrize(("files", "expected"), CASES, ids=[_case_id(c) for c, _ in CASES])
def test_bad_rule_file_is_rejected_with_its_place_and_what_is_expected(project, files, expected):
    add_bad_files(project, *_case_files(files))
    assert problems_of(project) == expected


def test_a_file_over_one_megabyte_is_refused_before_it_is_parsed(project):
    path = project / "sql_rules" / "segments" / "huge.yml"
    filler = "x" * MAX_RULE_FILE_BYTES
    path.write_text(f"segment: huge\nentity: user\ndescription: {filler}\ncriteria: {{property: user.email, op: is_set}}\n")
    size = path.stat().st_size
    assert problems_of(project) == [f"sql_rules/segments/huge.yml:1: file is {size} bytes; expected at most 1000000"]


TOO_DEEP = "nested more than 100 levels deep; expected a flatter rule (combine conditions with all/any)"


@pytest.mark.parametrize("levels", [120, 500])
def test_deeply_nested_not_in_flow_style_is_refused_at_the_first_level_too_deep(project, levels):
    # `criteria: {not: {not: ...` on line 3: the file's mapping is level 1, the first `{` (column 11) level 2,
    # so level 101 is the 100th `{`, at column 11 + 99 * len("{not: ") = 605. 500 levels would overflow
    # Python's recursion in the YAML parser; the answer must be the same either way.
    leaf = "{property: user.email, op: is_set}"
    text = f"segment: deep\nentity: user\ncriteria: {'{not: ' * levels}{leaf}{'}' * levels}\n"
    (project / "sql_rules" / "segments" / "deep.yml").write_text(text)
    assert problems_of(project) == [f"sql_rules/segments/deep.yml:3:605: {TOO_DEEP}"]


def test_deeply_nested_not_in_block_style_is_refused_at_the_first_level_too_deep(project):
    # `criteria:` then `not:` at line 4 column 3 (level 2), each next `not:` one line down and two columns in:
    # level 101 starts on line 103, column 201.
    nots = "".join("  " * (i + 1) + "not:\n" for i in range(500))
    leaf = "  " * 501 + "property: user.email\n" + "  " * 501 + "op: is_set\n"
    (project / "sql_rules" / "segments" / "deep.yml").write_text(f"segment: deep\nentity: user\ncriteria:\n{nots}{leaf}")
    assert problems_of(project) == [f"sql_rules/segments/deep.yml:103:201: {TOO_DEEP}"]


CENTURY = "expected at most 100 years (36500d, 5214w)"


def test_durations_offsets_and_relative_times_are_bounded_to_a_century(project):
    """T + 999999w is year 21,000: past Python's dates (the task executor overflowed). A century is accepted."""
    entry = "entity: user\nentry: {segments: [new_users]}\nactions:\n"
    rules = project / "sql_rules"
    (rules / "journeys" / "long_wait.yml").write_text(
        f"journey: long_wait\n{entry}  - wait: 36500d\n  - wait: 5214w\n  - wait: 36501d\n"
        "  - create_task: {title: Call, assignee: csm, due_in: 999999w}\n")
    (rules / "journeys" / "far_date.yml").write_text(
        f"journey: far_date\n{entry}  - wait_until_date: {{property: user.created_at, offset: -999999w}}\n")
    (rules / "segments" / "far_past.yml").write_text(
        "segment: far_past\nentity: user\ncriteria: {property: user.created_at, op: between, value: [-999999w, +0d]}\n")
    assert problems_of(project) == [
        f"{J}far_date.yml:5:50: actions[0].wait_until_date.offset: '-999999w' is too long; {CENTURY} either way",
        f"{J}long_wait.yml:7:5: actions[2].wait: '36501d' is too long; {CENTURY}",
        f"{J}long_wait.yml:8:47: actions[3].create_task.due_in: '999999w' is too long; {CENTURY}",
        f"{S}far_past.yml:3:52: criteria.value: '-999999w' is too far from T; expected a relative time of at most"
        " 100 years (36500d, 5214w)",
    ]


def test_a_few_aliases_and_a_merge_key_are_fine(project):
    """Aliases are bounded by what they add (journeys/rules/load.py MAX_ALIASED_VALUES), not refused."""
    (project / "sql_rules" / "journeys" / "aliased.yml").write_text(
        "journey: aliased\nentity: user\nentry: {segments: [new_users]}\nactions:\n"
        "  - if: &known {property: user.email, op: is_set}\n    then: &greet [{send_email: {template: welcome}}]\n"
        "  - if: {<<: *known, op: is_not_set}\n    then: *greet\n  - if: *known\n    then: *greet\n")
    rules = load_and_validate(project)
    assert len(rules.journeys["aliased"].actions) == 3


def test_a_raw_segment_may_read_staging_models_entity_attributes_and_raw_sources_only(project):
    segment = project / "sql_rules" / "segments" / "raw_reads.sql"
    segment.write_text("-- entity: user\nselect a.entity_id from {{ ref('entity_attributes') }} as a\n"
                       "join {{ source('raw', 'users') }} as u on u.user_id = a.entity_id\n"
                       "join {{ ref(\"stg_users\") }} as s on s.user_id = u.user_id\n")
    load_and_validate(project)
    for call, problem in [
        ("{{ source('journey_state', 'attributes') }}", "sql: source('journey_state', 'attributes'): unknown source"),
        ("{{ ref(name) }}", "sql: ref(name) needs one quoted model name; expected e.g. ref('stg_users')"),
        ("{{ ref('journey_actions') }}", "sql: ref('journey_actions'): unknown model; expected one of: entity_attributes,"),
    ]:
        segment.write_text(f"-- entity: user\nselect user_id as entity_id\nfrom {call}\n")
        [found] = problems_of(project)
        assert found.startswith(f"{S}raw_reads.sql:3: {problem}"), found


# Bad files of many kinds in one project; a journey also names the broken segment yaml_tab, which must not
# add an "unknown segment" problem on top of the segment's own syntax error.
SEVERAL = [
    "segments/yaml_tab.yml", "segments/unknown_column.yml", "segments/sql_getenv.yml", "segments/raw_no_header.sql",
    "segments/cycle_a.yml", "segments/cycle_b.yml", "journeys/wait_bad_unit.yml", "journeys/step_typo.yml",
    "journeys/unknown_template.yml", "journeys/enabled_yes.yml",
]  # fmt: skip


def _expected_for(files: list[str]) -> list[str]:
    return [p for case, expected in CASES if set(_case_files(case)) <= set(files) for p in expected]


def _project_with_several_bad_files(project: Path) -> list[str]:
    add_bad_files(project, *SEVERAL)
    (project / "sql_rules" / "journeys" / "uses_broken.yml").write_text(
        "journey: uses_broken\nentity: user\nentry:\n  segments: [yaml_tab]\n"
    )
    return _expected_for(SEVERAL)


def test_all_problems_of_all_files_are_reported_at_once_and_sorted(project):
    expected = _project_with_several_bad_files(project)
    with pytest.raises(RuleError) as caught:
        load_and_validate(project)
    problems = caught.value.problems
    assert len(problems) == len(expected) == 9
    assert sorted(str(p) for p in problems) == sorted(expected)
    assert problems == sorted(problems, key=lambda p: (p.path, p.line, p.col, p.field, p.message))
    assert str(caught.value) == "\n".join(str(p) for p in problems)


def _journeys(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(JOURNEYS_CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_validate_lists_every_problem_on_stderr_and_exits_1(project, tmp_path):
    expected = _project_with_several_bad_files(project)
    result = _journeys("--project-dir", str(project), "--db", str(tmp_path / "db" / "j.duckdb"), "validate", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[-1] == f"error: {len(expected)} problem(s) in sql_rules/; nothing was compiled or run"
    assert sorted(lines[:-1]) == sorted(expected)
    assert lines[:-1] == problems_of(project)  # the order of the API: by file, line, column
    assert "Traceback" not in result.stderr


def test_cli_validate_says_ok_on_the_valid_base(project, tmp_path):
    result = _journeys("--project-dir", str(project), "--db", str(tmp_path / "db" / "j.duckdb"), "validate", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "ok: 7 segments, 6 journeys, 7 templates\n"


@pytest.mark.parametrize("bad", [False, True], ids=["valid", "bad"])
def test_validate_runs_no_sql_and_creates_no_database(project, tmp_path, bad):
    if bad:
        add_bad_files(project, "segments/sql_ddl.yml", "segments/raw_not_select.sql")
    db = tmp_path / "warehouse" / "journeys.duckdb"
    result = _journeys("--project-dir", str(project), "--db", str(db), "validate", cwd=tmp_path)
    assert result.returncode == (1 if bad else 0)
    assert not db.exists() and not db.parent.exists()
    assert not (project / "warehouse").exists()
    assert not (project / "dbt_project" / "models" / "generated").exists()

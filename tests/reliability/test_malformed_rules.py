"""Malformed rules (SPEC §7) beyond tests/unit/test_validation.py: YAML bombs and aliases, tags, huge files,
deep nesting, wrong types, unknown operators, bad durations, cycles, unknown references, template errors.

Each case (a folder of tests/fixtures/bad_rules_more/ laid over the project, or a file made here when it
is too big to keep) is run with `journeys run` against a database holding the sample data and one
committed run. The run must stop with exit 1 and `path:line` of the problem, before any SQL: the
database file is byte-identical afterwards, so is every table's checksum, and so are the generated models.
"""

from __future__ import annotations

import datetime as dt
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from journeys.cli import main
from journeys.errors import RuleError
from journeys.loading import load_directory
from journeys.sample.generate import write_sample_files
from tests.conftest import REPO, Project, copy_project
from tests.reliability.harness import JOURNEYS_CLI, file_digest, folder_digest, release_dbt, table_checksums

BAD = REPO / "tests" / "fixtures" / "bad_rules_more"
ORIGIN = dt.datetime(2026, 11, 2, 9, 0)
NEXT = "2026-11-03T09:00:00"
S, J, T = "sql_rules/segments/", "sql_rules/journeys/", "sql_rules/templates/"


def bug(reason: str):
    return pytest.mark.xfail(strict=True, reason=f"BUG: {reason}")


# (case folder, exact `path:line[:col]` of the first problem, a fragment of what it says)
CASES = [
    # ---- YAML: aliases, tags, documents, bytes
    ("alias_self_reference", f"{S}alias_self.yml:3:11", "criteria.all[0]: expected a criterion"),
    ("alias_undefined", f"{S}alias_undefined.yml:3:49", "YAML syntax: found undefined alias 'nowhere'"),
    ("merge_key_not_mapping", f"{S}merge_bad.yml:4:8", "expected a mapping for merging"),
    ("tag_python_object", f"{S}tag_python.yml:3:1", "criteria: expected a criterion"),  # never executed
    ("tag_binary_value", f"{S}tag_binary.yml:3:1", "criteria: expected a text, number, boolean or date value, got bytes"),
    ("tag_custom", f"{S}tag_custom.yml:3:1", "criteria: expected a criterion"),
    ("two_documents", f"{S}two_documents.yml:4:1", "YAML syntax: expected a single document"),
    ("scalar_document", f"{S}scalar_document.yml:1", "expected a mapping with keys: segment, entity"),
    ("comment_only", f"{J}comment_only.yml:1", "empty file; expected a journey definition"),
    ("criteria_null", f"{S}criteria_null.yml:3:1", "criteria: expected a criterion"),
    ("nul_byte", f"{S}nul_byte.yml:3:15", "YAML syntax: unacceptable character #x0000"),
    ("date_impossible", f"{S}date_impossible.yml:3:57", "'2026-02-30' is not a valid date (day is out of range for month)"),
    # ---- wrong types
    ("entity_number", f"{S}entity_number.yml:2:1", "entity: 3 is not allowed; expected one of: user, account"),
    ("criteria_text", f"{S}criteria_text.yml:3:1", "criteria: expected a criterion"),
    ("description_list", f"{S}description_list.yml:3:1", "description: expected text, got a list"),
    ("count_not_mapping", f"{S}count_scalar.yml:6:3", "criteria.count: expected a mapping with keys: at_least, at_most"),
    ("in_value_mapping", f"{S}in_mapping.yml:6:3", "criteria.value: op 'in' needs a non-empty list of values"),
    ("segment_id_number", f"{S}id_number.yml:1:1", "segment: '42' is not a valid id"),
    ("actions_mapping", f"{J}actions_mapping.yml:6:1", "actions: expected a list, got a mapping"),
    ("wait_integer", f"{J}wait_integer.yml:7:5", "actions[0].wait: '3' is not a duration"),
    ("send_email_text", f"{J}send_email_text.yml:7:5", "actions[0].send_email: expected a mapping with keys: template"),
    ("increase_by_text", f"{J}increase_by_text.yml:7:38", "actions[0].increase_attribute.by: expected a number"),
    ("existing_members_maybe", f"{J}existing_maybe.yml:5:3", "entry.existing_members: 'maybe' is not allowed"),
    ("entry_segments_numbers", f"{J}segments_numbers.yml:4:14", "entry.segments[0]: '1' is not a valid id"),
    ("on_goal_stay", f"{J}on_goal_stay.yml:8:3", "goal.on_goal: 'stay' is not allowed; expected one of: exit, continue"),
    ("name_mapping", f"{J}name_mapping.yml:2:1", "name: expected text, got a mapping"),
    ("enabled_quoted_true", f"{J}enabled_quoted.yml:3:1", "enabled: expected true or false, got 'true'"),
    ("entity_in_plural", f"{J}entity_plural.yml:2:1", "entity: 'users' is not allowed"),
    ("step_two_keys", f"{J}step_two_keys.yml:7:39", "actions[0].wait: unknown key 'wait'"),
    ("task_without_title", f"{J}task_no_title.yml:7:5", "actions[0].create_task.title: missing"),
    # ---- operators
    ("op_like", f"{S}op_like.yml:3:34", "criteria.op: 'like' is not allowed"),
    ("op_missing", f"{S}op_missing.yml:3:1", "criteria.op: missing; this key is required"),
    ("op_wrong_case", f"{S}op_case.yml:3:34", "criteria.op: 'Equal_To' is not allowed"),
    ("op_unknown_in_subscription", f"{S}op_sub.yml:6:5", "criteria.subscription.op: 'regex' is not allowed"),
    ("op_unknown_in_where", f"{S}op_where.yml:6:36", "criteria.where.op: 'matches' is not allowed"),
    ("count_exactly", f"{S}count_exactly.yml:6:11", "criteria.count.exactly: unknown key 'exactly'"),
    ("op_between_on_text", f"{S}between_text.yml:3:34", "op 'between' does not apply to text property user.email"),
    # ---- durations and times
    ("wait_words", f"{J}wait_words.yml:7:5", "actions[0].wait: '2 days' is not a duration"),
    ("wait_years", f"{J}wait_years.yml:7:5", "actions[0].wait: '1y' is not a duration"),
    ("wait_empty", f"{J}wait_empty.yml:7:5", "actions[0].wait: '' is not a duration"),
    ("wait_uppercase_unit", f"{J}wait_upper.yml:7:5", "actions[0].wait: '2D' is not a duration"),
    ("wait_seven_digits", f"{J}wait_digits.yml:7:5", "actions[0].wait: '1000000d' is not a duration"),
    ("cooldown_zero", f"{J}cooldown_zero.yml:5:18", "entry.reenrollment.cooldown: '0d' is not a duration"),
    ("due_in_words", f"{J}due_in_words.yml:7:47", "actions[0].create_task.due_in: 'tomorrow' is not a duration"),
    ("within_leading_zero", f"{S}within_zero.yml:3:41", "criteria.within: '030d' is not a duration"),
    ("relative_time_words", f"{S}relative_words.yml:3:50", "criteria.value: '-30 days' is not a time"),
    # ---- cycles
    ("cycle_self", f"{S}self_loop.yml:6:8", "segment cycle self_loop -> self_loop"),
    ("cycle_four", f"{S}ring_d.yml:5:5", "segment cycle ring_a -> ring_b -> ring_c -> ring_d -> ring_a"),
    ("cycle_through_not", f"{S}knot_b.yml:3:55", "segment cycle knot_a -> knot_b -> knot_a"),
    # ---- unknown references and names
    ("goal_unknown_segment", f"{J}goal_unknown.yml:7:14", "goal.criteria.segment: unknown segment 'nope'"),
    ("blacklist_unknown_segment", f"{J}blacklist_unknown.yml:7:15", "exit.blacklist.segment: unknown segment 'nope'"),
    ("if_unknown_column", f"{J}if_unknown.yml:7:10", "actions[0].if.property: unknown column 'nope' of users"),
    ("custom_attribute_bad_name", f"{S}custom_bad.yml:3:12", "'user.custom.bad-name' is not a property"),
    ("copy_to_bad_name", f"{J}copy_bad.yml:7:40", "actions[0].copy_attribute.to: 'bad name' is not an attribute name"),
    ("task_assignee_template_var", f"{J}task_notes.yml:10:7", "unknown template variable 'secrets'"),
    ("raw_sql_drop", f"{S}raw_drop.sql:1", "sql: expected exactly one select statement"),
    ("raw_ref_unknown_model", f"{S}raw_ref_unknown.sql:3", "sql: ref('stg_nope'): unknown model; expected one of: "
     "entity_attributes, stg_account_team"),
    ("raw_source_unknown_table", f"{S}raw_source_unknown.sql:3", "sql: source('raw', 'nope'): unknown source; "
     "expected source('raw', '<table>') with <table> one of: users, accounts"),
    # ---- templates
    ("template_unclosed_if", f"{T}unclosed_if.html:2", "template syntax: Unexpected end of template"),
    ("template_dunder", f"{T}dunder.html:2", "unknown field 'user.__class__'"),
    ("subject_unclosed_for", f"{J}subject_for.yml:9:7", "actions[0].send_email.subject: template syntax"),
    ("subject_deep_parens", f"{J}subject_parens.yml:9:7", "actions[0].send_email.subject: too long"),
    pytest.param("template_unknown_filter", f"{T}unknown_filter.html:2", "unknown filter 'shout'; expected one of: abs,",
                 marks=pytest.mark.slow),
    pytest.param("template_unknown_test", f"{T}unknown_test.html:2", "unknown test 'shiny'; expected one of: boolean,",
                 marks=pytest.mark.slow),
    ("template_include", f"{T}includes.html:2", "{% include %} is not supported: a template is rendered alone"),
    ("template_latin1", f"{T}latin1_tpl.txt:2:6", "not UTF-8 text (invalid continuation byte 0xea)"),
    # ---- deep nesting
    ("deep_value_lists", f"{S}deep_lists.yml:3:147", "nested more than 100 levels deep"),
    ("deep_all_block", f"{S}deep_all.yml:102:201", "nested more than 100 levels deep"),
    ("deep_if_steps", f"{J}deep_if.yml:105:201", "nested more than 100 levels deep"),
    ("sql_deep_parens", f"{S}sql_parens.yml:3:12", "criteria.sql: parentheses nested more than 100 levels deep"),
    ("raw_sql_deep_parens", f"{S}raw_parens.sql:3", "sql: parentheses nested more than 100 levels deep"),
    ("template_deep_ifs", f"{T}deep_ifs.html:1", "template nested more than 100 levels deep"),
]  # fmt: skip

# YAML bombs: run in a subprocess with a time and memory limit, since a failure here hangs or eats memory.
# Found by this suite: every walk of a rule file visited each alias's expansion (9^7 values: ~10 s, 9^9:
# hours); journeys/rules/load.py _alias_bomb now bounds what aliases add, before any walk.
BOMBS = [
    pytest.param("bomb_list", f"{S}bomb_list.yml"),
    pytest.param("bomb_mapping", f"{S}bomb_map.yml", marks=pytest.mark.slow),
    pytest.param("bomb_steps", f"{J}bomb_steps.yml", marks=pytest.mark.slow),
]
BOMB_SECONDS = 3.0  # a validator that looks at the aliases answers in well under a second


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """The sample rules on the sample data, one committed run: the database every case must not touch."""
    base = tmp_path_factory.mktemp("malformed")
    project = Project(copy_project(base / "project"))
    write_sample_files(base / "data", users=60, origin=ORIGIN, fmt="csv")
    load_directory(project.settings.db_path, base / "data", project.root)
    project.run(ORIGIN)
    release_dbt()
    shutil.copy(project.settings.db_path, base / "pristine.duckdb")
    shutil.copytree(project.root / "dbt_project" / "models", base / "pristine_models")
    return project


@pytest.fixture
def project(populated):
    """The populated project; the case's files are added for the test and removed afterwards, and a
    database or models a (buggy) case changed are put back, so that one failure does not spread."""
    db, models = populated.settings.db_path, populated.root / "dbt_project" / "models"
    pristine = db.parents[2]
    rules_before = set((populated.root / "sql_rules").rglob("*"))
    yield populated
    for path in sorted(set((populated.root / "sql_rules").rglob("*")) - rules_before, reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (populated.root / "journeys.yml").unlink(missing_ok=True)
    release_dbt()
    if file_digest(db) != file_digest(pristine / "pristine.duckdb"):
        shutil.copy(pristine / "pristine.duckdb", db)
    if folder_digest(models) != folder_digest(pristine / "pristine_models"):
        shutil.rmtree(models)
        shutil.copytree(pristine / "pristine_models", models)
    Path(f"{db}.lock").write_text("")  # a killed bounded run leaves its pid there


def lay_over(project: Project, case: str) -> None:
    for path in (BAD / case).rglob("*"):
        if path.is_file():
            target = project.root / path.relative_to(BAD / case)
            assert not target.exists(), f"{case} would replace {target}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)


def run_in_process(project: Project, capsys) -> tuple[int, list[str]]:
    """`journeys run` through the CLI's own entry point (same code as the installed script, no fork)."""
    capsys.readouterr()
    code = main(["--project-dir", str(project.root), "--db", str(project.settings.db_path), "run", "--as-of", NEXT])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err.splitlines()


def assert_rejected(project: Project, code: int, lines: list[str], where: str, fragment: str, checksums: dict) -> None:
    assert code == 1, "\n".join(lines)
    assert lines[-1].startswith("error: ") and lines[-1].endswith(" problem(s) in sql_rules/; nothing was compiled or run")
    first = lines[0]
    assert re.match(re.escape(where) + r"(:\d+)?: ", first), first  # exactly this place (the column when given)
    assert first.startswith(where + ":") and fragment in first, first
    assert table_checksums(project.settings.db_path) == checksums
    pristine = project.settings.db_path.parents[2]
    assert file_digest(project.settings.db_path) == file_digest(pristine / "pristine.duckdb")  # not a byte changed
    assert folder_digest(project.root / "dbt_project" / "models") == folder_digest(pristine / "pristine_models")


@pytest.fixture(scope="module")
def checksums(populated):
    return table_checksums(populated.settings.db_path)


def _case_id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize(("case", "where", "fragment"), CASES, ids=[_case_id(c) for c in CASES])
def test_a_malformed_rule_stops_the_run_with_its_place_and_touches_nothing(project, checksums, capsys, case, where,
                                                                           fragment):  # fmt: skip
    lay_over(project, case)
    code, lines = run_in_process(project, capsys)
    assert_rejected(project, code, lines, where, fragment, checksums)


def _limited_memory():
    resource.setrlimit(resource.RLIMIT_AS, (2_000_000_000, 2_000_000_000))


def run_bounded(project: Project, seconds: float) -> tuple[int | None, list[str], float]:
    """`journeys run` in a subprocess with bounded memory, killed after `seconds` (code None)."""
    started = time.monotonic()
    try:
        done = subprocess.run([str(JOURNEYS_CLI), "--project-dir", str(project.root), "--db",
                               str(project.settings.db_path), "run", "--as-of", NEXT],
                              capture_output=True, text=True, timeout=seconds, preexec_fn=_limited_memory)  # fmt: skip
        return done.returncode, done.stderr.splitlines(), time.monotonic() - started
    except subprocess.TimeoutExpired:
        return None, [], time.monotonic() - started


@pytest.mark.parametrize(("case", "path"), BOMBS, ids=[c.values[0] for c in BOMBS])
def test_a_yaml_bomb_is_refused_quickly_with_bounded_memory(project, checksums, case, path):
    lay_over(project, case)
    code, lines, seconds = run_bounded(project, BOMB_SECONDS + 2)
    assert code is not None, f"still validating after {seconds:.0f} s"
    assert code == 1 and re.match(re.escape(path) + r":\d+", lines[0]), lines
    assert seconds < BOMB_SECONDS  # the CLI's start-up included
    assert table_checksums(project.settings.db_path) == checksums


@pytest.mark.slow
def test_the_billion_laughs_is_refused_quickly_with_bounded_memory(project, checksums):
    anchors = "\n".join([f'  - &l0 "lol"'] + [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)])
    project.write(f"{S}lol.yml", f"segment: lol\nentity: user\ncriteria:\n  property: user.email\n  op: in\n"
                                 f"  value:\n{anchors}\n")
    code, lines, seconds = run_bounded(project, 20)
    assert code == 1 and lines and lines[0].startswith(f"{S}lol.yml:"), (code, lines, seconds)
    assert table_checksums(project.settings.db_path) == checksums


# ---------------------------------------------------------------- too big to keep as fixtures

def test_a_rule_file_over_one_megabyte_is_refused_before_it_is_parsed(project, checksums, capsys):
    text = "journey: big\nentity: user\nentry:\n  segments: [new_users]\n# " + "x" * 1_200_000 + "\n"
    size = len(project.write(f"{J}big.yml", text).read_bytes())
    code, lines = run_in_process(project, capsys)
    assert_rejected(project, code, lines, f"{J}big.yml:1", f"file is {size} bytes; expected at most 1000000", checksums)


def test_a_raw_sql_segment_over_one_megabyte_is_refused(project, checksums, capsys):
    text = "-- entity: user\nselect user_id as entity_id from {{ ref('stg_users') }}\n" + "-- filler\n" * 120_000
    size = len(project.write(f"{S}big_sql.sql", text).read_bytes())
    code, lines = run_in_process(project, capsys)
    assert_rejected(project, code, lines, f"{S}big_sql.sql:1", f"file is {size} bytes", checksums)


@pytest.mark.slow
def test_a_template_over_one_megabyte_is_refused(project, checksums, capsys):
    size = len(project.write(f"{T}huge.html", "<p>{{ user.first_name }}</p>\n" * 45_000).read_bytes())
    project.write(f"{J}huge_tpl.yml", "journey: huge_tpl\nentity: user\nentry:\n  segments: [new_users]\n"
                                      "actions:\n  - send_email: {template: huge}\n")  # fmt: skip
    code, lines = run_in_process(project, capsys)
    assert_rejected(project, code, lines, f"{T}huge.html:1", f"file is {size} bytes", checksums)


def test_an_error_at_the_end_of_a_file_just_under_the_limit_is_found_at_its_place(project, checksums, capsys):
    values = ", ".join(f"v{i}@example.com" for i in range(44_000))
    text = (f"segment: near_limit\nentity: user\ncriteria:\n  all:\n"
            f"    - {{property: user.email, op: in, value: [{values}]}}\n"
            "    - {property: user.email, op: contians, value: x}\n")
    assert 800_000 < len(project.write(f"{S}near_limit.yml", text).read_bytes()) < 1_000_000
    code, lines = run_in_process(project, capsys)
    assert_rejected(project, code, lines, f"{S}near_limit.yml:6:30", "criteria.all[1].op: 'contians' is not allowed",
                    checksums)  # fmt: skip


def test_a_problem_after_a_very_long_line_keeps_its_line(project, checksums, capsys):
    text = f"segment: long_line\nentity: user\ndescription: {'y' * 900_000}\nowner: someone\n" \
           "criteria: {property: user.email, op: is_set}\n"  # fmt: skip
    project.write(f"{S}long_line.yml", text)
    code, lines = run_in_process(project, capsys)
    assert_rejected(project, code, lines, f"{S}long_line.yml:4:1", "owner: unknown key 'owner'", checksums)


@pytest.mark.slow
def test_two_thousand_broken_files_are_all_reported(project, checksums, capsys):
    for i in range(2000):
        project.write(f"{S}s{i:04}.yml", f"segment: s{i:04}\nentity: user\ncriteria: {{property: user.emial, op: is_set}}\n")
    code, lines = run_in_process(project, capsys)
    assert code == 1 and lines[-1] == "error: 2000 problem(s) in sql_rules/; nothing was compiled or run"
    assert lines[0].startswith(f"{S}s0000.yml:3:12: criteria.property: unknown column 'emial' of users")
    assert table_checksums(project.settings.db_path) == checksums


def test_a_non_numeric_increase_says_what_it_got(project, capsys):
    lay_over(project, "increase_by_text")
    code, lines = run_in_process(project, capsys)
    assert "{value" not in lines[0] and "two" in lines[0], lines[0]


def test_a_python_tag_is_never_constructed(project, capsys, tmp_path):
    marker = tmp_path / "pwned"
    project.write(f"{S}tag_exec.yml", "segment: tag_exec\nentity: user\n"
                                      f"criteria: !!python/object/apply:os.system [\"touch {marker}\"]\n")  # fmt: skip
    code, lines = run_in_process(project, capsys)
    assert code == 1 and lines[0].startswith(f"{S}tag_exec.yml:3:1: criteria: expected a criterion")
    assert not marker.exists()


# ---------------------------------------------------------------- accepted by the validator, but fatal to runs

def test_a_duration_that_would_overflow_a_date_is_refused_at_its_place(tmp_path, capsys):
    """Found by this suite: `due_in: 999999w` validated, then the task executor overflowed Python's datetime.
    Durations are now bounded (100 years), so the rule is refused before any run."""
    project = Project(copy_project(tmp_path / "project", rules_from=None))
    project.write(f"{S}named.yml", "segment: named\nentity: user\ncriteria: {property: user.first_name, op: is_set}\n")
    project.write(f"{J}far_task.yml", "journey: far_task\nentity: user\nentry: {segments: [named]}\nactions:\n"
                                      "  - create_task: {title: Call, assignee: csm, due_in: 999999w}\n")  # fmt: skip
    code, lines = run_in_process(project, capsys)
    assert code == 1 and lines[0].startswith(f"{J}far_task.yml:5:") and "100 years" in lines[0], lines


class _TaskExecutorThatBreaksOnOneJourney:
    """The real task executor, except that one journey's tasks raise what no executor should (a bug in a
    plugin): the engine's guard, not the validator, must keep that from wedging every journey."""

    def __init__(self):
        from actions.task import TaskExecutor

        self.real = TaskExecutor()
        self.action_types = self.real.action_types

    def is_internal(self, action) -> bool:
        return True

    def apply(self, con, action, ctx) -> None:
        if action.journey_id == "far_task":
            raise OverflowError("date value out of range")
        self.real.apply(con, action, ctx)


def test_an_executor_bug_fails_that_action_and_never_wedges_the_internal_actions_of_every_journey(tmp_path):
    """execute.py caught only ActionFailed in the internal batch: any other exception rolled back every
    journey's internal actions, on every later run. Now that one action fails and the batch commits."""
    from actions.attributes import AttributeExecutor

    project = Project(copy_project(tmp_path / "project", rules_from=None))
    project.write(f"{S}named.yml", "segment: named\nentity: user\ncriteria: {property: user.first_name, op: is_set}\n")
    entry = "entity: user\nentry: {segments: [named], existing_members: enroll}\nactions:\n"
    project.write(f"{J}far_task.yml", f"journey: far_task\n{entry}  - create_task: {{title: Call, assignee: csm}}\n")
    project.write(f"{J}near_task.yml", f"journey: near_task\n{entry}  - create_task: {{title: Call, assignee: csm}}\n")
    project.write(f"{J}tagging.yml", f"journey: tagging\n{entry}  - set_attribute: {{name: tagged, value: 'yes'}}\n")
    project.insert_rows({"accounts": [("a1", "Acme", 1.0, 1.0, ORIGIN, None, 1, "x", "active")],
                         "users": [("u1", "a1", "u1@example.com", "Ann", None, ORIGIN, None)]})  # fmt: skip
    try:
        project.run(ORIGIN, executors=[_TaskExecutorThatBreaksOnOneJourney(), AttributeExecutor()])
    finally:
        release_dbt()
    assert project.query("select value from journey_state.attributes where name = 'tagged'") == [("yes",)]
    assert project.query("select journey_id from journey_state.tasks") == [("near_task",)]
    rows = project.query("select journey_id, status, error from journey_state.actions order by journey_id")
    assert [(j, st) for j, st, _ in rows] == [("far_task", "failed"), ("near_task", "done"), ("tagging", "done")]
    assert "OverflowError: date value out of range" in rows[0][2]

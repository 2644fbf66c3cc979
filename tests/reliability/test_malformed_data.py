"""Malformed source data through `journeys load` (SPEC §2, §7): every bad file is refused with its place and
what is expected, and the data loaded before is intact (the database file is byte-identical); the cases the
docs say are loaded (a header-only file, users of a missing account, a BOM and CRLF line ends, a NUL in a
text value) are loaded, and an orphan user builds and runs with its account read as missing.

Each case is a folder of tests/fixtures/bad_data/ (`_good/` is the data loaded first). The command is the
CLI's own entry point in-process (`journeys.cli.main`): the same code the installed script runs.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from journeys.cli import main
from tests.conftest import REPO, Project, copy_project
from tests.reliability.harness import file_digest, query, release_dbt, table_checksums

DATA = REPO / "tests" / "fixtures" / "bad_data"
T = dt.datetime(2026, 3, 2, 9, 0)
USERS = "user_id, account_id, email, first_name, last_name, created_at, last_seen_at"
EVENTS = "event_id, user_id, account_id, event_name, properties, occurred_at"

# (case, file, the rest of the message after `error: <DIR>/<file>`)
REFUSED = [
    ("missing_column", "users.csv", f": missing column 'email'; expected columns: {USERS}"),
    ("wrong_type", "accounts.csv", ":3: column 'mrr': 'lots' is not a number"),
    ("duplicate_key", "users.csv", ":4: column 'user_id': duplicate value 'u1' (also on line 2); values must be unique"),
    ("null_id", "users.csv", ":3: column 'user_id': empty value; the column must have a value"),
    ("blank_id", "users.csv", ":3: column 'user_id': empty value; the column must have a value"),
    ("unparsable_date", "users.csv", ":3: column 'created_at': '31/12/2025' is not a timestamp"),
    ("impossible_date", "accounts.csv", ":2: column 'next_billing_on': '2026-02-30' is not a date"),
    ("empty_file", "events.csv", f": no header row; the first line must name the columns: {EVENTS}"),
    ("bad_json", "events.csv", ":3: column 'properties': '{source: web' is not valid JSON"),
    ("json_not_object", "events.csv", ":2: column 'properties': '[1, 2' is not valid JSON"),
    ("integer_overflow", "accounts.csv", ":2: column 'licenses': '99999999999999999999' is not an integer"),
    ("not_utf8", "users.csv", ":2: cannot read the row: Invalid unicode (byte sequence mismatch) detected."),
    ("ragged_row", "users.csv", ":3: cannot read the row: Expected Number of Columns: 7 Found: 8"),
    ("unterminated_quote", "users.csv", ":3: cannot read the row: "),  # the row whose quote never closes
    # a good accounts.csv beside a bad users.csv: nothing of either is loaded
    ("one_bad_of_two", "users.csv", ":2: column 'created_at': 'not a date' is not a timestamp"),
    # a spreadsheet's ';'-separated export: named as such, not as a file without a header
    ("wrong_delimiter", "users.csv", ": a header with one column 'user_id;account_id;email;first_name;last_name;"
     "created_at;...': the names are separated by ';'; expected a comma-separated file with the columns: " + USERS),
]  # fmt: skip


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A project whose warehouse holds the good data; a pristine copy of the file to put back."""
    base = tmp_path_factory.mktemp("bad_data")
    project = Project(copy_project(base / "project", rules_from=None))
    project.write("sql_rules/segments/active_account_users.yml", "segment: active_account_users\nentity: user\n"
                  "criteria: {property: account.status, op: equal_to, value: active}\n")
    project.write("sql_rules/segments/no_first_report.yml",
                  "segment: no_first_report\nentity: user\ncriteria: {milestone: first_report, op: has_not_met}\n")
    project.write("sql_rules/segments/no_csm.yml",
                  "segment: no_csm\nentity: user\ncriteria: {team: csm, op: is_not_set}\n")
    project.write("sql_rules/journeys/hello.yml", "journey: hello\nentity: user\n"
                  "entry: {segments: [no_first_report], existing_members: enroll}\nactions:\n"
                  "  - set_attribute: {name: greeted, value: 'yes'}\n")  # fmt: skip
    loaded = ["loaded users: 3 rows", "loaded accounts: 2 rows", "loaded events: 2 rows"]
    assert load(project, DATA / "_good") == (0, loaded, [])
    shutil.copy(project.settings.db_path, base / "pristine.duckdb")
    return project


@pytest.fixture
def project(loaded):
    yield loaded
    release_dbt()
    pristine = loaded.settings.db_path.parents[2] / "pristine.duckdb"
    if file_digest(loaded.settings.db_path) != file_digest(pristine):
        shutil.copy(pristine, loaded.settings.db_path)


def load(project: Project, folder: Path) -> tuple[int, list[str], list[str]]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--project-dir", str(project.root), "--db", str(project.settings.db_path), "load", str(folder)])
    return code, out.getvalue().splitlines(), err.getvalue().splitlines()


@pytest.mark.parametrize(("case", "file", "message"), REFUSED,
                         ids=[c.values[0] if hasattr(c, "values") else c[0] for c in REFUSED])  # fmt: skip
def test_a_bad_source_file_is_refused_with_its_place_and_the_data_before_is_intact(project, case, file, message):
    before_file, before = file_digest(project.settings.db_path), table_checksums(project.settings.db_path)

    code, out, err = load(project, DATA / case)

    assert (code, out) == (1, [])
    assert err[0].startswith(f"error: {DATA / case / file}{message}"), err
    assert file_digest(project.settings.db_path) == before_file  # not a byte written
    assert table_checksums(project.settings.db_path) == before
    assert query(project.settings.db_path, "select name from raw.accounts order by 1") == [("Acme",), ("Globex",)]


def test_a_header_only_file_empties_its_table_and_keeps_the_others(project):
    before = table_checksums(project.settings.db_path)
    assert load(project, DATA / "header_only") == (0, ["loaded accounts: 0 rows"], [])
    after = table_checksums(project.settings.db_path)
    assert after["raw.accounts"][0] == 0
    del after["raw.accounts"], before["raw.accounts"]
    assert after == before


def test_a_bom_and_crlf_line_ends_load_clean_values(project):
    assert load(project, DATA / "bom_crlf") == (0, ["loaded users: 2 rows"], [])
    assert query(project.settings.db_path, "select user_id, email, created_at from raw.users order by 1") == [
        ("u1", "a@example.com", dt.datetime(2026, 1, 1)), ("u2", "b@example.com", dt.datetime(2026, 1, 2))]


def test_a_nul_in_a_text_value_is_kept_as_it_is(project):
    assert load(project, DATA / "nul_byte") == (0, ["loaded users: 1 rows"], [])
    assert query(project.settings.db_path, "select first_name from raw.users") == [("A\x00B",)]


def test_users_of_a_missing_account_load_and_read_their_account_as_missing(project):
    """Documented (docs/architecture.md, Missing accounts): loaded; at build every account property of such a
    user is missing, so comparisons are false and has_not_met / is_not_set are true; the run commits."""
    assert load(project, DATA / "orphan_account") == (0, ["loaded users: 2 rows"], [])
    report = project.run(T)
    members = set(project.query("select segment_id, entity_id from segment_membership"))
    assert ("active_account_users", "u1") in members and ("active_account_users", "u8") not in members
    assert {("no_first_report", "u8"), ("no_csm", "u8")} <= members
    assert report.transitions.enrolled == {"hello": 2}
    attributes = project.query("select entity_id, value from journey_state.attributes order by 1")
    assert attributes == [("u1", "yes"), ("u8", "yes")]

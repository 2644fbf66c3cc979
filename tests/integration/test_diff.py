"""`journeys diff` on a hand-made world: real runs, real dbt builds on scratch copies, expected ids by hand.

The world (T = 2026-06-15 12:00), built and run once; each test works on its own copy of the project:

    user  email                first_name  last_name   example_users (contains "@example.com")
    u1    ann@example.com      Ann         Lee         yes
    u2    bob@example.com      Bob         -           yes
    u3    carol@other.example  Carol       -           no  (yes once widened to "example")
    u4    dan@other.example    Dan         -           no  (idem)
    u5    mal@example.com      Mallory     Evil        yes, blacklisted by `welcome`
    u6    -                    Frank       -           no  (no email: never, even widened)
    u7    gina@example.com     Gina        -           yes
    u8    hal@example.com      Hal         Ng          yes

`welcome` enters example_users minus the blacklist (first_name = Mallory): u1, u2, u7, u8 (4).
Its goal (last_name is set) matches u1, u5, u8; its blacklist u5.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from journeys.errors import JourneysError, RuleError
from journeys.trust.diff import diff_rules
from journeys.trust.diff_print import print_diff
from tests.conftest import Project, copy_project

JOURNEYS = str(Path(sys.executable).with_name("journeys"))
T = dt.datetime(2026, 6, 15, 12, 0)
D = dt.datetime

ROWS = {
    "accounts": [
        # account_id, name, mrr, amount, created_at, next_billing_on, licenses, stage, status
        ("a1", "Acme", 500.0, 6000.0, D(2025, 1, 10), None, 10, "adoption", "active"),
        ("a2", "Globex", 50.0, 600.0, D(2026, 6, 1), None, 2, "onboarding", "trial"),
    ],
    "users": [
        # user_id, account_id, email, first_name, last_name, created_at, last_seen_at
        ("u1", "a1", "ann@example.com", "Ann", "Lee", D(2026, 1, 1), None),
        ("u2", "a1", "bob@example.com", "Bob", None, D(2026, 1, 1), None),
        ("u3", "a2", "carol@other.example", "Carol", None, D(2026, 1, 1), None),
        ("u4", "a2", "dan@other.example", "Dan", None, D(2026, 1, 1), None),
        ("u5", "a1", "mal@example.com", "Mallory", "Evil", D(2026, 1, 1), None),
        ("u6", "a2", None, "Frank", None, D(2026, 1, 1), None),
        ("u7", "a1", "gina@example.com", "Gina", None, D(2026, 1, 1), None),
        ("u8", "a2", "hal@example.com", "Hal", "Ng", D(2026, 1, 1), None),
    ],
}

EXAMPLE_USERS = """\
segment: example_users
entity: user
criteria: {property: user.email, op: contains, value: "@example.com"}
"""
WIDENED = EXAMPLE_USERS.replace('"@example.com"', '"example"')
BIG_ACCOUNTS = """\
segment: big_accounts
entity: account
criteria: {property: account.mrr, op: more_than, value: 100}
"""
WELCOME = """\
journey: welcome
entity: user
entry:
  segments: [example_users]
  existing_members: enroll
goal:
  criteria: {property: user.last_name, op: is_set}
exit:
  blacklist: {property: user.first_name, op: equal_to, value: Mallory}
"""
SETTINGS = "frequency_caps:\n  - {channel: email, max: 3, per: 7d}\n"
RULES = {
    "sql_rules/segments/example_users.yml": EXAMPLE_USERS,
    "sql_rules/segments/big_accounts.yml": BIG_ACCOUNTS,
    "sql_rules/journeys/welcome.yml": WELCOME,
    "journeys.yml": SETTINGS,
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The world after one committed run at T with RULES."""
    project = Project(copy_project(tmp_path_factory.mktemp("diff") / "project", rules_from=None))
    for path, text in RULES.items():
        project.write(path, text)
    project.insert_rows(ROWS)
    project.run(T)
    return project.root


@pytest.fixture
def project(base: Path, tmp_path: Path) -> Project:
    root = tmp_path / "project"
    shutil.copytree(base, root, ignore=shutil.ignore_patterns("target", "*.lock"))
    return Project(root)


def checksum(project: Project) -> str:
    digest = hashlib.sha256()
    for path in sorted(project.settings.db_path.parent.iterdir()):
        if not path.name.endswith(".lock"):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def by_id(items, attr):
    return {getattr(item, attr): item for item in items}


def test_a_run_records_its_rule_files_under_its_rules_hash(project):
    [(rules_hash, files)] = project.query(
        "select s.rules_hash, s.files from journey_state.rule_snapshots as s "
        "inner join journey_state.runs as r on r.rules_hash = s.rules_hash where r.status = 'committed'"
    )
    assert json.loads(files) == RULES  # every file under sql_rules/ and journeys.yml, as written
    assert project.query("select journey_version is not null from journey_state.enrollments") == [(True,)] * 4


def test_widening_a_segment_reports_exactly_the_added_entities(project):
    project.write("sql_rules/segments/example_users.yml", WIDENED)
    before = checksum(project)

    diff = diff_rules(project.settings, sample=10)  # against: the rules of the last run

    assert checksum(project) == before  # the live database was only copied
    assert diff.as_of == T  # default T: the last committed run's
    assert diff.against.startswith("the rules of the last run r20260615T120000")
    assert (diff.files_changed, diff.files_added, diff.files_removed) == (["sql_rules/segments/example_users.yml"], [], [])
    segments = by_id(diff.segments, "segment_id")
    members = segments["example_users"].members
    assert (segments["example_users"].status, members.before, members.after) == ("changed", 5, 7)
    assert (members.added_sample, members.removed_sample) == (["u3", "u4"], [])
    assert segments["big_accounts"].status == "unchanged"
    [welcome] = diff.journeys
    assert (welcome.status, welcome.entering.before, welcome.entering.after) == ("changed", 4, 6)
    assert (welcome.entering.added_sample, welcome.entering.removed_sample) == (["u3", "u4"], [])
    assert welcome.entering.percent == 50.0  # 2 added + 0 removed over 4
    assert not welcome.goal.changed and not welcome.exit.changed
    assert (welcome.goal.before, welcome.exit.before) == (3, 1)  # u1 u5 u8; u5


def test_samples_are_cut_at_k_and_the_rest_counted(project):
    project.write("sql_rules/segments/example_users.yml", WIDENED)
    diff = diff_rules(project.settings, sample=1)
    [welcome] = diff.journeys
    assert (welcome.entering.added, welcome.entering.added_sample) == (2, ["u3"])
    lines = []
    print_diff(diff, lines.append)
    assert "    newly entering (2): u3 and 1 more" in lines
    assert "  welcome (user): entering 4 -> 6 (+2), 50.0% of the entering set changed" in lines
    assert lines[-1] == "unchanged: 1 segment(s), 0 journey(s)"


def test_unchanged_rules_report_no_change(project):
    diff = diff_rules(project.settings)
    assert not diff.changed and not diff.files_differ
    assert [s.status for s in diff.segments] == ["unchanged", "unchanged"]
    lines = []
    print_diff(diff, lines.append)
    assert lines[1:] == ["no change: the rule files are identical"]


def test_fail_over_exits_1_above_the_threshold_and_0_at_or_under_it(project):
    project.write("sql_rules/segments/example_users.yml", WIDENED)
    base = [JOURNEYS, "--project-dir", str(project.root), "--db", str(project.settings.db_path), "diff"]
    before = checksum(project)

    over = subprocess.run([*base, "--fail-over", "40%", "--json"], capture_output=True, text=True, timeout=600, check=False)
    assert over.returncode == 1, over.stderr
    assert over.stderr.strip() == (
        "error: 1 journey(s) would change their entering set by more than 40%: welcome 50.0% (+2 -0 of 4); "
        "review the diff above, then raise --fail-over or update the rules"
    )
    report = json.loads(over.stdout)
    assert report["fail_over"] == {"percent": 40.0, "journeys": ["welcome"]}
    assert report["journeys"][0]["entering"]["added_sample"] == ["u3", "u4"]

    at = subprocess.run([*base, "--fail-over", "50"], capture_output=True, text=True, timeout=600, check=False)
    assert at.returncode == 0, at.stderr  # 50% is not more than 50%
    assert "    newly entering (2): u3, u4" in at.stdout.splitlines()
    assert checksum(project) == before


def test_against_a_git_ref_reads_the_committed_rules_and_labels_their_errors(project):
    def git(*args):
        subprocess.run(["git", "-C", str(project.root), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
                       check=True, capture_output=True)  # fmt: skip

    with pytest.raises(JourneysError, match="is not in a git repository"):
        diff_rules(project.settings, against="HEAD")
    git("init", "-q")
    git("add", "sql_rules", "journeys.yml")
    git("commit", "-q", "-m", "rules")
    git("tag", "good")
    project.write("sql_rules/journeys/broken.yml", "journey: broken\nentity: user\nentry:\n  segments: [no_such_segment]\n")
    git("add", "sql_rules")
    git("commit", "-q", "-m", "broken")
    (project.root / "sql_rules/journeys/broken.yml").unlink()  # fixed in the working tree only
    # Working tree: the blacklist moves from Mallory to Gina, the goal from "has a last name" to Ann or Gina.
    project.write("sql_rules/journeys/welcome.yml", WELCOME.replace("value: Mallory", "value: Gina").replace(
        "{property: user.last_name, op: is_set}", "{property: user.first_name, op: in, value: [Ann, Gina]}"))

    with pytest.raises(RuleError) as error:
        diff_rules(project.settings, against="HEAD")
    assert [p.path for p in error.value.problems] == ["HEAD:sql_rules/journeys/broken.yml"]
    assert str(error.value).startswith("HEAD:sql_rules/journeys/broken.yml:4:")
    with pytest.raises(JourneysError, match="unknown git ref 'nope'"):
        diff_rules(project.settings, against="nope")

    diff = diff_rules(project.settings, against="good")
    assert diff.against.startswith("the rules at git good (")
    assert diff.files_changed == ["sql_rules/journeys/welcome.yml"]
    assert [s.status for s in diff.segments] == ["unchanged", "unchanged"]
    [welcome] = diff.journeys
    assert (welcome.entering.added_sample, welcome.entering.removed_sample) == (["u5"], ["u7"])
    assert (welcome.exit.added_sample, welcome.exit.removed_sample) == (["u7"], ["u5"])
    assert welcome.entering.percent == 50.0  # (1 + 1) / 4
    assert (welcome.goal.before, welcome.goal.after) == (3, 2)
    assert (welcome.goal.added_sample, welcome.goal.removed_sample) == (["u7"], ["u5", "u8"])


def test_journeys_and_segments_added_or_removed_entirely(project):
    (project.root / "sql_rules/segments/big_accounts.yml").unlink()
    project.write("sql_rules/segments/named_g.yml", "segment: named_g\nentity: user\n"
                  "criteria: {property: user.first_name, op: contains, value: g}\n")  # fmt: skip
    project.write("sql_rules/journeys/g_journey.yml", "journey: g_journey\nentity: user\nentry:\n  segments: [named_g]\n")
    diff = diff_rules(project.settings)
    segments = by_id(diff.segments, "segment_id")
    assert (segments["big_accounts"].status, segments["big_accounts"].members.before) == ("removed", 1)  # a1
    assert (segments["named_g"].status, segments["named_g"].members.added_sample) == ("added", ["u7"])  # Gina
    journeys = by_id(diff.journeys, "journey_id")
    assert journeys["g_journey"].status == "added"
    assert (journeys["g_journey"].entering.added_sample, journeys["g_journey"].entering.percent) == (["u7"], 100.0)
    assert journeys["welcome"].status == "unchanged"
    assert [j.journey_id for j in diff.over(99.0)] == ["g_journey"]


def test_without_a_run_the_default_diff_says_to_pass_a_ref(project):
    shutil.rmtree(project.settings.db_path.parent)
    with pytest.raises(JourneysError, match=r"has no committed run to compare with; pass --against HEAD"):
        diff_rules(project.settings)
    assert not project.settings.db_path.exists()

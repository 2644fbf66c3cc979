"""`journeys test-path` follows the real engine: what it reports day by day is what real runs at the same
logical times do to the same entity on the same data, and the live database is not touched.

The live project ran once at day -1 (T0 - 1d), before anybody was in the entry segment; the data was
then loaded as it is now. `reference` is a second copy of that project on which the real engine runs at
T0, T0+1d, ..., T0+5d. Expectations (branch, day) are written by hand from the fixture:

* u_pro: plan pro, a report at day 0 08:00 -> day 1: if -> then; the wait_until holds at once (the report is
  within 2d); completed on day 1.
* u_free: no plan -> day 1: if -> else, its e-mail deferred by the 1-per-2d cap (the welcome went at day 0),
  sent on day 2; no report: the wait_until reached at day 1 times out at day 4 -> on_timeout task, completed.
* u_late: plan pro, a report at day 2 12:00: it counts from the run of day 3 on -> wait_until matched on day 3.
* u_goal: plan pro, upgraded at day 2 12:00 -> the goal is reached on day 3 and ends the enrollment.
* u_comp: a competitor address -> suppressed on day 0, never enrolled.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from journeys.errors import JourneysError
from journeys.trust.test_path import simulate_path as run_test_path
from tests.conftest import Project, copy_project, days_after
from tests.reliability.harness import cli, file_digest, table_checksums

T0 = dt.datetime(2026, 3, 2, 9, 0)
DAYS = 5
USERS = ("u_pro", "u_free", "u_late", "u_goal", "u_comp")

D = days_after(T0)  # day n at 09:00


JOURNEY = """\
journey: path
entity: user
entry: {segments: [in_path]}
actions:
  - send_email: {template: hello, subject: "Hello"}
  - wait: 1d
  - if: {property: user.custom.plan, op: equal_to, value: pro}
    then: [{set_attribute: {name: branch, value: pro}}]
    else: [{send_email: {template: hello, subject: "Have a look at pro"}}]
  - wait_until:
      criteria: {event: report_created, op: performed, within: 2d}
      timeout: 3d
    then: [{set_attribute: {name: wu, value: then}}]
    on_timeout: [{create_task: {title: "Help {{ user.email }}", assignee: csm}}]
  - set_attribute: {name: finished, value: 'yes'}
goal:
  criteria: {event: upgraded, op: performed}
exit:
  blacklist: {property: user.email, op: contains, value: "@competitor.example"}
"""

# Another journey on the same segment, added after the live runs: its members are existing members.
LATE_JOURNEY = """\
journey: late_path
entity: user
entry: {segments: [in_path], existing_members: skip}
actions:
  - wait: 1d
  - set_attribute: {name: late, value: 'yes'}
"""


def rows(with_entry: bool) -> dict[str, list[tuple]]:
    def user(uid: str, email: str | None = None) -> tuple:
        return (uid, "acc1", email or f"{uid}@example.com", uid.upper(), "Tester", dt.datetime(2026, 1, 1), None)

    attributes = [("user", u, "plan", "pro") for u in ("u_pro", "u_late", "u_goal")]
    if with_entry:
        attributes += [("user", u, "path", "in") for u in USERS]
    return {
        "accounts": [("acc1", "Acme", 500.0, 6000.0, dt.datetime(2025, 1, 1), dt.date(2026, 12, 1), 10, "adoption", "active")],
        "account_team": [("acc1", "csm", "csm1@vendor.example")],
        "users": [user(u) for u in USERS[:-1]] + [user("u_comp", "spy@competitor.example")],
        "custom_attributes": attributes,
        "events": [
            ("e1", "u_pro", "acc1", "report_created", "{}", T0 - dt.timedelta(hours=1)),
            ("e2", "u_late", "acc1", "report_created", "{}", D(2) + dt.timedelta(hours=3)),
            ("e3", "u_goal", "acc1", "upgraded", "{}", D(2) + dt.timedelta(hours=3)),
        ],
    }


def make_live(root: Path) -> Project:
    project = Project(copy_project(root, rules_from=None))
    project.write("sql_rules/segments/in_path.yml",
                  "segment: in_path\nentity: user\ncriteria: {property: user.custom.path, op: equal_to, value: 'in'}\n")
    project.write("sql_rules/templates/hello.txt", "Hello {{ user.first_name }}\n")
    project.write("sql_rules/journeys/path.yml", JOURNEY)
    project.write("journeys.yml", "frequency_caps:\n  - {channel: email, max: 1, per: 2d}\n")
    project.insert_rows(rows(with_entry=False))
    project.run(D(-1))
    project.insert_rows(rows(with_entry=True))
    return project


def clone(project: Project, root: Path) -> Project:
    """An independent copy of a project folder and its database."""
    shutil.copytree(project.root, root, ignore=shutil.ignore_patterns("target", "logs"))
    return Project(root)


def entity_changes(project: Project, entity: str, before: dict | None) -> tuple[dict, list, list]:
    """The entity's transitions and ledger now, and what changed since `before` (as test-path reports them)."""
    transitions = project.query(
        "select event, to_status, reason, occurred_at from journey_state.transitions where journey_id = 'path' and entity_id = ?",
        [entity])
    actions = {r[0]: r[1:] for r in project.query(
        "select action_key, step_id, action_type, due_at, status, reason from journey_state.actions "
        "where journey_id = 'path' and entity_id = ?", [entity])}  # fmt: skip
    state = {"transitions": transitions, "actions": actions}
    old_t = list((before or {}).get("transitions", []))
    new_t = []
    for t in transitions:
        if t in old_t:
            old_t.remove(t)
        else:
            new_t.append(t)
    old_a = (before or {}).get("actions", {})
    changed = sorted((a for k, a in actions.items() if old_a.get(k) != a), key=lambda a: (a[2], a[0]))
    return state, sorted(new_t, key=lambda t: (t[3], t[0])), changed


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("test_path")
    live = make_live(base / "live")
    reference = clone(live, base / "reference")
    per_day: dict[str, list] = {u: [] for u in USERS}
    state = {u: None for u in USERS}
    for n in range(DAYS + 1):
        reference.run(D(n))
        for u in USERS:
            state[u], transitions, actions = entity_changes(reference, u, state[u])
            per_day[u].append((transitions, actions))
    return {"base": base, "live": live, "reference": per_day}


def reported(day: dict) -> tuple[list, list]:
    """A test-path day in the reference's terms."""
    events = [(e["event"], e["to_status"], e["reason"], e["at"]) for e in day["events"]]
    actions = sorted(((a["step_id"], a["action_type"], a["due_at"], a["status"], a["reason"]) for a in day["actions"]),
                     key=lambda a: (a[2], a[0]))  # fmt: skip
    return events, actions


def as_times(report: dict) -> dict:
    """--json prints times as text: read them back."""
    def parse(value):
        if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == " ":
            return dt.datetime.fromisoformat(value)
        if isinstance(value, dict):
            return {k: parse(v) for k, v in value.items()}
        if isinstance(value, list):
            return [parse(v) for v in value]
        return value

    return parse(report)


def steps(day: dict) -> list[tuple]:
    out = []
    for s in day["steps"]:
        detail = s.get("branch") or s.get("outcome") or s.get("action_type") or s.get("next_at")
        out.append((s["step_id"], s["kind"], detail))
    return out


def assert_matches_reference(timeline: list[dict], reference: list, offset: int = 0) -> None:
    """Each reported day equals what the real engine did at the same T (day `offset + n` of the reference)."""
    for day in timeline:
        assert day["as_of"] == D(offset + day["day"])
        assert reported(day) == reference[offset + day["day"]], f"day {day['day']}"


def test_cli_test_path_matches_the_engine_day_by_day_and_changes_nothing_live(world):
    live = world["live"]
    db = live.settings.db_path
    before = (file_digest(db), table_checksums(db))
    result = cli("--project-dir", str(live.root), "--db", str(db), "test-path", "path", "u_free",
                 "--as-of", D(0).isoformat(), "--days", str(DAYS), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (file_digest(db), table_checksums(db)) == before
    report = as_times(json.loads(result.stdout))
    assert len(report["timeline"]) == 5  # completed on day 4, never re-enrolled: the simulation stops there
    assert report["notes"][-1].startswith("stopped after day 4")
    assert_matches_reference(report["timeline"], world["reference"]["u_free"])
    t = report["timeline"]
    # by hand: the path u_free takes
    assert t[0]["events"][0]["event"] == "enrolled" and t[0]["entry"]["entering"] == ["in_path"]
    assert steps(t[0]) == [("1", "action", "send_email"), ("2", "wait", D(1))]
    assert steps(t[1]) == [("3", "if", "else"), ("3.else.1", "action", "send_email"), ("4", "wait_until", "waiting")]
    assert t[1]["steps"][0]["verdict"] is False
    assert t[1]["steps"][0]["criteria"] == {"test": "user.custom.plan equal_to 'pro'", "verdict": False}
    assert [(a["step_id"], a["status"]) for a in t[1]["actions"]] == [("3.else.1", "deferred")]
    assert t[1]["actions"][0]["reason"].startswith("frequency_cap")
    assert [(a["step_id"], a["status"], a["new"]) for a in t[2]["actions"]] == [("3.else.1", "done", False)]
    assert steps(t[2]) == steps(t[3]) == [("4", "wait_until", "waiting")]
    assert t[2]["steps"][0]["deadline"] == D(4)
    assert steps(t[4]) == [("4", "wait_until", "timed_out"), ("4.on_timeout.1", "action", "create_task"),
                           ("5", "action", "set_attribute")]  # fmt: skip
    assert [(e["event"], e["at"]) for e in t[4]["events"]] == [("completed", D(4))]
    assert report["end"]["status"] == "completed" and report["end"]["ended_at"] == D(4)


@pytest.mark.parametrize(
    "user, expected",
    [
        # day -> the steps walked that day (step, kind, branch/outcome/action)
        ("u_pro", {1: [("3", "if", "then"), ("3.then.1", "action", "set_attribute"), ("4", "wait_until", "matched"),
                       ("4.then.1", "action", "set_attribute"), ("5", "action", "set_attribute")]}),
        ("u_late", {1: [("3", "if", "then"), ("3.then.1", "action", "set_attribute"), ("4", "wait_until", "waiting")],
                    2: [("4", "wait_until", "waiting")],
                    3: [("4", "wait_until", "matched"), ("4.then.1", "action", "set_attribute"), ("5", "action", "set_attribute")]}),
        ("u_goal", {2: [("4", "wait_until", "waiting")], 3: []}),
        ("u_comp", {0: [], 1: []}),
    ],
)  # fmt: skip
def test_test_path_takes_the_branches_the_engine_takes(world, user, expected):
    days = 1 if user == "u_comp" else DAYS  # u_comp never enrolls: two days show it
    report = run_test_path(world["live"].settings, "path", user, days=days, as_of=D(0), echo=lambda m: None)
    assert_matches_reference(report["timeline"], world["reference"][user])
    timeline = report["timeline"]
    for day, walked in expected.items():
        assert steps(timeline[day]) == walked, f"{user} day {day}"
    if user == "u_pro":
        assert len(timeline) == 2  # completed on day 1; never re-enrolled: nothing more can happen
        assert report["end"] == {"status": "completed", "enrolled_at": D(0), "goal_achieved_at": None,
                                 "ended_at": D(1), "end_reason": "completed"}  # fmt: skip
    if user == "u_goal":
        assert [(e["event"], e["to_status"], e["reason"]) for e in timeline[3]["events"]] == [("goal_achieved", "goal_achieved", "goal")]
        assert report["end"]["status"] == "goal_achieved" and report["end"]["goal_achieved_at"] == D(3)
    if user == "u_comp":
        assert [e["event"] for e in timeline[0]["events"]] == ["suppressed"]
        assert len(timeline) == 2 and report["end"] == {"status": "never enrolled"}


def test_test_path_continues_an_active_enrollment_from_the_last_run(world, tmp_path):
    # the live project as the reference was after day 1: u_free waits on its deferred e-mail and the wait_until
    project = clone(world["live"], tmp_path / "after_day_1")
    project.run(D(0))
    project.run(D(1))
    report = run_test_path(project.settings, "path", "u_free", days=3, echo=lambda m: None)  # default T: the last run
    assert report["from"] == D(1)
    # day 0 is the run at D(1) again: nothing new, the wait_until still waits
    assert report["timeline"][0]["events"] == [] and report["timeline"][0]["actions"] == []
    assert steps(report["timeline"][0]) == [("4", "wait_until", "waiting")]
    assert_matches_reference(report["timeline"][1:], world["reference"]["u_free"], offset=1)
    assert [(a["step_id"], a["status"]) for a in report["timeline"][1]["actions"]] == [("3.else.1", "done")]
    assert steps(report["timeline"][3])[0] == ("4", "wait_until", "timed_out")


def test_an_existing_member_is_followed_from_a_simulated_entry(world, tmp_path):
    project = clone(world["live"], tmp_path / "late")
    project.run(D(0))
    project.write("sql_rules/journeys/late_path.yml", LATE_JOURNEY)
    report = run_test_path(project.settings, "late_path", "u_pro", days=1, echo=lambda m: None)
    day0, day1 = report["timeline"]
    assert "existing_members: skip" in day0["simulated_entry"]
    assert [(e["event"], e["at"]) for e in day0["events"]] == [("enrolled", D(0))]
    assert steps(day0) == [("1", "wait", D(1))]
    assert steps(day1) == [("2", "action", "set_attribute")]
    assert report["end"]["status"] == "completed"


def test_unknown_journey_entity_and_type_mismatch_are_clear_errors(world):
    live = world["live"]
    args = ("--project-dir", str(live.root), "--db", str(live.settings.db_path), "test-path")
    result = cli(*args, "nope", "u_pro")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: unknown journey 'nope'; expected one of: path"
    result = cli(*args, "path", "u_nobody")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: no user or account 'u_nobody'")
    with pytest.raises(JourneysError, match=r"^'acc1' is an account, but journey path enrolls users$"):
        run_test_path(live.settings, "path", "acc1", echo=lambda m: None)
    with pytest.raises(JourneysError, match=r"before the last committed run"):
        run_test_path(live.settings, "path", "u_pro", as_of=D(-2), echo=lambda m: None)


def test_the_text_report_names_branches_and_statuses(world):
    lines: list[str] = []
    run_test_path(world["live"].settings, "path", "u_free", days=2, as_of=D(0), echo=lines.append)
    text = "\n".join(lines)
    assert "on the current data" in text
    assert "if → else (the condition does not hold at this run)" in text
    assert "✗ user.custom.plan equal_to 'pro'" in text
    assert "send_email (due 2026-03-03 09:00) → deferred (frequency_cap" in text
    assert "wait_until: the criteria do not hold yet; checked at every run until 2026-03-06 09:00" in text

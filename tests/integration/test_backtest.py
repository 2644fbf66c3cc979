"""`journeys backtest` replays a journey faithfully: on the final data, cut at each T, it finds per day what the
real engine found when the data arrived day by day, and the live database stays byte-identical.

The live project runs at 09:00 on days 0..6, each run after that day's rows arrived (users created at 08:00,
events as they happen). After day 6 more rows arrive, dated after the window (a second report of d2a on
day 7, a user created on day 8): a backtest that did not cut the sources would see them (the raw SQL segment
`power_users` counts events with no time filter; `new_users` takes any created_at after T - 3d).

Expected by hand (journey `bt`: e-mail, wait 2d, if a report within 7d then attribute else task, wait 3d;
goal: power_users, i.e. two reports):
  day 0  the journey's first run: old1 and d0a are existing members (skip)        enrolled 0
  day 1  d1a, d1b                                                                   enrolled 2, e-mails 2
  day 2  d2a; d2comp is suppressed (competitor address)                             enrolled 1, suppressed 1
  day 3  d3a; the if of d1a (report on day 1: then) and of d1b (no report: else)   enrolled 1, attribute 1, task 1
  day 4  d4a, d4b; d2a's if -> then; d1a's second report (day 3) -> goal, exits     enrolled 2, goal 1
  day 5  d3a's if -> else                                                           task 1
  day 6  d6a; d4a's second report (day 5 10:00) -> goal; d4b's if -> else; d1b completes (day 1 + 5d)
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest

from journeys.errors import JourneysError
from journeys.trust.backtest import backtest
from journeys.trust.source_cut import cut_select
from tests.conftest import Project, copy_project, days_after
from tests.reliability.harness import cli, file_digest, table_checksums

T0 = dt.datetime(2026, 3, 2, 9, 0)
H = dt.timedelta(hours=1)
WINDOW = range(7)

D = days_after(T0)  # day n at 09:00


BT = """\
journey: bt
entity: user
entry: {segments: [new_users]}
actions:
  - send_email: {template: hi, subject: "Hi"}
  - wait: 2d
  - if: {event: report_created, op: performed, within: 7d}
    then: [{set_attribute: {name: active, value: 'yes'}}]
    else: [{create_task: {title: "Call {{ user.email }}", assignee: csm}}]
  - wait: 3d
goal:
  criteria: {segment: power_users, op: has_met}
exit:
  unenroll_from: [other]
  blacklist: {property: user.email, op: contains, value: "@competitor.example"}
"""

OTHER = """\
journey: other
entity: user
entry: {segments: [new_users], existing_members: enroll}
actions:
  - send_email: {template: hi, subject: "Other"}
"""

POWER_USERS = """\
-- entity: user
select user_id as entity_id
from {{ source('raw', 'events') }}
where event_name = 'report_created'
group by user_id
having count(*) >= 2
"""

# user -> (created at, email)
USERS = {
    "old1": D(-1) - H, "d0a": D(0) - H, "d1a": D(1) - H, "d1b": D(1) - H, "d2a": D(2) - H, "d2comp": D(2) - H,
    "d3a": D(3) - H, "d4a": D(4) - H, "d4b": D(4) - H, "d6a": D(6) - H,
    "d8a": D(8) - H,  # after the window
}  # fmt: skip
EVENTS = [
    ("d1a", D(1) + 2 * H), ("d1a", D(3) + 2 * H),
    ("d2a", D(2) + 2 * H), ("d2a", D(7) + H),  # the second one after the window
    ("d4a", D(4) + H), ("d4a", D(5) + H),
]


def rows_until(t: dt.datetime) -> dict[str, list[tuple]]:
    """The source rows that exist at t: what a warehouse loaded by then holds."""
    def email(u: str) -> str:
        return "spy@competitor.example" if u == "d2comp" else f"{u}@example.com"

    return {
        "accounts": [("acc1", "Acme", 500.0, 6000.0, dt.datetime(2025, 1, 1), dt.date(2026, 12, 1), 10, "adoption", "active")],
        "account_team": [("acc1", "csm", "csm1@vendor.example")],
        "users": [(u, "acc1", email(u), u.upper(), "Tester", created, None) for u, created in USERS.items() if created <= t],
        "events": [(f"e{n}", u, "acc1", "report_created", "{}", at) for n, (u, at) in enumerate(EVENTS) if at <= t],
    }


def live_figures(project: Project, report) -> dict:
    """What the live run at T did to journey bt, read from the live database (not from backtest's code)."""
    run_id, t = report.run_id, report.as_of
    events = dict(project.query(
        "select event, count(*) from journey_state.transitions where journey_id = 'bt' and run_id = ? group by 1", [run_id]))
    due = dict(project.query(
        "select action_type, count(*) from journey_state.actions where journey_id = 'bt' and run_id = ? group by 1", [run_id]))
    done = dict(project.query(
        "select action_type, count(*) from journey_state.actions where journey_id = 'bt' and status = 'done' "
        "and executed_at = ? group by 1", [t]))  # fmt: skip
    active = project.query("select count(*) from journey_state.enrollments where journey_id = 'bt' and status = 'active'")[0][0]
    return {
        "as_of": t, "entered": report.transitions.entered.get("bt", 0),
        **{k: events.get(k, 0) for k in ("enrolled", "suppressed", "goal_achieved", "unenrolled", "completed")},
        "active": active,
        "actions": {k: {"due": due.get(k, 0), "done": done.get(k, 0)} for k in sorted(set(due) | set(done))},
    }  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> dict:
    project = Project(copy_project(tmp_path_factory.mktemp("backtest") / "project", rules_from=None))
    project.write("sql_rules/segments/new_users.yml",
                  "segment: new_users\nentity: user\ncriteria: {property: user.created_at, op: after, value: -3d}\n")
    project.write("sql_rules/segments/power_users.sql", POWER_USERS)
    project.write("sql_rules/templates/hi.txt", "Hi {{ user.first_name }}\n")
    project.write("sql_rules/journeys/bt.yml", BT)
    project.write("sql_rules/journeys/other.yml", OTHER)
    figures = []
    for n in WINDOW:
        project.insert_rows(rows_until(D(n)))
        figures.append(live_figures(project, project.run(D(n))))
    project.insert_rows(rows_until(D(30)))  # the data as it is today, rows after the window included
    return {"project": project, "figures": figures}


def ticks_of(report: dict) -> list[dict]:
    return [{k: v for k, v in t.items() if k != "goal_rate_to_date"} for t in report["ticks"]]


def test_cli_backtest_equals_the_live_runs_day_by_day_and_changes_nothing_live(live):
    project = live["project"]
    db = project.settings.db_path
    before = (file_digest(db), table_checksums(db))
    result = cli("--project-dir", str(project.root), "--db", str(db), "backtest", "bt",
                 "--from", D(0).isoformat(), "--to", D(6).isoformat(), "--every", "1d", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (file_digest(db), table_checksums(db)) == before
    report = json.loads(result.stdout)
    expected = [{**f, "as_of": f["as_of"].isoformat(sep=" ")} for f in live["figures"]]
    assert ticks_of(report) == expected
    # by hand (the module docstring)
    assert [t["enrolled"] for t in report["ticks"]] == [0, 2, 1, 1, 2, 0, 1]
    assert [t["suppressed"] for t in report["ticks"]] == [0, 0, 1, 0, 0, 0, 0]
    assert [t["goal_achieved"] for t in report["ticks"]] == [0, 0, 0, 0, 1, 0, 1]
    assert [t["completed"] for t in report["ticks"]] == [0, 0, 0, 0, 0, 0, 1]
    assert report["ticks"][3]["actions"] == {"create_task": {"due": 1, "done": 1}, "send_email": {"due": 1, "done": 1},
                                             "set_attribute": {"due": 1, "done": 1}}  # fmt: skip
    assert report["ticks"][5]["actions"] == {"create_task": {"due": 1, "done": 1}}
    total = report["total"]
    assert (total["entered"], total["enrolled"], total["suppressed"], total["goal_achieved"], total["completed"], total["active"]) == (
        8, 7, 1, 2, 1, 4)
    assert total["goal_rate"] == round(2 / 7, 4)
    assert total["actions"]["send_email"] == {"due": 7, "done": 7, "by_status": {"done": 7}}


def test_backtest_text_report_and_a_coarser_step(live):
    lines: list[str] = []
    report = backtest(live["project"].settings, "bt", D(0), D(6), every="2d", echo=lines.append)
    # runs at days 0, 2, 4 and 6 only: day 1's entrants enter at day 2, and the ifs come at the runs after
    assert [t["as_of"] for t in report["ticks"]] == [D(0), D(2), D(4), D(6)]
    assert [t["enrolled"] for t in report["ticks"]] == [0, 3, 3, 1]
    text = "\n".join(lines)
    assert text.startswith("backtest bt: 4 run(s) from 2026-03-02 09:00 to 2026-03-08 09:00 every 2d")
    assert "\ntotal " in text and "limits: sources were cut at each T" in text


def test_backtest_errors_are_clear(live):
    project = live["project"]
    args = ("--project-dir", str(project.root), "--db", str(project.settings.db_path), "backtest")
    result = cli(*args, "nope", "--from", "2026-03-02", "--to", "2026-03-03")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: unknown journey 'nope'; expected one of: bt, other"
    with pytest.raises(JourneysError, match=r"^--every 'daily' is not a duration"):
        backtest(project.settings, "bt", D(0), D(1), every="daily", echo=lambda m: None)
    with pytest.raises(JourneysError, match=r"^--to 2026-03-01 09:00:00 is before --from"):
        backtest(project.settings, "bt", D(0), D(-1), echo=lambda m: None)
    with pytest.raises(JourneysError, match=r"at most 400"):
        backtest(project.settings, "bt", D(0), D(30), every="1h", echo=lambda m: None)


def test_the_cut_removes_later_rows_and_empties_later_facts():
    con = duckdb.connect()
    con.execute("create schema journey_state; create table journey_state.run_context (as_of timestamp)")
    con.execute("insert into journey_state.run_context values ('2026-03-02 09:00')")
    con.execute("create table subs (subscription_id varchar, created_on date, activated_on date, cancelled_on varchar)")
    con.execute("""insert into subs values ('before', '2026-03-01', '2026-03-01', '2026-03-05'),
                                           ('same_day', '2026-03-02', '2026-03-03', null),
                                           ('after', '2026-03-03', null, null),
                                           ('undated', null, null, 'not a date')""")
    rows = con.execute(cut_select("subscriptions", "subs", ["subscription_id", "created_on", "activated_on", "cancelled_on"])
                       + " order by 1").fetchall()  # fmt: skip
    # a DATE is that day at 00:00: created on 03-02 exists at 09:00; activated on 03-03 has not happened yet
    assert rows == [("before", dt.date(2026, 3, 1), dt.date(2026, 3, 1), None),
                    ("same_day", dt.date(2026, 3, 2), None, None),
                    ("undated", None, None, "not a date")]  # fmt: skip
    con.execute("create table pb (account_id varchar, playbook varchar, status varchar, enrolled_at timestamp, "
                "due_at timestamp, completed_at timestamp)")  # fmt: skip
    con.execute("""insert into pb values ('a1', 'p', 'completed', '2026-02-01', '2026-04-01', '2026-03-05'),
                                         ('a2', 'p', 'completed', '2026-02-01', null, '2026-03-01'),
                                         ('a3', 'p', 'active', '2026-03-04', null, null)""")
    columns = ["account_id", "playbook", "status", "enrolled_at", "due_at", "completed_at"]
    rows = con.execute(cut_select("playbook_enrollments", "pb", columns) + " order by 1").fetchall()
    assert [(r[0], r[2], r[5]) for r in rows] == [("a1", "active", None), ("a2", "completed", dt.datetime(2026, 3, 1))]

"""The journey language of SPEC §9 over simulated days: wait_until, wait_until_date, split, holdout,
goal.within, exit.on_leave_entry and journey_outcomes per variant and path. Expectations by hand.

Two projects, each built once for the module:

* `daily` runs at 09:00 on days 0, 2, 3, 5 and 8 (T0 = Monday 2026-03-02; no run on days 1, 4, 6, 7, so
  the runs of days 2 and 8 come late for some steps). Each journey has its own entry segment `in_<flag>`
  (users whose custom attribute <flag> is 'in'), so membership and criteria change by changing source rows.
* `ab` enrolls 10,000 users at once in a 50/30/20 split with a 10% holdout; its first run is killed in
  the middle of the transitions (the real CLI with JOURNEYS_FAULT=mid_transitions), then redone, then re-run.

Split paths and holdout variants are a stable hash, computed here by hand: the first 8 hex digits of
sha256("journey|user|<id>|<enrolled_at as %Y-%m-%dT%H:%M:%S.%f>[|holdout]") as an integer, modulo 10000,
divided by 100 is the bucket in [0, 100); the holdout takes buckets below its percent, and split paths
take consecutive ranges in the order written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project, copy_project

T0 = dt.datetime(2026, 3, 2, 9, 0)
H = dt.timedelta(hours=1)
JOURNEYS_CLI = Path(sys.executable).with_name("journeys")


def D(n: int) -> dt.datetime:  # noqa: N802 (reads like the prose: day n at 09:00)
    return T0 + dt.timedelta(days=n)


def bucket(journey: str, entity: str, enrolled_at: dt.datetime, salt: str | None = None) -> float:
    parts = [journey, "user", entity, f"{enrolled_at:%Y-%m-%dT%H:%M:%S.%f}"] + ([salt] if salt else [])
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:8], 16) % 10000 / 100


# ------------------------------------------------------------------------------------------- daily

RUN_DAYS = (0, 2, 3, 5, 8)
EVERY = set(RUN_DAYS)

JOURNEYS = {
    # wait_until reached at day 0 12:00 (after a 3h wait); deadline day 7 12:00
    "wu": """
journey: wu
entity: user
entry: {segments: [in_wu], existing_members: enroll}
actions:
  - wait: 3h
  - wait_until:
      criteria: {property: user.custom.done, op: equal_to, value: 'yes'}
      timeout: 7d
    then: [{set_attribute: {name: branch, value: then}}]
    on_timeout: [{set_attribute: {name: branch, value: timeout}}]
  - set_attribute: {name: after, value: 'yes'}
""",
    # empty branches: both continue after the step; deadline day 3 09:00
    "wu_empty": """
journey: wu_empty
entity: user
entry: {segments: [in_wue], existing_members: enroll}
actions:
  - wait_until: {criteria: {property: user.custom.done, op: equal_to, value: 'yes'}, timeout: 3d}
  - set_attribute: {name: after, value: 'yes'}
""",
    # criteria that first hold at a run whose T is exactly the deadline (day 3 09:00) take `then`
    "wu_edge": """
journey: wu_edge
entity: user
entry: {segments: [in_wux], existing_members: enroll}
actions:
  - wait_until: {criteria: {property: user.custom.done, op: equal_to, value: 'yes'}, timeout: 3d}
    then: [{set_attribute: {name: branch, value: then}}]
    on_timeout: [{set_attribute: {name: branch, value: timeout}}]
""",
    "wud_continue": """
journey: wud_continue
entity: user
entry: {segments: [in_wudc], existing_members: enroll}
actions:
  - wait_until_date: {property: user.custom.renew_on, offset: -1d, if_past: continue}
  - set_attribute: {name: after, value: 'yes'}
""",
    # a DATE column of the user's account: 2026-03-04 at 00:00 UTC, + 9h = day 2 09:00
    "wud_column": """
journey: wud_column
entity: user
entry: {segments: [in_wudk], existing_members: enroll}
actions:
  - wait_until_date: {property: account.next_billing_on, offset: +9h}
  - set_attribute: {name: after, value: 'yes'}
""",
    "wud_exit": """
journey: wud_exit
entity: user
entry: {segments: [in_wudx], existing_members: enroll}
actions:
  - wait_until_date: {property: user.custom.renew_on, offset: -1d, if_past: exit}
  - set_attribute: {name: after, value: 'yes'}
""",
    # the wait_until_date is reached at day 1 09:00, when no run happens: the run of day 2 reaches it late
    "wud_late": """
journey: wud_late
entity: user
entry: {segments: [in_wudl], existing_members: enroll}
actions:
  - wait: 1d
  - wait_until_date: {property: user.custom.renew_on, if_past: exit}
  - set_attribute: {name: after, value: 'yes'}
""",
    "exp": """
journey: exp
entity: user
entry: {segments: [in_exp], existing_members: enroll, holdout: 40%}
actions:
  - set_attribute: {name: exp_start, value: 'yes'}
  - split:
      - {name: x, percent: 50, steps: [{set_attribute: {name: exp_path, value: x}}]}
      - {name: y, percent: 50, steps: []}
  - wait: 7d
goal:
  criteria: {property: user.custom.won, op: equal_to, value: 'yes'}
exit:
  blacklist: {property: user.custom.blocked, op: equal_to, value: 'yes'}
""",
    "gw": """
journey: gw
entity: user
entry: {segments: [in_gw], existing_members: enroll}
actions:
  - wait: 7d
goal:
  criteria: {property: user.custom.won, op: equal_to, value: 'yes'}
  within: 3d
""",
    "ole": """
journey: ole
entity: user
entry: {segments: [in_ole, in_ole2], existing_members: enroll}
actions:
  - wait: 7d
exit:
  on_leave_entry: true
""",
}

FLAGS = ["wu", "wue", "wux", "wudc", "wudk", "wudx", "wudl", "exp", "gw", "ole", "ole2"]

# (user, attribute, value, days on which the source row exists)
ATTRIBUTES = [
    # wait_until: a1 matches on day 2; a2 never; a4 only on day 8, after the deadline
    ("a1", "wu", "in", EVERY), ("a1", "done", "yes", {2, 3, 5, 8}),
    ("a2", "wu", "in", EVERY),
    ("a4", "wu", "in", EVERY), ("a4", "done", "yes", {8}),
    ("e1", "wue", "in", EVERY), ("e1", "done", "yes", {2, 3, 5, 8}),
    ("e2", "wue", "in", EVERY),
    ("e3", "wue", "in", EVERY), ("e3", "done", "yes", EVERY),
    ("k1", "wux", "in", EVERY), ("k1", "done", "yes", {3, 5, 8}),
    # wait_until_date, continue: past, future (day 3 15:00 after the -1d offset), missing, not a date
    ("d1", "wudc", "in", EVERY), ("d1", "renew_on", "2026-01-15", EVERY),
    ("d2", "wudc", "in", EVERY), ("d2", "renew_on", "2026-03-06 15:00:00", EVERY),
    ("d3", "wudc", "in", EVERY),
    ("d4", "wudc", "in", EVERY), ("d4", "renew_on", "soon", EVERY),
    # d5's date moves after the wait read it: the target stays what was read (day 2 15:00)
    ("d5", "wudc", "in", EVERY), ("d5", "renew_on", "2026-03-05 15:00:00", {0}),
    ("d5", "renew_on", "2026-03-20 00:00:00", {2, 3, 5, 8}),
    ("c1", "wudk", "in", EVERY),
    # wait_until_date, exit: past, missing, future (day 1 12:00 after the offset)
    ("x1", "wudx", "in", EVERY), ("x1", "renew_on", "2026-01-15", EVERY),
    ("x2", "wudx", "in", EVERY),
    ("x3", "wudx", "in", EVERY), ("x3", "renew_on", "2026-03-04 12:00:00", EVERY),
    # reached late at day 1 09:00: a date after that moment waits for it, one before it has passed
    ("l1", "wudl", "in", EVERY), ("l1", "renew_on", "2026-03-03 18:00:00", EVERY),
    ("l2", "wudl", "in", EVERY), ("l2", "renew_on", "2026-03-03 06:00:00", EVERY),
    # exp: goals on days 2, 3 and 5; p3 blacklisted from day 3
    *(("p" + str(i), "exp", "in", EVERY) for i in range(1, 11)),
    ("p10", "won", "yes", {2, 3, 5, 8}), ("p6", "won", "yes", {2, 3, 5, 8}), ("p9", "won", "yes", {2, 3, 5, 8}),
    ("p1", "won", "yes", {3, 5, 8}), ("p4", "won", "yes", {3, 5, 8}),
    ("p2", "won", "yes", {5, 8}),
    ("p3", "blocked", "yes", {3, 5, 8}),
    # goal.within 3d: day 2 counts, day 3 (exactly 3d) counts, day 5 does not
    ("g1", "gw", "in", EVERY), ("g1", "won", "yes", {2, 3, 5, 8}),
    ("g2", "gw", "in", EVERY), ("g2", "won", "yes", {3, 5, 8}),
    ("g3", "gw", "in", EVERY), ("g3", "won", "yes", {5, 8}),
    # on_leave_entry: o1 stays; o2 keeps the second entry segment until day 3; o3 leaves before day 2
    ("o1", "ole", "in", EVERY),
    ("o2", "ole", "in", {0}), ("o2", "ole2", "in", {0, 2}),
    ("o3", "ole", "in", {0}),
]
USERS = sorted({a[0] for a in ATTRIBUTES})


def daily_rows(day: int) -> dict[str, list[tuple]]:
    return {
        # account_id, name, mrr, amount, created_at, next_billing_on, licenses, stage, status
        "accounts": [("acc1", "Acme", 500.0, 6000.0, dt.datetime(2025, 1, 1), dt.date(2026, 3, 4), 10, "adoption", "active")],
        # user_id, account_id, email, first_name, last_name, created_at, last_seen_at
        "users": [(u, "acc1", f"{u}@example.com", u.upper(), "Tester", dt.datetime(2026, 1, 1), None) for u in USERS],
        "custom_attributes": [("user", u, name, value) for u, name, value, days in ATTRIBUTES if day in days],
    }


@pytest.fixture(scope="module")
def daily(tmp_path_factory) -> dict:
    project = Project(copy_project(tmp_path_factory.mktemp("daily") / "project", rules_from=None))
    for name in FLAGS:
        project.write(f"sql_rules/segments/in_{name}.yml",
                      f"segment: in_{name}\nentity: user\ncriteria: {{property: user.custom.{name}, op: equal_to, value: 'in'}}\n")
    for jid, text in JOURNEYS.items():
        project.write(f"sql_rules/journeys/{jid}.yml", text.lstrip())
    after = {}
    for n in RUN_DAYS:
        project.insert_rows(daily_rows(n))
        project.run(D(n))
        after[n] = {"enrollments": enrollments(project), "ledger": ledger(project)}
    return {"project": project, "after": after}


def enrollments(project: Project) -> dict[tuple[str, str], tuple]:
    """(journey, user) → (status, end_reason, ended_at, goal_achieved_at, next_step_id, next_step_at).
    Decision: the tests read next_step_at only while an enrollment is active (after it ends the view
    still shows the last moment its cursor reached)."""
    rows = project.query(
        "select journey_id, entity_id, status, end_reason, ended_at, goal_achieved_at, next_step_id, next_step_at "
        "from journey_enrollments"
    )
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def ledger(project: Project) -> dict[tuple[str, str], list[tuple]]:
    """(journey, user) → [(step, action type, status, reason, due_at, executed_at)] in step order."""
    out: dict[tuple[str, str], list[tuple]] = {}
    for r in project.query(
        "select journey_id, entity_id, step_id, action_type, status, reason, due_at, executed_at "
        "from journey_actions order by journey_id, entity_id, due_at, step_id"
    ):
        out.setdefault((r[0], r[1]), []).append(tuple(r[2:]))
    return out


def done(step: str, due: dt.datetime, executed: dt.datetime, action: str = "set_attribute") -> tuple:
    return (step, action, "done", None, due, executed)


# ---- wait_until


def test_wait_until_takes_then_at_the_run_where_the_criteria_first_hold(daily):
    # a1: parked on day 0 (reached at 12:00, after T) ... matched by the run of day 2, `then` reached at that T
    assert daily["after"][0]["enrollments"]["wu", "a1"][4:] == ("2", D(0) + 3 * H)
    assert ("wu", "a1") not in daily["after"][0]["ledger"]
    assert daily["after"][2]["ledger"]["wu", "a1"] == [done("2.then.1", D(2), D(2)), done("3", D(2), D(2))]
    assert daily["after"][2]["enrollments"]["wu", "a1"][:5] == ("completed", "completed", D(2), None, None)


def test_wait_until_times_out_at_reached_plus_timeout_on_the_first_run_past_the_deadline(daily):
    # a2: still parked on day 5; the run of day 8 is the first with T >= day 7 12:00
    assert daily["after"][5]["enrollments"]["wu", "a2"] == ("active", None, None, None, "2", D(0) + 3 * H)
    assert ("wu", "a2") not in daily["after"][5]["ledger"]
    deadline = D(7) + 3 * H
    assert daily["after"][8]["ledger"]["wu", "a2"] == [done("2.on_timeout.1", deadline, D(8)), done("3", deadline, D(8))]
    assert daily["after"][8]["enrollments"]["wu", "a2"][:5] == ("completed", "completed", deadline, None, None)


def test_wait_until_on_a_late_run_after_the_deadline_times_out_even_though_the_criteria_hold_now(daily):
    deadline = D(7) + 3 * H
    assert daily["after"][8]["ledger"]["wu", "a4"] == [done("2.on_timeout.1", deadline, D(8)), done("3", deadline, D(8))]


def test_wait_until_whose_criteria_first_hold_exactly_at_the_deadline_takes_then(daily):
    assert daily["after"][2]["enrollments"]["wu_edge", "k1"][:1] == ("active",)
    assert daily["after"][3]["ledger"]["wu_edge", "k1"] == [done("1.then.1", D(3), D(3))]


def test_wait_until_with_empty_branches_continues_after_the_step(daily):
    final = daily["after"][8]["ledger"]
    assert final["wu_empty", "e1"] == [done("2", D(2), D(2))]  # matched on day 2
    assert final["wu_empty", "e2"] == [done("2", D(3), D(3))]  # timed out at day 0 + 3d, the run of day 3
    assert final["wu_empty", "e3"] == [done("2", D(0), D(0))]  # already true when reached: at once
    assert daily["after"][2]["enrollments"]["wu_empty", "e2"] == ("active", None, None, None, "1", D(0))


# ---- wait_until_date


def test_wait_until_date_past_missing_or_unparseable_continues_at_once(daily):
    day0 = daily["after"][0]["ledger"]
    for user in ("d1", "d3", "d4"):
        assert day0["wud_continue", user] == [done("2", D(0), D(0))]
        assert daily["after"][0]["enrollments"]["wud_continue", user][:5] == ("completed", "completed", D(0), None, None)


def test_wait_until_date_in_the_future_reaches_the_next_step_at_the_date_plus_offset(daily):
    # 2026-03-06 15:00 - 1d = day 3 15:00: not yet at the run of day 3, done (late) by the run of day 5
    target = D(3) + 6 * H
    assert daily["after"][3]["enrollments"]["wud_continue", "d2"] == ("active", None, None, None, "2", target)
    assert ("wud_continue", "d2") not in daily["after"][3]["ledger"]
    assert daily["after"][5]["ledger"]["wud_continue", "d2"] == [done("2", target, D(5))]
    assert daily["after"][5]["enrollments"]["wud_continue", "d2"][:5] == ("completed", "completed", target, None, None)


def test_wait_until_date_keeps_the_moment_it_read_when_the_date_changes_later(daily):
    assert daily["after"][2]["enrollments"]["wud_continue", "d5"] == ("active", None, None, None, "2", D(2) + 6 * H)
    assert daily["after"][3]["ledger"]["wud_continue", "d5"] == [done("2", D(2) + 6 * H, D(3))]


def test_wait_until_date_reads_a_date_column_of_the_account(daily):
    assert daily["after"][0]["enrollments"]["wud_column", "c1"][4:] == ("2", D(2))
    assert daily["after"][2]["ledger"]["wud_column", "c1"] == [done("2", D(2), D(2))]


def test_wait_until_date_if_past_exit_ends_the_enrollment_date_passed(daily):
    day0 = daily["after"][0]["enrollments"]
    assert day0["wud_exit", "x1"] == ("unenrolled", "date_passed", D(0), None, "1", D(0))
    assert day0["wud_exit", "x2"] == ("unenrolled", "date_passed", D(0), None, "1", D(0))  # a missing date
    final = daily["after"][8]["ledger"]
    assert ("wud_exit", "x1") not in final and ("wud_exit", "x2") not in final
    assert final["wud_exit", "x3"] == [done("2", D(1) + 3 * H, D(2))]
    transitions = daily["project"].query(
        "select entity_id, event, reason, as_of from journey_transitions where journey_id = 'wud_exit' order by all")
    assert transitions == [
        ("x1", "enrolled", None, D(0)), ("x1", "unenrolled", "date_passed", D(0)),
        ("x2", "enrolled", None, D(0)), ("x2", "unenrolled", "date_passed", D(0)),
        ("x3", "completed", "completed", D(2)), ("x3", "enrolled", None, D(0)),
    ]


def test_wait_until_date_reached_on_a_late_run_compares_the_date_with_the_moment_it_was_reached(daily):
    # reached at day 1 09:00 by the run of day 2: 18:00 that day is still ahead of it, 06:00 had passed
    day2 = daily["after"][2]
    assert day2["ledger"]["wud_late", "l1"] == [done("3", D(1) + 9 * H, D(2))]
    assert day2["enrollments"]["wud_late", "l1"][:5] == ("completed", "completed", D(1) + 9 * H, None, None)
    assert day2["enrollments"]["wud_late", "l2"] == ("unenrolled", "date_passed", D(2), None, "2", D(1))
    assert ("wud_late", "l2") not in day2["ledger"]


# ---- split and holdout (exp: 40% holdout, paths x / y at 50%)

# Buckets at enrolled_at = day 0 09:00, computed by hand: (holdout bucket, split bucket) → (variant, path)
EXP = {
    "p1": ("holdout", "y"),   # 23.36, 63.98
    "p2": ("treated", "y"),   # 44.16, 90.33
    "p3": ("holdout", "y"),   # 30.11, 97.11
    "p4": ("treated", "x"),   # 99.46, 3.29
    "p5": ("treated", "y"),   # 64.15, 56.76
    "p6": ("treated", "x"),   # 84.14, 39.67
    "p7": ("treated", "y"),   # 92.44, 53.72
    "p8": ("holdout", "y"),   # 22.32, 79.07
    "p9": ("treated", "x"),   # 59.39, 46.25
    "p10": ("holdout", "x"),  # 29.71, 15.65
}


def test_variants_and_paths_are_the_hand_computed_buckets(daily):
    for user, (variant, path) in EXP.items():
        assert (bucket("exp", user, D(0), "holdout") < 40, bucket("exp", user, D(0)) < 50) == (variant == "holdout", path == "x")
    rows = daily["project"].query("select entity_id, variant, split_path from journey_enrollments where journey_id = 'exp'")
    assert {r[0]: (r[1], r[2]) for r in rows} == EXP


def test_holdout_walks_the_program_with_every_action_skipped_and_treated_runs_them(daily):
    final = daily["after"][8]["ledger"]
    skipped = lambda step: (step, "set_attribute", "skipped", "holdout", D(0), None)  # noqa: E731
    assert final["exp", "p10"] == [skipped("1"), skipped("2.x.1")]  # holdout, path x
    assert final["exp", "p8"] == [skipped("1")]  # holdout, path y (no steps)
    assert final["exp", "p4"] == [done("1", D(0), D(0)), done("2.x.1", D(0), D(0))]
    assert final["exp", "p5"] == [done("1", D(0), D(0))]
    written = daily["project"].query(
        "select entity_id, name, value from journey_state.attributes where name like 'exp%' order by all")
    assert written == sorted(
        [(u, "exp_start", "yes") for u, (v, _) in EXP.items() if v == "treated"]
        + [(u, "exp_path", "x") for u, (v, p) in EXP.items() if (v, p) == ("treated", "x")])


def test_holdout_enrollments_still_reach_goal_and_exit(daily):
    final = daily["after"][8]["enrollments"]
    assert final["exp", "p10"][:4] == ("goal_achieved", "goal", D(2), D(2))
    assert final["exp", "p1"][:4] == ("goal_achieved", "goal", D(3), D(3))
    assert final["exp", "p3"][:4] == ("unenrolled", "blacklist", D(3), None)
    assert final["exp", "p8"][:4] == ("completed", "completed", D(7), None)  # the wait ends at day 7 09:00


def test_journey_outcomes_per_variant_and_path_with_lift_over_holdout(daily):
    rows = daily["project"].query(
        "select variant, split_path, enrolled, active, completed, goal_achieved, unenrolled, goal_rate, "
        "median_hours_to_goal, holdout_goal_rate, lift, relative_lift "
        "from journey_outcomes where journey_id = 'exp' order by variant, split_path"
    )
    # holdout: p10 (x: goal day 2), p1 (y: goal day 3), p3 (y: blacklisted), p8 (y: completed) → 2/4 = 0.5
    # treated x: p4 (goal day 3), p6, p9 (goal day 2) → 3/3; treated y: p2 (goal day 5), p5, p7 → 1/3
    third = 1 / 3
    expected = [
        ("holdout", "x", 1, 0, 0, 1, 0, 1.0, 48.0, 0.5, None, None),
        ("holdout", "y", 3, 0, 1, 1, 1, third, 72.0, 0.5, None, None),
        ("treated", "x", 3, 0, 0, 3, 0, 1.0, 48.0, 0.5, 0.5, 1.0),
        ("treated", "y", 3, 0, 2, 1, 0, third, 120.0, 0.5, third - 0.5, third / 0.5 - 1),
    ]
    assert [r[:7] for r in rows] == [e[:7] for e in expected]
    for row, want in zip(rows, expected):
        assert row[7:10] == pytest.approx(want[7:10])
        assert row[10:] == ((None, None) if want[10] is None else pytest.approx(want[10:]))
    # a journey without holdout or split: one row, nothing to compare with
    gw = daily["project"].query(
        "select variant, split_path, enrolled, goal_achieved, holdout_goal_rate, lift from journey_outcomes where journey_id = 'gw'")
    assert gw == [("treated", None, 3, 2, None, None)]


# ---- goal.within and exit.on_leave_entry


def test_goal_within_counts_up_to_the_window_and_not_after(daily):
    final = daily["after"][8]["enrollments"]
    assert final["gw", "g1"][:4] == ("goal_achieved", "goal", D(2), D(2))
    assert final["gw", "g2"][:4] == ("goal_achieved", "goal", D(3), D(3))  # exactly enrolled + 3d
    assert daily["after"][5]["enrollments"]["gw", "g3"][:4] == ("active", None, None, None)  # day 5: too late
    assert final["gw", "g3"][:4] == ("completed", "completed", D(7), None)


def test_on_leave_entry_ends_the_enrollment_once_in_none_of_the_entry_segments(daily):
    after = daily["after"]
    assert after[2]["enrollments"]["ole", "o3"][:3] == ("unenrolled", "left_entry", D(2))
    assert after[2]["enrollments"]["ole", "o2"][:1] == ("active",)  # still in in_ole2
    assert after[3]["enrollments"]["ole", "o2"][:3] == ("unenrolled", "left_entry", D(3))
    assert after[8]["enrollments"]["ole", "o1"][:3] == ("completed", "completed", D(7))


# ------------------------------------------------------------------------------------------- ab

AB = """
journey: ab
entity: user
entry: {segments: [big], existing_members: enroll, holdout: 10%}
actions:
  - split:
      - {name: a, percent: 50, steps: []}
      - {name: b, percent: 30, steps: []}
      - {name: c, percent: 20, steps: []}
  - wait: 30d
"""
N = 10_000


def expected_ab(user: str) -> tuple[str, str]:
    variant = "holdout" if bucket("ab", user, T0, "holdout") < 10 else "treated"
    b = bucket("ab", user, T0)
    return variant, "a" if b < 50 else "b" if b < 80 else "c"


@pytest.fixture(scope="module")
def ab(tmp_path_factory) -> dict:
    project = Project(copy_project(tmp_path_factory.mktemp("ab") / "project", rules_from=None))
    project.write("sql_rules/segments/big.yml",
                  "segment: big\nentity: user\ncriteria: {property: user.email, op: contains, value: '@big.example'}\n")
    project.write("sql_rules/journeys/ab.yml", AB.lstrip())
    project.insert_rows({"accounts": [("acc1", "Acme", 1.0, 1.0, dt.datetime(2025, 1, 1), None, 1, "adoption", "active")]})
    con = project.connect()
    con.execute("insert into raw.users select 'u' || lpad(cast(i as varchar), 5, '0'), 'acc1', "
                "'u' || i || '@big.example', null, null, timestamp '2026-01-01', null from range(?) as t(i)", [N])
    con.close()

    env = {k: v for k, v in os.environ.items() if k not in ("JOURNEYS_DB", "JOURNEYS_SMTP_URL")}
    crashed = subprocess.run(
        [str(JOURNEYS_CLI), "--project-dir", str(project.root), "--db", str(project.settings.db_path),
         "run", "--as-of", "2026-03-02T09:00:00"],
        env={**env, "JOURNEYS_FAULT": "mid_transitions"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    out = {"project": project, "after_crash": assignments(project), "runs_after_crash": runs(project)}
    project.run(T0)
    out["after_redo"] = assignments(project)
    project.run(T0)
    out["after_rerun"] = assignments(project)
    return out


def assignments(project: Project) -> dict[str, tuple]:
    rows = project.query("select entity_id, variant, split_path, enrolled_at from journey_enrollments where journey_id = 'ab'")
    return {r[0]: tuple(r[1:]) for r in rows}


def runs(project: Project) -> list[tuple]:
    return project.query("select run_id, status from journey_state.runs")


def test_a_run_killed_mid_transitions_leaves_no_enrollment(ab):
    assert ab["after_crash"] == {}
    assert ab["runs_after_crash"] == [("r20260302T090000", "running")]


def test_split_paths_and_variants_equal_the_hand_computed_buckets_after_a_crash_restart(ab):
    got = ab["after_redo"]
    assert len(got) == N
    expected = {f"u{i:05d}": expected_ab(f"u{i:05d}") for i in range(N)}
    assert {u: (v, p) for u, (v, p, _) in got.items()} == expected
    assert {at for _, _, at in got.values()} == {T0}


def test_split_paths_and_variants_do_not_change_on_a_rerun_at_the_same_t(ab):
    assert ab["after_rerun"] == ab["after_redo"]


def test_shares_are_within_two_points_of_the_configured_percents(ab):
    got = ab["after_redo"].values()
    holdout = sum(1 for v, _, _ in got if v == "holdout") / N * 100
    assert 8 <= holdout <= 12
    for path, percent in (("a", 50), ("b", 30), ("c", 20)):
        share = sum(1 for _, p, _ in got if p == path) / N * 100
        assert percent - 2 <= share <= percent + 2, (path, share)
        treated = [p for v, p, _ in got if v == "treated"]
        assert percent - 2 <= treated.count(path) / len(treated) * 100 <= percent + 2, (path, "treated")

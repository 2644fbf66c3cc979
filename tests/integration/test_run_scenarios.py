"""Multi-day run scenarios (SPEC §4.1-4.3, §6): real runs over simulated days, expectations written by hand.

Two projects, each built once per module: `timeline` runs daily from day 0 to day 6 (then a re-run,
a run in the past and a dry run at day 7) with many small journeys over distinct users; `late` runs
on day 1 with the SMTP server down and then on day 5 only, for catch-up and for ending enrollments
that still have unexecuted actions. Each journey's entry segment is `in_<flag>`: users whose custom
attribute `<flag>` is 'in', so membership changes from one day to the next by changing source rows.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass, field

import pytest

from actions.attributes import AttributeExecutor
from actions.email import EmailExecutor
from actions.task import TaskExecutor
from journeys.engine.build import compile_project
from journeys.engine.state import STATE_TABLES
from journeys.errors import StateError
from tests.conftest import Project, copy_project

T0 = dt.datetime(2026, 3, 2, 9, 0)  # day 0, a Monday; every run is at 09:00


def day(n: int, hours: int = 0, minutes: int = 0) -> dt.datetime:
    return T0 + dt.timedelta(days=n, hours=hours, minutes=minutes)


ALL = range(8)


def since(n: int) -> range:
    return range(n, 8)


ACCOUNTS = [
    # account_id, name, mrr, amount, created_at, next_billing_on, licenses, stage, status
    ("acc1", "Acme", 500.0, 6000.0, dt.datetime(2025, 1, 1), dt.date(2026, 12, 1), 10, "adoption", "active"),
]
ACCOUNT_TEAM = [("acc1", "csm", "csm1@vendor.example")]


@dataclass
class World:
    """Source rows as a function of the day: custom attributes present on the listed days only."""

    attributes: list[tuple[str, str, str, range | set[int]]]  # (user, name, value, days)

    def users(self) -> list[str]:
        return sorted({a[0] for a in self.attributes})

    def rows(self, n: int) -> dict[str, list[tuple]]:
        return {
            "accounts": ACCOUNTS,
            "account_team": ACCOUNT_TEAM,
            "users": [
                (u, "acc1", f"{u}@example.com", u.upper(), "Tester", dt.datetime(2026, 1, 1), None)
                for u in self.users()
            ],
            "custom_attributes": [
                ("user", u, name, value) for u, name, value, days in self.attributes if n in days
            ],
        }


def flag(user: str, name: str, days) -> tuple[str, str, str, range | set[int]]:
    return (user, name, "in", days)


def write_segments(project: Project, flags: list[str]) -> None:
    for name in flags:
        project.write(
            f"sql_rules/segments/in_{name}.yml",
            f"segment: in_{name}\nentity: user\n"
            f"criteria: {{property: user.custom.{name}, op: equal_to, value: 'in'}}\n",
        )


def write_journey(project: Project, text: str) -> None:
    text = text.lstrip()
    journey_id = text.split("\n", 1)[0].removeprefix("journey: ").strip()
    project.write(f"sql_rules/journeys/{journey_id}.yml", text)


# Not journey state: `runs` counts attempts (a re-run at the same T is attempt 2 of the same run) and
# `run_context` holds the T of the latest dbt build, dry or not.
BOOKKEEPING = ("runs", "run_context")


def state_dump(project: Project) -> dict[str, list[tuple]]:
    """The content of every journey_state table (but the bookkeeping), in a stable order."""
    listed = (
        "select table_name from information_schema.tables where table_schema = 'journey_state' order by 1"
    )
    tables = [r[0] for r in project.query(listed)]
    assert set(STATE_TABLES) - set(BOOKKEEPING) <= set(tables)
    return {
        t: project.query(f"select * from journey_state.{t} order by all")
        for t in tables
        if t not in BOOKKEEPING
    }


@dataclass
class Day:
    report: object
    enrollments: list[tuple] = field(default_factory=list)


def snapshot_enrollments(project: Project) -> list[tuple]:
    return project.query(
        "select journey_id, entity_id, enrolled_at, status, goal_achieved_at, ended_at, end_reason, "
        "next_step_id, next_step_at "
        "from journey_enrollments order by all"
    )


def enrollments(rows: list[tuple], journey: str) -> list[tuple]:
    """(entity, enrolled_at, status, end_reason, ended_at) of one journey."""
    return sorted((r[1], r[2], r[3], r[6], r[5]) for r in rows if r[0] == journey)


def ledger(project: Project, journey: str, entity: str | None = None) -> list[tuple]:
    """(entity, step, action type, due_at, executed_at, status) in due order."""
    rows = project.query(
        "select entity_id, step_id, action_type, due_at, executed_at, status from journey_actions "
        "where journey_id = ? order by entity_id, due_at, step_id",
        [journey],
    )
    return [r for r in rows if entity is None or r[0] == entity]


def executed_steps(project: Project, journey: str, entity: str, on: dt.datetime) -> list[str]:
    """Step ids of one enrollment's actions executed by the run at `on`, in due order."""
    rows = project.query(
        "select step_id from journey_actions "
        "where journey_id = ? and entity_id = ? and executed_at = ? and status = 'done' "
        "order by due_at, step_id",
        [journey, entity, on],
    )
    return [r[0] for r in rows]


def attributes(project: Project, entity: str) -> dict[str, str | None]:
    return dict(
        project.query(
            "select name, value from journey_state.attributes where entity_id = ? order by name", [entity]
        )
    )


# Within one run, transitions happen in §4.1 order: entry, exits, goal, actions.
EVENT_ORDER = {"suppressed": 0, "enrolled": 0, "unenrolled": 1, "goal_achieved": 2, "completed": 3}


def transitions(project: Project, journey: str, entity: str | None = None) -> list[tuple]:
    """(entity, event, to_status, reason, as_of, has enrollment id) in run order, then §4.1 step order."""
    rows = project.query(
        "select entity_id, event, to_status, reason, as_of, enrollment_id is not null "
        "from journey_transitions "
        "where journey_id = ?",
        [journey],
    )
    rows.sort(key=lambda r: (r[4], EVENT_ORDER[r[1]], r[0]))
    return [r for r in rows if entity is None or r[0] == entity]


# ------------------------------------------------------------------------------------------ timeline

TIMELINE_FLAGS = [
    *("entry", "late", "late2", "re", "re2", "re3", "re4", "bl", "ufa", "ufb"),
    *("gx", "gc", "aw", "tk", "if", "attr", "dis", "dis2", "dry"),
]

TIMELINE_WORLD = World(
    attributes=[
        # entry: e1 is a member from day 0, leaves on day 3, is back on day 4; e2 joins on day 1
        flag("e1", "entry", {0, 1, 2, 4, 5, 6, 7}),
        flag("e2", "entry", since(1)),
        flag("l1", "late", ALL),
        flag("m1", "late2", ALL),
        # reenrollment
        flag("r1", "re", {1, 3, 4, 5, 6, 7}),
        flag("r2", "re2", {1, 3, 5, 6, 7}),
        flag("c1", "re3", {1, 4}),
        flag("c2", "re3", {1, 5}),
        flag("c3", "re3", {1, 6}),
        flag("c4", "re4", {1, 4, 5, 6, 7}),
        # blacklist
        flag("b1", "bl", since(1)),
        ("b1", "blocked", "blocked", since(1)),
        flag("b2", "bl", since(1)),
        ("b2", "blocked", "blocked", since(3)),
        # unenroll_from
        flag("x1", "ufb", since(1)),
        flag("x1", "ufa", since(2)),
        flag("x2", "ufa", since(1)),
        flag("x2", "ufb", since(2)),
        # goal
        flag("g1", "gx", since(1)),
        ("g1", "goal_done", "done", since(2)),
        flag("g2", "gc", since(1)),
        ("g2", "goal_done", "done", since(2)),
        # actions
        flag("w1", "aw", since(1)),
        flag("t1", "tk", since(1)),
        flag("i1", "if", since(1)),
        ("i1", "tier", "gold", {1}),
        ("i1", "tier", "silver", since(2)),
        ("i1", "vip", "no", since(1)),
        flag("i2", "if", since(1)),
        ("i2", "tier", "gold", since(1)),
        ("i2", "vip", "vip", since(1)),
        flag("i3", "if", since(1)),
        ("i3", "tier", "gold", since(2)),
        # attributes
        flag("s1", "attr", since(1)),
        flag("s2", "attr", since(1)),
        ("s2", "counter", "5", ALL),
        ("s2", "temp", "from_source", ALL),
        # disable / re-enable
        flag("z1", "dis", ALL),
        flag("z2", "dis", since(2)),
        flag("z3", "dis", since(3)),
        flag("y1", "dis2", since(1)),
        flag("y2", "dis2", since(3)),
        flag("y3", "dis2", since(5)),
        # dry run
        flag("q0", "dry", since(1)),
        flag("q1", "dry", {7}),
    ]
)

NO_ACTIONS = {
    "entry_skip": ("[in_entry]", "skip", "after_exit"),
    "entry_enroll": ("[in_entry]", "enroll", "never"),
    "re_cooldown": ("[in_re3]", "skip", "{cooldown: 4d}"),
}


def late_journeys(segments_enroll: str, segments_skip: str) -> list[str]:
    template = "journey: late_{0}\nentity: user\nentry: {{segments: {1}, existing_members: {0}}}\n"
    return [template.format("enroll", segments_enroll), template.format("skip", segments_skip)]


def disable_journeys(enabled: bool) -> list[str]:
    return [
        f"""
journey: dis_enroll
entity: user
enabled: {str(enabled).lower()}
entry: {{segments: [in_dis], existing_members: enroll, reenrollment: after_exit}}
actions:
  - send_email: {{template: welcome}}
  - wait: 1d
  - send_email: {{template: welcome}}
  - wait: 1d
  - send_email: {{template: welcome}}
""",
        f"""
journey: dis_skip
entity: user
enabled: {str(enabled).lower()}
entry: {{segments: [in_dis2], existing_members: skip, reenrollment: after_exit}}
actions:
  - wait: 1w
""",
    ]


TIMELINE_JOURNEYS = [
    *(
        f"journey: {j}\nentity: user\nentry: {{segments: {s}, existing_members: {m}, reenrollment: {r}}}\n"
        for j, (s, m, r) in NO_ACTIONS.items()
    ),
    *late_journeys("[in_late]", "[in_late]"),
    """
journey: re_never
entity: user
entry: {segments: [in_re], reenrollment: never}
actions:
  - wait: 1d
""",
    """
journey: re_after
entity: user
entry: {segments: [in_re2], reenrollment: after_exit}
actions:
  - wait: 3d
""",
    """
journey: re_cooldown_active
entity: user
entry: {segments: [in_re4], reenrollment: {cooldown: 2d}}
actions:
  - wait: 1w
""",
    """
journey: bl
entity: user
entry: {segments: [in_bl], reenrollment: after_exit}
actions:
  - send_email: {template: welcome}
  - wait: 1d
  - send_email: {template: welcome}
  - wait: 1d
  - send_email: {template: welcome}
exit:
  blacklist: {property: user.custom.blocked, op: equal_to, value: blocked}
""",
    """
journey: uf_a
entity: user
entry: {segments: [in_ufa]}
actions:
  - wait: 1w
exit:
  unenroll_from: [uf_b]
""",
    """
journey: uf_b
entity: user
entry: {segments: [in_ufb]}
actions:
  - wait: 1w
""",
    """
journey: goal_exit
entity: user
entry: {segments: [in_gx]}
actions:
  - send_email: {template: welcome}
  - wait: 2d
  - send_email: {template: welcome}
goal:
  criteria: {property: user.custom.goal_done, op: equal_to, value: done}
  on_goal: exit
""",
    """
journey: goal_continue
entity: user
entry: {segments: [in_gc]}
actions:
  - send_email: {template: welcome}
  - wait: 2d
  - set_attribute: {name: gc_done, value: finished}
goal:
  criteria: {property: user.custom.goal_done, op: equal_to, value: done}
  on_goal: continue
""",
    """
journey: act_waits
entity: user
entry: {segments: [in_aw]}
actions:
  - set_attribute: {name: aw_stage, value: one}
  - wait: 30m
  - send_email: {template: welcome, subject: "Hi {{ entity.first_name }}"}
  - wait: 12h
  - create_task: {title: "Follow up {{ entity.first_name }}", assignee: csm, due_in: 1d}
  - wait: 2d
  - increase_attribute: {name: aw_count, by: 1}
  - wait: 12h
""",
    """
journey: tasks
entity: user
entry: {segments: [in_tk]}
actions:
  - create_task: {title: "Call {{ entity.email }}", assignee: csm, due_in: 2d}
  - wait: 12h
  - create_task:
      title: "Escalate {{ entity.first_name }}"
      assignee: ops@vendor.example
      due_in: 30m
      notes: "MRR {{ account.mrr }}"
""",
    """
journey: act_if
entity: user
entry: {segments: [in_if]}
actions:
  - if: {property: user.custom.tier, op: equal_to, value: gold}
    then:
      - if: {property: user.custom.vip, op: equal_to, value: vip}
        then:
          - set_attribute: {name: if_path, value: gold_vip}
        else:
          - set_attribute: {name: if_path, value: gold_plain}
      - send_email: {template: welcome}
    else:
      - set_attribute: {name: if_path, value: other}
  - wait: 1d
  - if: {property: user.custom.tier, op: equal_to, value: gold}
    then:
      - set_attribute: {name: if_path2, value: gold}
    else:
      - set_attribute: {name: if_path2, value: not_gold}
  - increase_attribute: {name: if_count, by: 1}
""",
    """
journey: attr_set
entity: user
entry: {segments: [in_attr]}
actions:
  - set_attribute: {name: stage, value: started}
  - copy_attribute: {from: user.first_name, to: fname_copy}
  - increase_attribute: {name: counter, by: 1}
  - increase_attribute: {name: counter, by: 1}
  - set_attribute: {name: temp, value: x}
  - clear_attribute: {name: temp}
  - if: {property: user.custom.stage, op: equal_to, value: started}
    then:
      - set_attribute: {name: saw_same_run, value: seen}
    else:
      - set_attribute: {name: saw_same_run, value: unseen}
  - wait: 1d
  - if: {property: user.custom.stage, op: equal_to, value: started}
    then:
      - set_attribute: {name: saw_next_run, value: seen}
    else:
      - set_attribute: {name: saw_next_run, value: unseen}
""",
    """
journey: attr_follow
entity: user
entry: {segments: [stage_started]}
""",
    *disable_journeys(True),
    """
journey: dry
entity: user
entry: {segments: [in_dry]}
actions:
  - send_email: {template: welcome}
  - wait: 6d
  - send_email: {template: welcome}
""",
]

# Rule edits before a day's run.
TIMELINE_EDITS = {
    2: [*late_journeys("[in_late, in_entry, in_late2]", "[in_late, in_entry]"), *disable_journeys(False)],
    4: disable_journeys(True),
}


@dataclass
class Timeline:
    project: Project
    days: dict[int, Day]
    state_before_rerun: dict
    rerun: object
    state_after_rerun: dict
    runs_before_rerun: list[tuple]
    runs_after_rerun: list[tuple]
    dry: object
    state_after_dry: dict


def new_project(tmp_path_factory, name: str, flags: list[str]) -> Project:
    project = Project(copy_project(tmp_path_factory.mktemp(name) / "project", rules_from=None))
    project.write("sql_rules/templates/welcome.txt", "Hello {{ entity.first_name }}\n")
    write_segments(project, flags)
    return project


@pytest.fixture(scope="module")
def timeline(tmp_path_factory) -> Timeline:
    project = new_project(tmp_path_factory, "timeline", TIMELINE_FLAGS)
    project.write(
        "sql_rules/segments/stage_started.yml",
        "segment: stage_started\nentity: user\n"
        "criteria: {property: user.custom.stage, op: equal_to, value: started}\n",
    )
    for text in TIMELINE_JOURNEYS:
        write_journey(project, text)
    days = {}
    for n in range(7):
        for text in TIMELINE_EDITS.get(n, []):
            write_journey(project, text)
        project.insert_rows(TIMELINE_WORLD.rows(n))
        report = project.run(day(n))
        days[n] = Day(report, snapshot_enrollments(project))

    # Re-running day 6 with the same inputs, then a dry run at day 7 (where q1 joins in_dry).
    before = state_dump(project)
    runs_before = project.query("select run_id, as_of, status from journey_state.runs order by run_id")
    rerun = project.run(day(6))
    after = state_dump(project)
    runs_after = project.query("select run_id, as_of, status from journey_state.runs order by run_id")
    project.insert_rows(TIMELINE_WORLD.rows(7))
    dry = project.run(day(7), dry_run=True)
    return Timeline(project, days, before, rerun, after, runs_before, runs_after, dry, state_dump(project))


# ------------------------------------------------------------------------------------------ entry


def test_entity_enters_when_it_becomes_a_member_not_while_it_stays_one(timeline):
    # skip: e1 (a member on day 0) is not enrolled until it leaves (day 3) and comes back (day 4);
    # e2 joins on day 1. No actions: each enrollment completes at once, so staying a member would
    # show as a second enrollment under after_exit if the engine enrolled members rather than entrants.
    assert enrollments(timeline.days[6].enrollments, "entry_skip") == [
        ("e1", day(4), "completed", "completed", day(4)),
        ("e2", day(1), "completed", "completed", day(1)),
    ]
    entered = [timeline.days[n].report.transitions.entered.get("entry_skip", 0) for n in range(7)]
    assert entered == [0, 1, 0, 0, 1, 0, 0]


def test_existing_members_enroll_on_the_first_run_only(timeline):
    # enroll: e1, a member on day 0, is enrolled at the journey's first run; e2 when it joins.
    # e1 comes back on day 4 but reenrollment is never.
    assert enrollments(timeline.days[6].enrollments, "entry_enroll") == [
        ("e1", day(0), "completed", "completed", day(0)),
        ("e2", day(1), "completed", "completed", day(1)),
    ]
    # day 0, every journey's first run: only the `enroll` journeys take their members
    assert timeline.days[0].report.transitions.enrolled == {
        "dis_enroll": 1,
        "entry_enroll": 1,
        "late_enroll": 1,
    }


def test_segment_added_later_treats_its_current_members_as_existing_members(timeline):
    # On day 2 both journeys add in_entry (tracked by entry_* since day 0) and late_enroll adds in_late2
    # (tracked by no journey so far). For late_enroll (enroll) their current members e1, e2, m1 enroll
    # on day 2; for late_skip (skip) nobody does, and e1 enrolls only when it re-enters on day 4.
    assert enrollments(timeline.days[1].enrollments, "late_enroll") == [
        ("l1", day(0), "completed", "completed", day(0))
    ]
    assert enrollments(timeline.days[6].enrollments, "late_enroll") == [
        ("e1", day(2), "completed", "completed", day(2)),
        ("e2", day(2), "completed", "completed", day(2)),
        ("l1", day(0), "completed", "completed", day(0)),
        ("m1", day(2), "completed", "completed", day(2)),
    ]
    assert enrollments(timeline.days[6].enrollments, "late_skip") == [
        ("e1", day(4), "completed", "completed", day(4))
    ]


# ------------------------------------------------------------------------------------------ reenrollment


def test_reenrollment_never_ignores_a_second_entry(timeline):
    assert enrollments(timeline.days[6].enrollments, "re_never") == [
        ("r1", day(1), "completed", "completed", day(2))
    ]
    # r1 re-entered on day 3: it entered, but was not enrolled
    assert timeline.days[3].report.transitions.entered.get("re_never") == 1
    assert timeline.days[3].report.transitions.enrolled.get("re_never") is None


def test_reenrollment_after_exit_waits_for_the_first_enrollment_to_end(timeline):
    # r2: enrolled day 1 (wait 3d: active until day 4); re-enters on day 3 while active: not enrolled;
    # re-enters on day 5 after it completed: enrolled again.
    assert timeline.days[3].report.transitions.entered.get("re_after") == 1
    assert timeline.days[3].report.transitions.enrolled.get("re_after") is None
    assert enrollments(timeline.days[6].enrollments, "re_after") == [
        ("r2", day(1), "completed", "completed", day(4)),
        ("r2", day(5), "active", None, None),
    ]


def test_reenrollment_cooldown_needs_the_end_and_the_cooldown_since_enrollment(timeline):
    # cooldown 4d, no actions (ended at enrollment on day 1): c1 re-enters on day 4 (a day early): refused;
    # c2 on day 5 (exactly 4d): enrolled; c3 on day 6 (one day after): enrolled.
    assert enrollments(timeline.days[6].enrollments, "re_cooldown") == [
        ("c1", day(1), "completed", "completed", day(1)),
        ("c2", day(1), "completed", "completed", day(1)),
        ("c2", day(5), "completed", "completed", day(5)),
        ("c3", day(1), "completed", "completed", day(1)),
        ("c3", day(6), "completed", "completed", day(6)),
    ]
    assert timeline.days[4].report.transitions.entered.get("re_cooldown") == 1
    assert timeline.days[4].report.transitions.enrolled.get("re_cooldown") is None
    # cooldown 2d but still active (wait 1w): c4's re-entry on day 4 is refused
    assert timeline.days[4].report.transitions.entered.get("re_cooldown_active") == 1
    rows = [r for r in timeline.days[6].enrollments if r[0] == "re_cooldown_active"]
    assert [(r[1], r[2], r[3], r[7], r[8]) for r in rows] == [("c4", day(1), "active", None, day(8))]


# ------------------------------------------------------------------------------------------ exits


def test_blacklisted_at_entry_is_suppressed_not_enrolled(timeline):
    assert transitions(timeline.project, "bl", "b1") == [
        ("b1", "suppressed", None, "blacklist", day(1), False)
    ]
    assert [r for r in timeline.days[6].enrollments if r[1] == "b1"] == []
    assert timeline.days[1].report.transitions.suppressed == {"bl": 1}


def test_blacklist_later_ends_an_active_enrollment(timeline):
    assert enrollments(timeline.days[6].enrollments, "bl") == [
        ("b2", day(1), "unenrolled", "blacklist", day(3))
    ]
    # steps 1 (day 1) and 3 (day 2) ran; step 5, reached on day 3, never does
    assert ledger(timeline.project, "bl") == [
        ("b2", "1", "send_email", day(1), day(1), "done"),
        ("b2", "3", "send_email", day(2), day(2), "done"),
    ]
    assert transitions(timeline.project, "bl", "b2")[-1] == (
        "b2",
        "unenrolled",
        "unenrolled",
        "blacklist",
        day(3),
        True,
    )


def test_new_enrollment_unenrolls_from_listed_journeys_once(timeline):
    # x1: in uf_b since day 1, enrolls in uf_a on day 2 -> its uf_b enrollment ends.
    # x2: in uf_a since day 1, enrolls in uf_b on day 2 -> stays (the check is at uf_a's enrollment only).
    assert enrollments(timeline.days[6].enrollments, "uf_b") == [
        ("x1", day(1), "unenrolled", "unenrolled_by:uf_a", day(2)),
        ("x2", day(2), "active", None, None),
    ]
    assert enrollments(timeline.days[6].enrollments, "uf_a") == [
        ("x1", day(2), "active", None, None),
        ("x2", day(1), "active", None, None),
    ]


# ------------------------------------------------------------------------------------------ goal


def test_goal_with_exit_ends_the_enrollment_and_its_remaining_steps(timeline):
    rows = [r for r in timeline.days[6].enrollments if r[0] == "goal_exit"]
    # (entity, enrolled_at, status, goal_achieved_at, ended_at, end_reason)
    assert [r[1:7] for r in rows] == [("g1", day(1), "goal_achieved", day(2), day(2), "goal")]
    assert ledger(timeline.project, "goal_exit") == [("g1", "1", "send_email", day(1), day(1), "done")]


def test_goal_with_continue_is_stamped_once_and_the_journey_goes_on(timeline):
    def g2(n):
        [row] = [r for r in timeline.days[n].enrollments if r[0] == "goal_continue"]
        return row[3], row[4], row[6]  # status, goal_achieved_at, end_reason

    assert g2(1) == ("active", None, None)
    assert g2(2) == ("active", day(2), None)
    assert g2(3) == ("completed", day(2), "completed")
    assert [(r[1], r[4]) for r in transitions(timeline.project, "goal_continue")] == [
        ("enrolled", day(1)),
        ("goal_achieved", day(2)),
        ("completed", day(3)),
    ]
    assert ledger(timeline.project, "goal_continue") == [
        ("g2", "1", "send_email", day(1), day(1), "done"),
        ("g2", "3", "set_attribute", day(3), day(3), "done"),
    ]


# ------------------------------------------------------------------------------------------ actions


def test_waits_make_steps_due_at_their_reach_time(timeline):
    # enrolled day 1 09:00: step 1 at 09:00, step 3 at 09:30, step 5 at 21:30, step 7 at day 3 21:30,
    # and the end after the trailing 12h wait at day 4 09:30.
    assert ledger(timeline.project, "act_waits") == [
        ("w1", "1", "set_attribute", day(1), day(1), "done"),
        ("w1", "3", "send_email", day(1, minutes=30), day(2), "done"),
        ("w1", "5", "create_task", day(1, hours=12, minutes=30), day(2), "done"),
        ("w1", "7", "increase_attribute", day(3, hours=12, minutes=30), day(4), "done"),
    ]
    [subject] = timeline.project.query("select subject from email_outbox where journey_id = 'act_waits'")
    assert subject == ("Hi W1",)


def test_enrollment_completes_only_after_a_trailing_wait(timeline):
    def w1(n):
        [row] = [r for r in timeline.days[n].enrollments if r[0] == "act_waits"]
        return row[3], row[5], row[8]  # status, ended_at, next_step_at

    assert w1(3) == ("active", None, day(3, hours=12, minutes=30))
    assert w1(4) == ("active", None, day(4, minutes=30))  # last action done, the 12h wait not over
    assert w1(5) == ("completed", day(4, minutes=30), day(4, minutes=30))


def test_journey_without_actions_completes_at_enrollment(timeline):
    assert [(r[1], r[4]) for r in transitions(timeline.project, "entry_enroll", "e1")] == [
        ("enrolled", day(0)),
        ("completed", day(0)),
    ]
    assert ledger(timeline.project, "entry_enroll") == []
    assert timeline.days[0].report.transitions.completed.get("entry_enroll") == 1


def test_nested_if_branches_are_evaluated_when_reached(timeline):
    # i1: gold on day 1 (not vip), silver from day 2; i2: gold and vip; i3: no tier on day 1, gold from day 2.
    p = timeline.project
    assert executed_steps(p, "act_if", "i1", day(1)) == ["1.then.1.else.1", "1.then.2"]
    assert executed_steps(p, "act_if", "i2", day(1)) == ["1.then.1.then.1", "1.then.2"]
    assert executed_steps(p, "act_if", "i3", day(1)) == ["1.else.1"]
    assert executed_steps(p, "act_if", "i1", day(2)) == ["3.else.1", "4"]
    assert executed_steps(p, "act_if", "i2", day(2)) == ["3.then.1", "4"]
    assert executed_steps(p, "act_if", "i3", day(2)) == ["3.then.1", "4"]
    assert len(ledger(p, "act_if")) == 11  # nothing else recorded: no other branch, no if/wait rows
    assert {e: (attributes(p, e)["if_path"], attributes(p, e)["if_path2"]) for e in ("i1", "i2", "i3")} == {
        "i1": ("gold_plain", "not_gold"),
        "i2": ("gold_vip", "gold"),
        "i3": ("other", "gold"),
    }
    assert enrollments(timeline.days[2].enrollments, "act_if") == [
        (e, day(1), "completed", "completed", day(2)) for e in ("i1", "i2", "i3")
    ]


# ------------------------------------------------------------------------------------------ disable


def test_disabling_a_journey_ends_its_enrollments_and_stops_entry(timeline):
    # dis_enroll is disabled on days 2-3: z1 (enrolled day 0) ends on day 2 before its step 5;
    # z2 and z3 join while it is disabled and are not enrolled.
    for n in (2, 3):
        assert enrollments(timeline.days[n].enrollments, "dis_enroll") == [
            ("z1", day(0), "unenrolled", "journey_disabled", day(2))
        ]
    assert ledger(timeline.project, "dis_enroll", "z1")[:2] == [
        ("z1", "1", "send_email", day(0), day(0), "done"),
        ("z1", "3", "send_email", day(1), day(1), "done"),
    ]
    assert enrollments(timeline.days[3].enrollments, "dis_skip") == [
        ("y1", day(1), "unenrolled", "journey_disabled", day(2))
    ]


def test_reenabling_a_journey_is_a_first_run(timeline):
    # Re-enabled on day 4: with existing_members enroll, every current member enrolls (z1 again: after_exit);
    # with skip, nobody does, and y3 enrolls when it joins on day 5.
    assert enrollments(timeline.days[6].enrollments, "dis_enroll") == [
        ("z1", day(0), "unenrolled", "journey_disabled", day(2)),
        ("z1", day(4), "completed", "completed", day(6)),
        ("z2", day(4), "completed", "completed", day(6)),
        ("z3", day(4), "completed", "completed", day(6)),
    ]
    assert [(s, d, e) for _, s, _, d, e, _ in ledger(timeline.project, "dis_enroll", "z2")] == [
        ("1", day(4), day(4)),
        ("3", day(5), day(5)),
        ("5", day(6), day(6)),
    ]
    assert enrollments(timeline.days[6].enrollments, "dis_skip") == [
        ("y1", day(1), "unenrolled", "journey_disabled", day(2)),
        ("y3", day(5), "active", None, None),
    ]


# ------------------------------------------------------------------------------------------ idempotency


def test_rerunning_the_same_time_changes_nothing_and_executes_nothing(timeline):
    assert timeline.state_after_rerun == timeline.state_before_rerun
    assert timeline.runs_after_rerun == timeline.runs_before_rerun
    assert timeline.rerun.executed.done == {} and timeline.rerun.executed.failed == {}
    counts = timeline.rerun.transitions
    assert (counts.entered, counts.enrolled, counts.unenrolled, counts.goal_achieved, counts.completed) == (
        {},
        {},
        {},
        {},
        {},
    )
    assert counts.actions_recorded == 0


def test_a_time_before_the_last_committed_run_is_refused(timeline):
    before = state_dump(timeline.project)
    with pytest.raises(StateError, match="is before the last committed run"):
        timeline.project.run(day(5))
    assert state_dump(timeline.project) == before


def test_dry_run_reports_and_changes_no_journey_state(timeline):
    # day 7: q0's step 3 (after wait 6d) comes due and q1 enters `dry`.
    assert sorted(timeline.dry.would_execute) == [
        ("dry", "q0", "3", "send_email"),
        ("dry", "q1", "1", "send_email"),
    ]
    assert timeline.dry.transitions.enrolled == {"dry": 1}
    assert timeline.state_after_dry == timeline.state_after_rerun
    assert timeline.project.query("select max(as_of) from journey_state.runs") == [(day(6),)]


# ------------------------------------------------------------------------------------ attributes and tasks


def test_attribute_actions_write_journey_state(timeline):
    p = timeline.project
    common = {"stage": "started", "temp": None, "saw_same_run": "unseen", "saw_next_run": "seen"}
    assert attributes(p, "s1") == {**common, "fname_copy": "S1", "counter": "2"}  # absent counts as 0
    assert attributes(p, "s2") == {**common, "fname_copy": "S2", "counter": "7"}  # source value 5
    # a cleared attribute hides the source value of the same name
    assert p.query("select value from entity_attributes where entity_id = 's2' and name = 'temp'") == [
        (None,)
    ]


def test_attributes_are_visible_to_criteria_from_the_next_run(timeline):
    # attr_set writes stage=started on day 1; stage_started (user.custom.stage) has them from day 2 on.
    assert enrollments(timeline.days[1].enrollments, "attr_follow") == []
    assert enrollments(timeline.days[6].enrollments, "attr_follow") == [
        ("s1", day(2), "completed", "completed", day(2)),
        ("s2", day(2), "completed", "completed", day(2)),
    ]


def test_tasks_resolve_the_team_role_and_are_due_after_their_reach_time(timeline):
    rows = timeline.project.query(
        "select title, assignee, notes, due_at, created_at from journey_tasks "
        "where journey_id = 'tasks' order by created_at"
    )
    assert rows == [
        ("Call t1@example.com", "csm1@vendor.example", None, day(3), day(1)),
        ("Escalate T1", "ops@vendor.example", "MRR 500.0", day(1, hours=12, minutes=30), day(2)),
    ]
    [(assignee, due_at)] = timeline.project.query(
        "select assignee, due_at from journey_tasks where journey_id = 'act_waits'"
    )
    assert (assignee, due_at) == ("csm1@vendor.example", day(2, hours=12, minutes=30))


# ------------------------------------------------------------------------------------------ late runs

LATE_FLAGS = ["cu", "cxbl", "cxdis", "cxgoal", "cxok"]
LATE_WORLD = World(
    attributes=[
        flag("k1", "cu", {1, 5}),
        ("k1", "flip", "flipped", {5}),
        flag("k2", "cu", {1, 5}),
        ("k2", "flip", "flipped", {1}),
        flag("n1", "cxbl", {1, 5}),
        ("n1", "blocked", "blocked", {5}),
        flag("n2", "cxdis", {1, 5}),
        flag("n3", "cxgoal", {1, 5}),
        ("n3", "goal_done", "done", {5}),
        flag("n4", "cxok", {1, 5}),
    ]
)


def cancel_journey(journey_id: str, flag_name: str, extra: str = "", enabled: bool = True) -> str:
    return (
        f"journey: {journey_id}\nentity: user\nenabled: {str(enabled).lower()}\n"
        f"entry: {{segments: [in_{flag_name}], existing_members: enroll}}\n"
        f"actions:\n  - send_email: {{template: welcome}}\n  - wait: 1w\n{extra}"
    )


LATE_JOURNEYS = [
    """
journey: catchup
entity: user
entry: {segments: [in_cu], existing_members: enroll}
actions:
  - set_attribute: {name: last, value: one}
  - wait: 1d
  - set_attribute: {name: last, value: three}
  - wait: 12h
  - if: {property: user.custom.flip, op: equal_to, value: flipped}
    then:
      - set_attribute: {name: last, value: five_then}
    else:
      - set_attribute: {name: last, value: five_else}
  - wait: 1d
  - create_task: {title: "Catch up {{ entity.first_name }}", assignee: ops@vendor.example, due_in: 1d}
  - set_attribute: {name: last, value: eight}
  - wait: 1w
""",
    cancel_journey(
        "cx_bl", "cxbl", "exit:\n  blacklist: {property: user.custom.blocked, op: equal_to, value: blocked}\n"
    ),
    cancel_journey("cx_dis", "cxdis"),
    cancel_journey(
        "cx_goal",
        "cxgoal",
        "goal:\n  criteria: {property: user.custom.goal_done, op: equal_to, value: done}\n",
    ),
    cancel_journey("cx_ok", "cxok"),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def late(tmp_path_factory) -> Project:
    project = new_project(tmp_path_factory, "late", LATE_FLAGS)
    for text in LATE_JOURNEYS:
        write_journey(project, text)
    # Day 1: the SMTP server is down, so every email fails and waits for a retry.
    project.insert_rows(LATE_WORLD.rows(1))
    templates = compile_project(project.settings).rules.templates
    smtp_down = EmailExecutor(templates, f"smtp://127.0.0.1:{closed_port()}", timeout=2)
    project.run(day(1), executors=[smtp_down, TaskExecutor(), AttributeExecutor()])
    # Day 5 (days 2-4 skipped): cx_dis is disabled, n1 blacklisted, n3 reached its goal; outbox delivery.
    write_journey(project, cancel_journey("cx_dis", "cxdis", enabled=False))
    project.insert_rows(LATE_WORLD.rows(5))
    project.run(day(5))
    return project


def test_late_run_catches_up_every_step_in_order_at_its_reach_time(late):
    assert ledger(late, "catchup", "k1") == [
        ("k1", "1", "set_attribute", day(1), day(1), "done"),
        ("k1", "3", "set_attribute", day(2), day(5), "done"),
        ("k1", "5.then.1", "set_attribute", day(2, hours=12), day(5), "done"),
        ("k1", "7", "create_task", day(3, hours=12), day(5), "done"),
        ("k1", "8", "set_attribute", day(3, hours=12), day(5), "done"),
    ]
    # executed in order: the last write is step 8's
    [(value, key)] = late.query(
        "select value, action_key from journey_state.attributes where entity_id = 'k1' and name = 'last'"
    )
    assert value == "eight"
    assert late.query("select action_key from journey_actions where entity_id = 'k1' and step_id = '8'") == [
        (key,)
    ]
    assert late.query("select due_at from journey_tasks where entity_id = 'k1'") == [(day(4, hours=12),)]
    [(status, next_at)] = late.query(
        "select status, next_step_at from journey_enrollments where entity_id = 'k1'"
    )
    assert (status, next_at) == ("active", day(10, hours=12))


def test_late_run_evaluates_if_with_the_data_of_the_late_run(late):
    # k1 had no flip when enrolled but has it on day 5; k2 had it on day 1 only.
    assert [r[1] for r in ledger(late, "catchup", "k1")] == ["1", "3", "5.then.1", "7", "8"]
    assert [r[1] for r in ledger(late, "catchup", "k2")] == ["1", "3", "5.else.1", "7", "8"]


def test_ending_an_enrollment_cancels_actions_waiting_for_a_retry(late):
    rows = late.query(
        "select journey_id, entity_id, status, end_reason, ended_at from journey_enrollments "
        "where journey_id like 'cx_%' order by journey_id"
    )
    assert rows == [
        ("cx_bl", "n1", "unenrolled", "blacklist", day(5)),
        ("cx_dis", "n2", "unenrolled", "journey_disabled", day(5)),
        ("cx_goal", "n3", "goal_achieved", "goal", day(5)),
        ("cx_ok", "n4", "active", None, None),
    ]
    actions = late.query(
        "select journey_id, entity_id, step_id, status, attempts, executed_at from journey_actions "
        "where journey_id like 'cx_%' order by journey_id"
    )
    assert actions == [
        ("cx_bl", "n1", "1", "cancelled", 1, None),
        ("cx_dis", "n2", "1", "cancelled", 1, None),
        ("cx_goal", "n3", "1", "cancelled", 1, None),
        ("cx_ok", "n4", "1", "done", 2, day(5)),  # the control: retried and delivered on day 5
    ]
    assert late.query("select recipient from email_outbox") == [("n4@example.com",)]

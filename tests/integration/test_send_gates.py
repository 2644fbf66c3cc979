"""Send gates of journeys.yml (SPEC §9) against a real SMTP server on loopback: frequency caps and send
windows defer, never drop; max_sends_per_run spreads a burst in a stable order; suppressed addresses
are never mailed; every message carries List-Unsubscribe. Expectations are written by hand.

Two projects, each built once for the module, share one SMTP server:

* `gates` (cap of 2 emails per 7 days, window 09:00-17:00 in user.custom.timezone) runs at
  day 0 09:00 and 14:00 UTC, then day 3, day 6 and day 7 at 09:00 UTC (T0 = Monday 2026-03-02, before
  the US switch to summer time: New York is UTC-5, Moscow UTC+3, Kolkata UTC+5:30).
* `burst` (at most 2 emails per run) runs at 09:00 on days 0, 1 and 2.

Action and enrollment keys are sha256 over 'journey|user|<id>|<enrolled_at>[|step]'; the orders
below (which of three emails is over the cap, which of a burst goes first) were computed from them
by hand and are spelled out where they are used.

Some tests first showed bugs in journeys/engine/ledger.py (fixed since); they keep guarding them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import pytest

from tests.conftest import Project, copy_project
from tests.smtp_server import SmtpServer

T0 = dt.datetime(2026, 3, 2, 9, 0)
DAY = dt.timedelta(days=1)
R1 = T0 + dt.timedelta(hours=5)  # day 0, 14:00 UTC
UNSUBSCRIBE = "<mailto:unsubscribe@acme.example>, <https://acme.example/unsubscribe?list=journeys>"
DOMAIN = "acme.example"

EMAIL_SETTINGS = f"""\
email:
  from: journeys@acme.example
  message_id_domain: {DOMAIN}
  list_unsubscribe: "{UNSUBSCRIBE}"
"""


def key(journey: str, entity: str, enrolled_at: dt.datetime, step: str | None = None, entity_type: str = "user") -> str:
    parts = [journey, entity_type, entity, f"{enrolled_at:%Y-%m-%dT%H:%M:%S.%f}"] + ([step] if step else [])
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def user(user_id: str, email: str, account: str = "acc1") -> tuple:
    # user_id, account_id, email, first_name, last_name, created_at, last_seen_at
    return (user_id, account, email, user_id.upper(), "Tester", dt.datetime(2026, 1, 1), None)


ACCOUNTS = [
    # account_id, name, mrr, amount, created_at, next_billing_on, licenses, stage, status
    ("acc1", "Acme", 500.0, 6000.0, dt.datetime(2025, 1, 1), dt.date(2026, 12, 1), 10, "adoption", "active"),
    ("acc2", "Globex", 900.0, 9000.0, dt.datetime(2025, 1, 1), dt.date(2026, 12, 1), 5, "adoption", "active"),
]


def email_journey(journey: str, segment: str, extra: str = "") -> str:
    return (f"journey: {journey}\nentity: user\nentry: {{segments: [{segment}], existing_members: enroll}}\n"
            f"actions:\n  - send_email: {{template: note, subject: '{journey} for {{{{ user.first_name }}}}'}}\n{extra}")  # fmt: skip


def segment_on(name: str, flag: str) -> str:
    return f"segment: {name}\nentity: user\ncriteria: {{property: user.custom.{flag}, op: equal_to, value: 'in'}}\n"


def ledger(project: Project) -> dict[tuple[str, str], tuple]:
    """(journey, entity) → (status, reason, attempts, due_at, executed_at) of its one send_email. The reason
    of a `done` action is left out here (a deferral's reason stays on it; see the test of its own)."""
    rows = project.query(
        "select journey_id, entity_id, status, reason, attempts, due_at, executed_at from journey_actions "
        "where action_type = 'send_email'"
    )
    return {(r[0], r[1]): (r[2], None if r[2] == "done" else r[3], *r[4:]) for r in rows}


@dataclasses.dataclass
class World:
    project: Project
    server: SmtpServer
    after: dict[str, dict] = dataclasses.field(default_factory=dict)  # label → {"ledger", "messages"}

    def received(self, since: str | None = None, until: str | None = None) -> list[tuple[str, str]]:
        """(recipient, Message-ID) of the messages the server accepted between two runs' snapshots."""
        messages = self.server.messages()
        lo = self.after[since]["messages"] if since else 0
        hi = self.after[until]["messages"] if until else len(messages)
        return sorted((m.message["To"], m.message_id) for m in messages[lo:hi])


@pytest.fixture(scope="module")
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


def new_project(root, smtp: SmtpServer, files: dict[str, str]) -> Project:
    project = Project(copy_project(root, rules_from=None))
    for path, text in files.items():
        project.write(path, text)
    project.settings = dataclasses.replace(project.settings, smtp_url=smtp.url)
    return project


# ------------------------------------------------------------------------------ caps, window, suppression

GATES_FILES = {
    "journeys.yml": EMAIL_SETTINGS + """\
frequency_caps:
  - {channel: email, max: 2, per: 7d}
send_window:
  start: "09:00"
  end: "17:00"
  timezone_property: user.custom.timezone
  default_timezone: UTC
""",
    "sql_rules/templates/note.txt": "Hello {{ user.first_name }}\n",
    "sql_rules/segments/in_cap.yml": segment_on("in_cap", "cap"),
    "sql_rules/segments/in_win.yml": segment_on("in_win", "win"),
    "sql_rules/segments/globex.yml":
        "segment: globex\nentity: account\ncriteria: {property: account.account_id, op: equal_to, value: acc2}\n",
    # three journeys all mail f1 at enrollment
    "sql_rules/journeys/cap_a.yml": email_journey("cap_a", "in_cap"),
    "sql_rules/journeys/cap_b.yml": email_journey("cap_b", "in_cap"),
    "sql_rules/journeys/cap_c.yml": email_journey("cap_c", "in_cap"),
    "sql_rules/journeys/windowed.yml": email_journey("windowed", "in_win"),
    "sql_rules/segments/in_wingoal.yml": segment_on("in_wingoal", "wingoal"),
    "sql_rules/journeys/windowed_goal.yml": email_journey(
        "windowed_goal", "in_wingoal", "  - wait: 7d\ngoal: {criteria: {property: user.custom.won, op: equal_to, value: 'yes'}}\n"),
    "sql_rules/journeys/globex_news.yml": """\
journey: globex_news
entity: account
entry: {segments: [globex], existing_members: enroll}
actions:
  - send_email: {template: note, to: users, subject: "News for {{ account.name }}"}
""",
}


def gates_rows(label: str) -> dict[str, list[tuple]]:
    tz = {"n1": "America/New_York", "n2": "Asia/Kolkata", "n3": "Europe/Moscow", "n4": "Mars/Olympus",
          "g1": "America/New_York"}
    window_users = ["n1", "n2", "n4", "s1"] + (["n3"] if label != "r0" else [])  # n3 enters at 14:00 on day 0
    return {
        "accounts": ACCOUNTS,
        "users": [user("f1", "f1@example.com"), *(user(u, f"{u}@example.com") for u in ("n1", "n2", "n3", "n4", "g1")),
                  user("s1", "Sam@Example.com", "acc2"), user("s2", "s2@example.com", "acc2")],  # fmt: skip
        "custom_attributes": [("user", "f1", "cap", "in")]
        + [("user", u, "win", "in") for u in window_users]
        + [("user", u, "timezone", zone) for u, zone in tz.items()]
        + [("user", "g1", "wingoal", "in")] + ([("user", "g1", "won", "yes")] if label != "r0" else []),
        # email, reason, suppressed_at: matched case-insensitively with Sam@Example.com
        "email_suppressions": [("sam@EXAMPLE.com", "unsubscribed", dt.datetime(2026, 2, 1))],
    }


GATES_RUNS = [("r0", T0), ("r1", R1), ("day3", T0 + 3 * DAY), ("day6", T0 + 6 * DAY), ("day7", T0 + 7 * DAY)]


@pytest.fixture(scope="module")
def gates(tmp_path_factory, smtp) -> World:
    project = new_project(tmp_path_factory.mktemp("gates") / "project", smtp, GATES_FILES)
    world = World(project, smtp)
    for label, at in GATES_RUNS:
        project.insert_rows(gates_rows(label))
        project.run(at)
        world.after[label] = {"ledger": ledger(project), "messages": len(smtp.messages())}
    return world


def mid(journey: str, entity: str, enrolled_at: dt.datetime = T0, suffix: str = "", entity_type: str = "user") -> str:
    return f"<{key(journey, entity, enrolled_at, '1', entity_type)}{suffix}@{DOMAIN}>"


CAP_REASON = "frequency_cap: 2 email sends in 7d (max 2)"


def test_a_frequency_cap_defers_the_third_email_and_sends_it_once_when_the_window_allows(gates):
    # Due at the same moment, in enrollment order: cap_a (08271742...), cap_c (46bf254f...), cap_b (972fa1d2...).
    assert gates.received(until="r0")[:2] == [("f1@example.com", mid("cap_a", "f1")), ("f1@example.com", mid("cap_c", "f1"))]
    r0 = gates.after["r0"]["ledger"]
    assert r0["cap_a", "f1"] == ("done", None, 1, T0, T0)
    assert r0["cap_c", "f1"] == ("done", None, 1, T0, T0)
    assert r0["cap_b", "f1"] == ("deferred", CAP_REASON, 0, T0, None)
    # the two sends of day 0 09:00 count while they are within 7d before T: through day 6
    for label in ("r1", "day3", "day6"):
        assert gates.after[label]["ledger"]["cap_b", "f1"] == ("deferred", CAP_REASON, 0, T0, None)
    assert gates.after["day7"]["ledger"]["cap_b", "f1"] == ("done", None, 1, T0, T0 + 7 * DAY)
    # nothing lost, nothing twice: three messages to f1 over the five runs, one per Message-ID
    to_f1 = [m for m in gates.received() if m[0] == "f1@example.com"]
    assert to_f1 == sorted([("f1@example.com", mid(j, "f1")) for j in ("cap_a", "cap_b", "cap_c")])
    assert gates.received(since="day6", until="day7") == [("f1@example.com", mid("cap_b", "f1"))]


def test_a_done_send_no_longer_shows_the_reason_it_was_deferred(gates):
    rows = gates.project.query(
        "select journey_id, entity_id, status, reason from journey_actions where status = 'done' and reason is not null"
    )
    assert rows == []


def test_the_send_window_follows_each_users_timezone(gates):
    r0 = gates.after["r0"]["ledger"]
    # 09:00 UTC: New York 04:00 (outside), Kolkata 14:30 (inside), an unknown zone falls back to UTC 09:00 (inside)
    assert r0["windowed", "n1"] == ("deferred", "send_window", 0, T0, None)
    assert r0["windowed", "n2"] == ("done", None, 1, T0, T0)
    assert r0["windowed", "n4"] == ("done", None, 1, T0, T0)
    r1 = gates.after["r1"]["ledger"]
    # 14:00 UTC: New York 09:00 (the start is inside); n3 enters, Moscow 17:00 (the end is outside)
    assert r1["windowed", "n1"] == ("done", None, 1, T0, R1)
    assert r1["windowed", "n3"] == ("deferred", "send_window", 0, R1, None)
    # day 3 09:00 UTC: Moscow 12:00
    assert gates.after["day3"]["ledger"]["windowed", "n3"] == ("done", None, 1, R1, T0 + 3 * DAY)
    assert [m for m in gates.received(since="r0", until="r1") if m[0] != "g1@example.com"] == [
        ("n1@example.com", mid("windowed", "n1"))]
    assert gates.received(since="r1", until="day3") == [("n3@example.com", mid("windowed", "n3", R1))]


def test_a_suppressed_address_is_never_emailed(gates):
    final = gates.after["day7"]["ledger"]
    assert final["windowed", "s1"] == ("skipped", "suppressed: Sam@Example.com", 1, T0, T0)
    assert gates.after["r0"]["ledger"]["windowed", "s1"] == final["windowed", "s1"]
    # an account journey mailing its users drops the suppressed one; the numbering counts every recipient
    # (s1 = .1, s2 = .2), so a Message-ID never depends on suppressions
    assert final["globex_news", "acc2"] == ("done", None, 1, T0, T0)
    recipients = [to for to, _ in gates.received()]
    assert not any(to.lower() == "sam@example.com" for to in recipients)
    assert ("s2@example.com", mid("globex_news", "acc2", suffix=".2", entity_type="account")) in gates.received()


def test_every_message_of_the_day_went_out_once_with_list_unsubscribe_from_journeys_yml(gates):
    assert gates.received(until="r0") == sorted([
        ("f1@example.com", mid("cap_a", "f1")),
        ("f1@example.com", mid("cap_c", "f1")),
        ("n2@example.com", mid("windowed", "n2")),
        ("n4@example.com", mid("windowed", "n4")),
        ("s2@example.com", mid("globex_news", "acc2", suffix=".2", entity_type="account")),
    ])
    assert len([m for m in gates.received() if m[0] != "g1@example.com"]) == 8  # the five above, n1, n3 and cap_b
    for m in gates.server.messages():  # both projects' journeys.yml have the same email section
        assert m.message["List-Unsubscribe"] == UNSUBSCRIBE
        assert m.message["From"] == "journeys@acme.example"


def test_ending_an_enrollment_cancels_its_deferred_email(gates):
    # g1 (New York) is deferred at 09:00 UTC; at 14:00 UTC it is inside the window, but the goal ended the
    # enrollment first (transitions run before actions)
    assert gates.after["r0"]["ledger"]["windowed_goal", "g1"] == ("deferred", "send_window", 0, T0, None)
    [enrollment] = gates.project.query(
        "select status, end_reason, ended_at from journey_enrollments where journey_id = 'windowed_goal'")
    assert enrollment == ("goal_achieved", "goal", R1)
    assert gates.after["r1"]["ledger"]["windowed_goal", "g1"][0] == "cancelled"
    assert [to for to, _ in gates.received() if to == "g1@example.com"] == []


# ------------------------------------------------------------------------------ max_sends_per_run

BURST_FILES = {
    "journeys.yml": EMAIL_SETTINGS + "max_sends_per_run:\n  email: 2\n",
    "sql_rules/templates/note.txt": "Hello {{ user.first_name }}\n",
    "sql_rules/segments/in_burst.yml": segment_on("in_burst", "burst"),
    "sql_rules/journeys/burst.yml": email_journey("burst", "in_burst"),
}


def burst_rows(day: int) -> dict[str, list[tuple]]:
    members = ["b1", "b2", "b3"] + (["b4", "b5"] if day >= 1 else [])
    return {
        "accounts": ACCOUNTS,
        "users": [user(u, f"{u}@burst.example") for u in ("b1", "b2", "b3", "b4", "b5")],
        "custom_attributes": [("user", u, "burst", "in") for u in members],
    }


@pytest.fixture(scope="module")
def burst(tmp_path_factory, smtp) -> World:
    project = new_project(tmp_path_factory.mktemp("burst") / "project", smtp, BURST_FILES)
    world = World(project, smtp)
    for n in range(3):
        project.insert_rows(burst_rows(n))
        project.run(T0 + n * DAY)
        world.after[f"day{n}"] = {"ledger": ledger(project), "messages": len(smtp.messages())}
    return world


LIMIT_REASON = "max_sends_per_run: 2 email sends this run"


def test_max_sends_per_run_spreads_a_burst_over_runs_in_due_then_enrollment_order(burst):
    # enrollment ids: day 0 b1 3286ccbc..., b2 d78c6592..., b3 eb9566e8...; day 1 b5 0870acc0..., b4 e9b77cd0...
    d1 = T0 + DAY
    sent = lambda since, until: [to for to, _ in burst.received(since, until) if to.endswith("@burst.example")]  # noqa: E731
    assert sent(None, "day0") == ["b1@burst.example", "b2@burst.example"]
    # day 1: b3 (due day 0) first, then b5 before b4 (same due time, enrollment order)
    assert sent("day0", "day1") == ["b3@burst.example", "b5@burst.example"]
    assert sent("day1", "day2") == ["b4@burst.example"]
    assert burst.after["day0"]["ledger"] == {
        ("burst", "b1"): ("done", None, 1, T0, T0),
        ("burst", "b2"): ("done", None, 1, T0, T0),
        ("burst", "b3"): ("deferred", LIMIT_REASON, 0, T0, None),
    }
    assert burst.after["day1"]["ledger"] == {
        ("burst", "b1"): ("done", None, 1, T0, T0),
        ("burst", "b2"): ("done", None, 1, T0, T0),
        ("burst", "b3"): ("done", None, 1, T0, d1),
        ("burst", "b4"): ("deferred", LIMIT_REASON, 0, d1, None),
        ("burst", "b5"): ("done", None, 1, d1, d1),
    }
    assert burst.after["day2"]["ledger"][("burst", "b4")] == ("done", None, 1, d1, T0 + 2 * DAY)
    # each once, each with its own key as Message-ID
    assert sorted(message_id for to, message_id in burst.received() if to.endswith("@burst.example")) == sorted(
        [mid("burst", u) for u in ("b1", "b2", "b3")] + [mid("burst", u, d1) for u in ("b4", "b5")])

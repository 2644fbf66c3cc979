"""send_email over real SMTP (aiosmtpd on loopback): exact messages, Message-ID = action key, retries,
failures that do not block, the crash window of §4.3. Expected messages are written by hand.

The world: account a1 (Acme Corp, 2 CSMs) with users Alice and Bob. Journeys at T = 2026-06-15 09:00:
`welcome` mails each user, `csm_intro` mails the account's CSMs (one message per CSM), `kickoff`
creates a task and sets an attribute (internal actions, to show a failing email blocks nothing).
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

from tests.conftest import Project, copy_of, project_with
from tests.smtp_server import SmtpServer, smtp_server  # noqa: F401  (fixture)

T = dt.datetime(2026, 6, 15, 9, 0)
MIN = dt.timedelta(minutes=1)
D = dt.datetime
SENDER = "Journeys <journeys@acme.example>"
JOURNEYS_CLI = Path(sys.executable).parent / "journeys"

RULES = {
    "sql_rules/segments/named_users.yml":
        "segment: named_users\nentity: user\ncriteria: {property: user.first_name, op: is_set}\n",
    "sql_rules/segments/customers.yml":
        "segment: customers\nentity: account\ncriteria: {property: account.status, op: equal_to, value: active}\n",
    "sql_rules/journeys/welcome.yml": """\
journey: welcome
name: Welcome
entity: user
entry: {segments: [named_users], existing_members: enroll}
actions:
  - send_email: {template: welcome, subject: "Welcome, {{ user.first_name }}!"}
""",
    "sql_rules/journeys/csm_intro.yml": """\
journey: csm_intro
name: CSM introduction
entity: account
entry: {segments: [customers], existing_members: enroll}
actions:
  - send_email: {template: csm_intro, to: csm, subject: "New customer: {{ account.name }}"}
""",
    "sql_rules/journeys/kickoff.yml": """\
journey: kickoff
name: Kickoff
entity: account
entry: {segments: [customers], existing_members: enroll}
actions:
  - create_task: {title: "Kickoff with {{ account.name }}", assignee: csm, due_in: 2d}
  - set_attribute: {name: kickoff, value: planned}
""",
    "sql_rules/templates/welcome.txt": "Hi {{ user.first_name }},\n\nwelcome to Acme Analytics.\n",
    "sql_rules/templates/csm_intro.txt":
        "{{ account.name }} (MRR {{ account.mrr }}) is your new customer, {{ recipient }}.\n",
}

ROWS = {
    # account_id, name, mrr, amount, created_at, next_billing_on, licenses, stage, status
    "accounts": [("a1", "Acme Corp", 500.0, 6000.0, D(2026, 6, 1), None, 10, "onboarding", "active")],
    # user_id, account_id, email, first_name, last_name, created_at, last_seen_at
    "users": [
        ("u1", "a1", "alice@example.com", "Alice", "Martin", D(2026, 6, 10), None),
        ("u2", "a1", "bob@example.com", "Bob", None, D(2026, 6, 11), None),
    ],
    # member order decides the suffix: .1 = csm-a, .2 = csm-b
    "account_team": [("a1", "csm", "csm-b@vendor.example"), ("a1", "csm", "csm-a@vendor.example")],
}

# (journey, entity) → [(recipient, subject, body)], in Message-ID suffix order
EXPECTED = {
    ("welcome", "u1"): [("alice@example.com", "Welcome, Alice!", "Hi Alice,\n\nwelcome to Acme Analytics.\n")],
    ("welcome", "u2"): [("bob@example.com", "Welcome, Bob!", "Hi Bob,\n\nwelcome to Acme Analytics.\n")],
    ("csm_intro", "a1"): [
        ("csm-a@vendor.example", "New customer: Acme Corp",
         "Acme Corp (MRR 500.0) is your new customer, csm-a@vendor.example.\n"),
        ("csm-b@vendor.example", "New customer: Acme Corp",
         "Acme Corp (MRR 500.0) is your new customer, csm-b@vendor.example.\n"),
    ],
}
EMAILS = sorted(EXPECTED)  # the three send_email actions


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return project_with(tmp_path_factory.mktemp("email") / "project", RULES, ROWS).root


@pytest.fixture
def project(template: Path, tmp_path: Path, smtp_server: SmtpServer, monkeypatch) -> Project:
    monkeypatch.setenv("JOURNEYS_EMAIL_FROM", SENDER)
    monkeypatch.delenv("JOURNEYS_MESSAGE_ID_DOMAIN", raising=False)
    return copy_of(template, tmp_path / "project").use_smtp(smtp_server.url)


def ledger(project: Project) -> dict[tuple[str, str, str], dict]:
    cols = ["journey_id", "entity_id", "action_type", "status", "attempts", "error", "next_attempt_at",
            "executed_at", "action_key"]  # fmt: skip
    rows = project.query(f"select {', '.join(cols)} from journey_state.actions")
    return {(r[0], r[1], r[2]): dict(zip(cols, r)) for r in rows}


def email_rows(project: Project) -> dict[tuple[str, str], dict]:
    return {(j, e): row for (j, e, t), row in ledger(project).items() if t == "send_email"}


def expected_messages(project: Project) -> dict[str, tuple[str, str, str]]:
    """Message-ID → (recipient, subject, body), Message-IDs taken from the ledger's action keys."""
    keys = {k: row["action_key"] for k, row in email_rows(project).items()}
    out = {}
    for k, messages in EXPECTED.items():
        for n, message in enumerate(messages, start=1):
            suffix = f".{n}" if len(messages) > 1 else ""
            out[f"<{keys[k]}{suffix}@journeys.local>"] = message
    return out


def received(server: SmtpServer) -> dict[str, list[tuple[str, str, str]]]:
    """Message-ID → every copy the server accepted, as (recipient, subject, body)."""
    out: dict[str, list] = {}
    for r in server.messages():
        assert r.message["From"] == SENDER
        assert r.mail_from == "journeys@acme.example"
        assert r.rcpt_tos == (r.message["To"],)
        out.setdefault(r.message_id, []).append((r.message["To"], r.subject, r.body))
    return out


def exactly_once(project: Project) -> dict[str, list]:
    return {mid: [m] for mid, m in expected_messages(project).items()}


def snapshot(project: Project) -> dict[str, list[tuple]]:
    """Every state table an action run could duplicate or change."""
    tables = {
        "actions": "select * from journey_state.actions",
        "enrollments": "select * from journey_state.enrollments",
        "transitions": "select * from journey_state.transitions",
        "tasks": "select * from journey_state.tasks",
        "attributes": "select * from journey_state.attributes",
        "outbox": "select * from journey_state.email_outbox",
    }
    return {name: sorted(project.query(sql), key=repr) for name, sql in tables.items()}


def test_messages_arrive_once_with_the_action_key_as_message_id(project, smtp_server):
    project.run(T)

    rows = email_rows(project)
    assert set(rows) == set(EMAILS)
    for row in rows.values():
        assert (row["status"], row["attempts"], row["error"], row["executed_at"]) == ("done", 1, None, T)
    # the key is a function of content: (journey, entity type, entity id, enrolled_at, step)
    content = b"welcome|user|u1|2026-06-15T09:00:00.000000|1"
    assert rows["welcome", "u1"]["action_key"] == hashlib.sha256(content).hexdigest()[:32]
    assert received(smtp_server) == exactly_once(project)
    assert sorted(expected_messages(project)) == sorted([
        f"<{rows['welcome', 'u1']['action_key']}@journeys.local>",
        f"<{rows['welcome', 'u2']['action_key']}@journeys.local>",
        f"<{rows['csm_intro', 'a1']['action_key']}.1@journeys.local>",
        f"<{rows['csm_intro', 'a1']['action_key']}.2@journeys.local>",
    ])
    assert {r.message["Date"] for r in smtp_server.messages()} == {"Mon, 15 Jun 2026 09:00:00 +0000"}  # T, not now
    assert project.query("select count(*) from journey_state.email_outbox") == [(0,)]  # SMTP, not the outbox


def test_rerunning_the_same_t_sends_nothing(project, smtp_server):
    project.run(T)
    before = snapshot(project)

    report = project.run(T)

    assert sum(report.executed.done.values()) == 0
    assert len(smtp_server.messages()) == 4
    assert snapshot(project) == before


def test_server_down_fails_then_the_next_eligible_run_delivers_once(project, smtp_server):
    smtp_server.stop()  # connection refused

    project.run(T)

    rows = email_rows(project)
    for row in rows.values():
        state = (row["status"], row["attempts"], row["next_attempt_at"], row["executed_at"])
        assert state == ("failed", 1, T + 15 * MIN, None)
        assert f"SMTP 127.0.0.1:{smtp_server.port}: ConnectionRefusedError" in row["error"]
    internal = {k: r["status"] for k, r in ledger(project).items() if k[0] == "kickoff"}
    assert internal == {("kickoff", "a1", "create_task"): "done", ("kickoff", "a1", "set_attribute"): "done"}

    smtp_server.start()
    project.run(T + 10 * MIN)  # before next_attempt_at: no retry

    assert smtp_server.messages() == []
    assert email_rows(project) == rows

    project.run(T + 20 * MIN)

    assert received(smtp_server) == exactly_once(project)
    for row in email_rows(project).values():
        assert (row["status"], row["attempts"], row["error"], row["next_attempt_at"], row["executed_at"]) == (
            "done", 2, None, None, T + 20 * MIN)
    assert project.query("select count(*) from journey_state.tasks") == [(1,)]
    assert project.query("select count(*), max(updated_at) from journey_state.attributes") == [(1, T)]
    assert project.query("select count(*) from journey_state.enrollments") == [(4,)]


def test_451_is_retried_on_the_next_eligible_run(project, smtp_server):
    # welcome u1, welcome u2, then the first message of csm_intro: each action stops at its first refusal
    smtp_server.answer("451 4.3.0 Try again later", times=3)

    project.run(T)

    rows = email_rows(project)
    assert smtp_server.refused == 3 and smtp_server.messages() == []
    for row in rows.values():
        assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("failed", 1, T + 15 * MIN)
        assert "SMTPDataError: (451, b'4.3.0 Try again later')" in row["error"]

    project.run(T + 15 * MIN)

    assert received(smtp_server) == exactly_once(project)
    states = {(r["status"], r["attempts"], r["executed_at"]) for r in email_rows(project).values()}
    assert states == {("done", 2, T + 15 * MIN)}


def test_a_retry_after_a_partial_failure_sends_only_the_messages_not_yet_accepted(project, smtp_server):
    """Two CSMs, the second refused with a temporary 450: the retry sends `.2` only, never `.1` again."""
    smtp_server.reject_recipient("csm-b@vendor.example", "450 4.2.1 Mailbox busy")
    project.run(T)
    key = email_rows(project)["csm_intro", "a1"]["action_key"]
    assert email_rows(project)["csm_intro", "a1"]["status"] == "failed"
    assert [m for m in smtp_server.by_message_id() if key in m] == [f"<{key}.1@journeys.local>"]

    smtp_server.reject_recipient("csm-b@vendor.example", "")
    project.run(T + dt.timedelta(minutes=20))

    assert received(smtp_server) == exactly_once(project)  # .1 once, .2 once
    assert email_rows(project)["csm_intro", "a1"]["status"] == "done"


def test_550_is_a_permanent_failure(project, smtp_server):
    smtp_server.answer("550 5.7.1 Message rejected as spam", times=3)

    project.run(T)

    for row in email_rows(project).values():
        assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("failed", 5, None)  # 5xx: permanent
        assert "SMTPDataError: (550, b'5.7.1 Message rejected as spam')" in row["error"]
    assert "message 1 of 2 (0 already accepted)" in email_rows(project)["csm_intro", "a1"]["error"]

    project.run(T + dt.timedelta(days=1))

    assert smtp_server.messages() == []
    assert {r["status"] for r in email_rows(project).values()} == {"failed"}


def test_a_failing_email_blocks_neither_other_actions_nor_transitions(project, smtp_server):
    smtp_server.stop()

    report = project.run(T)

    assert dict(report.executed.failed) == {"send_email": 3}
    assert dict(report.executed.done) == {"create_task": 1, "set_attribute": 1}
    assert project.query("select title, assignee, due_at, created_at from journey_state.tasks") == [
        ("Kickoff with Acme Corp", "csm-a@vendor.example", T + dt.timedelta(days=2), T)]
    assert project.query("select entity_type, entity_id, name, value from journey_state.attributes") == [
        ("account", "a1", "kickoff", "planned")]
    assert sorted(project.query("select journey_id, entity_id, status from journey_state.enrollments")) == [
        ("csm_intro", "a1", "completed"), ("kickoff", "a1", "completed"),
        ("welcome", "u1", "completed"), ("welcome", "u2", "completed")]
    assert project.query("select status from journey_state.runs") == [("committed",)]


def crash_run(project, smtp_server, fault: str) -> None:
    env = {**os.environ, "JOURNEYS_FAULT": fault, "JOURNEYS_SMTP_URL": smtp_server.url}
    crashed = subprocess.run(
        [str(JOURNEYS_CLI), "--project-dir", str(project.root), "--db", str(project.settings.db_path),
         "run", "--as-of", "2026-06-15T09:00:00"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr


def test_crash_between_accept_and_record_resends_that_one_message_with_the_same_message_id(project, smtp_server):
    """The only duplicate §4.3 allows: the message the server accepted when the run died, before its
    delivery was recorded. The action is `sending`, so the next run sends that message again with the
    same Message-ID (receivers can drop it); every other message is sent exactly once."""
    crash_run(project, smtp_server, "after_smtp_accept")

    [(in_flight, row)] = [(k, r) for k, r in email_rows(project).items() if r["status"] == "sending"]
    assert row["attempts"] == 1
    sent_before_crash = received(smtp_server)
    assert len(sent_before_crash) == 1 and all(row["action_key"] in m for m in sent_before_crash)
    assert sorted(r["status"] for r in email_rows(project).values()) == ["pending", "pending", "sending"]
    # internal actions commit before any SMTP
    assert {r["status"] for k, r in ledger(project).items() if k[0] == "kickoff"} == {"done"}

    project.run(T)

    expected = exactly_once(project)
    for message_id in sent_before_crash:
        expected[message_id] = expected[message_id] * 2  # the allowed duplicate, same Message-ID
    assert received(smtp_server) == expected
    assert {r["status"] for r in email_rows(project).values()} == {"done"}
    assert email_rows(project)[in_flight]["attempts"] == 2
    assert project.query("select count(*) from journey_state.tasks") == [(1,)]


def test_crash_after_the_messages_were_recorded_sends_nothing_twice(project, smtp_server):
    """Dying after every message of an action was accepted and recorded, before `done`: the next run
    finds the action `sending`, sees each message delivered, and marks it done without re-sending."""
    crash_run(project, smtp_server, "after_external_delivery")
    [(in_flight, _)] = [(k, r) for k, r in email_rows(project).items() if r["status"] == "sending"]

    project.run(T)

    assert received(smtp_server) == exactly_once(project)
    assert {r["status"] for r in email_rows(project).values()} == {"done"}


def test_bad_recipient_data_fails_permanently_and_the_others_are_sent(project, smtp_server):
    project.insert_rows({**ROWS, "users": ROWS["users"] + [
        ("u3", "a1", None, "Carol", None, D(2026, 6, 12), None),  # no address
        # a line break in the subject: header injection, refused by the email library
        ("u4", "a1", "dave@example.com", "Dave\r\nBcc: victim@example.com", None, D(2026, 6, 12), None),
    ]})

    project.run(T)
    project.run(T + dt.timedelta(days=1))  # past any backoff: nothing is retried

    rows = email_rows(project)
    assert (rows["welcome", "u3"]["status"], rows["welcome", "u3"]["attempts"]) == ("failed", 5)
    assert rows["welcome", "u3"]["next_attempt_at"] is None and rows["welcome", "u4"]["next_attempt_at"] is None
    assert rows["welcome", "u3"]["error"] == "no recipient address for user 'u3' (to: the user)"
    assert (rows["welcome", "u4"]["status"], rows["welcome", "u4"]["attempts"]) == ("failed", 5)
    assert rows["welcome", "u4"]["error"].startswith("cannot build the message: Header values may not contain")
    others = {k: r["status"] for k, r in rows.items() if k[1] not in ("u3", "u4")}
    assert others == {k: "done" for k in EMAILS}
    assert received(smtp_server) == exactly_once(project)

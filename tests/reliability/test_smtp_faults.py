"""SMTP faults against real local servers (beyond tests/integration/test_email_smtp.py, which covers
refused connections, 451, 550 and partial failures): a server that never answers (bounded by the
executor's timeout), a slow server within the timeout, a reply that comes after the timeout, a mixed
batch in one run, and the backoff schedule. Every failure is `failed` with its error, retried by a later
run whose T is past next_attempt_at, and never blocks the other actions.

The world: four users whose addresses decide what the server does with their message; journey `welcome`
sends each one email, then sets an attribute (internal, must proceed whatever SMTP does).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time
from pathlib import Path

import pytest

from actions.attributes import AttributeExecutor
from actions.email import EmailExecutor
from actions.task import TaskExecutor
from journeys.rules.validate import load_and_validate
from tests.conftest import Project, copy_of, project_with
from tests.smtp_server import HOST, SmtpServer, _Handler, free_port

T = dt.datetime(2026, 6, 15, 9, 0)
MIN = dt.timedelta(minutes=1)
D = dt.datetime

RULES = {
    "sql_rules/segments/named_users.yml":
        "segment: named_users\nentity: user\ncriteria: {property: user.first_name, op: is_set}\n",
    "sql_rules/journeys/welcome.yml": """\
journey: welcome
name: Welcome
entity: user
entry: {segments: [named_users], existing_members: enroll}
actions:
  - send_email: {template: welcome, subject: "Hello {{ user.first_name }}"}
  - set_attribute: {name: welcomed, value: "yes"}
""",
    "sql_rules/templates/welcome.txt": "Hi {{ user.first_name }}.\n",
}
USERS = {"u1": "perm@example.com", "u2": "busy@example.com", "u3": "slow@example.com", "u4": "ok@example.com"}
ROWS = {
    "accounts": [("a1", "Acme", 1.0, 1.0, D(2026, 6, 1), None, 1, "onboarding", "active")],
    "users": [(u, "a1", email, u.upper(), None, D(2026, 6, 1), None) for u, email in USERS.items()],
}


class _DelayingHandler(_Handler):
    """Answers DATA after `server.delays[recipient]` seconds (accepting the message only then), or accepts
    the message at once and answers `server.stalls[recipient]` seconds later, as an MTA that queued the
    message before its reply was lost would."""

    async def handle_DATA(self, smtp, session, envelope):
        delay = max((self.server.delays.get(r, 0.0) for r in envelope.rcpt_tos), default=0.0)
        await asyncio.sleep(delay)
        reply = await super().handle_DATA(smtp, session, envelope)
        await asyncio.sleep(max((self.server.stalls.get(r, 0.0) for r in envelope.rcpt_tos), default=0.0))
        return reply


class DelayingSmtpServer(SmtpServer):
    handler = _DelayingHandler

    def __init__(self):
        super().__init__()
        self.delays: dict[str, float] = {}
        self.stalls: dict[str, float] = {}


class SilentServer:
    """Accepts TCP connections and never says a word (no greeting): only a client timeout ends it."""

    def __init__(self):
        self.port = free_port()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, self.port))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            self._held.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self._sock.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return project_with(tmp_path_factory.mktemp("smtp_faults") / "project", RULES, ROWS).root


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Project:
    return copy_of(template, tmp_path / "project")


def run(project: Project, as_of: dt.datetime, url: str, timeout: float):
    """One real run whose email executor has a short timeout (the CLI's is 10 s)."""
    templates = load_and_validate(project.root).templates
    executors = [EmailExecutor(templates, url, timeout=timeout), TaskExecutor(), AttributeExecutor()]
    return project.use_smtp(url).run(as_of, executors=executors)


def emails(project: Project) -> dict[str, tuple]:
    """entity → (status, attempts, next_attempt_at, executed_at, error)."""
    rows = project.query("select entity_id, status, attempts, next_attempt_at, executed_at, coalesce(error, '') "
                         "from journey_state.actions where action_type = 'send_email'")  # fmt: skip
    return {r[0]: r[1:] for r in rows}


def welcomed(project: Project) -> set[str]:
    return {e for (e,) in project.query("select entity_id from journey_state.attributes where name = 'welcomed'")}


def test_a_server_that_never_answers_fails_each_send_within_the_timeout_and_blocks_nothing(project):
    silent = SilentServer()
    try:
        started = time.monotonic()
        report = run(project, T, silent.url, timeout=0.5)
        elapsed = time.monotonic() - started
    finally:
        silent.stop()

    assert silent.connections == 4
    for entity, (status, attempts, next_at, executed_at, error) in emails(project).items():
        assert (status, attempts, next_at, executed_at) == ("failed", 1, T + 15 * MIN, None), entity
        # smtplib reports a greeting that never came as a disconnection "timed out"
        assert error == f"SMTP {HOST}:{silent.port}: SMTPServerDisconnected: Connection unexpectedly closed: timed out"
    assert dict(report.executed.failed) == {"send_email": 4}
    assert welcomed(project) == set(USERS)  # internal actions proceed
    assert project.query("select status from journey_state.runs") == [("committed",)]
    assert elapsed < 60  # four sends of at most 0.5 s each, plus the build: the run is not wedged

    # the server comes back: the run past next_attempt_at delivers once (the mixed batch below checks that an
    # earlier run does not retry)
    with SmtpServer() as server:
        run(project, T + 15 * MIN, server.url, timeout=0.5)
        assert sorted(len(v) for v in server.by_message_id().values()) == [1, 1, 1, 1]
    assert {v[:2] for v in emails(project).values()} == {("done", 2)}


@pytest.mark.slow  # the mixed batch below has a slow recipient too
def test_a_slow_server_within_the_timeout_delivers_once(project):
    with DelayingSmtpServer() as server:
        server.delays = {email: 0.7 for email in USERS.values()}
        run(project, T, server.url, timeout=3.0)
    assert {v[:2] + (v[3], v[4]) for v in emails(project).values()} == {("done", 1, T, "")}
    assert sorted(len(v) for v in server.by_message_id().values()) == [1, 1, 1, 1]


def test_a_reply_lost_to_the_timeout_is_resent_with_the_same_message_id(project):
    """The server accepted the message but its reply came after the client gave up (RFC 1047): the client cannot know,
    the action is `failed` and retried, and the receiver gets the message twice with one Message-ID.
    This second duplicate window (besides a crash after acceptance) is in docs/reliability.md."""
    with DelayingSmtpServer() as server:
        server.stalls = {"slow@example.com": 1.5}
        run(project, T, server.url, timeout=0.5)
        state = emails(project)
        assert state["u3"][:3] == ("failed", 1, T + 15 * MIN) and state["u3"][4].endswith("timed out")
        server.stalls = {}
        run(project, T + 15 * MIN, server.url, timeout=0.5)
    copies = server.by_message_id()
    [slow_id] = [mid for mid, rs in copies.items() if rs[0].message["To"] == "slow@example.com"]
    assert len(copies[slow_id]) == 2 and copies[slow_id][0].body == copies[slow_id][1].body
    assert sorted(len(v) for mid, v in copies.items() if mid != slow_id) == [1, 1, 1]
    assert emails(project)["u3"][:2] == ("done", 2)


def test_a_mixed_batch_fails_each_message_on_its_own_and_retries_only_the_temporary_ones(project):
    with DelayingSmtpServer() as server:
        server.reject_recipient("perm@example.com", "550 5.1.1 No such user")
        server.reject_recipient("busy@example.com", "450 4.2.1 Mailbox busy")
        server.delays = {"slow@example.com": 0.5}
        report = run(project, T, server.url, timeout=3.0)
        first = emails(project)
        later = run(project, T + 14 * MIN, server.url, timeout=3.0)  # before next_attempt_at: nothing
        server.reject_recipient("busy@example.com", "")
        retry = run(project, T + 15 * MIN, server.url, timeout=3.0)
        final = emails(project)

    assert dict(report.executed.failed) == {"send_email": 2}
    assert dict(report.executed.done) == {"send_email": 2, "set_attribute": 4}
    assert first["u1"][:4] == ("failed", 5, None, None)  # 5xx: permanent, no next attempt shown
    assert "SMTPRecipientsRefused" in first["u1"][4] and "550" in first["u1"][4]
    assert first["u2"][:4] == ("failed", 1, T + 15 * MIN, None)
    assert "450" in first["u2"][4]
    assert first["u3"][:4] == ("done", 1, None, T) and first["u4"][:4] == ("done", 1, None, T)
    assert sum(later.executed.done.values()) == sum(later.executed.failed.values()) == 0
    assert dict(retry.executed.done) == {"send_email": 1}
    assert final["u2"][:4] == ("done", 2, None, T + 15 * MIN)
    assert final["u1"] == first["u1"]  # the permanent failure was not retried
    assert welcomed(project) == set(USERS)
    assert sorted(rs[0].message["To"] for rs in server.by_message_id().values()) == [
        "busy@example.com", "ok@example.com", "slow@example.com"]
    assert all(len(rs) == 1 for rs in server.by_message_id().values())


@pytest.mark.slow
def test_a_server_that_never_answers_is_retried_with_doubling_backoff_until_five_attempts(project):
    silent = SilentServer()
    schedule = []
    try:
        at = T
        for _ in range(6):
            run(project, at, silent.url, timeout=0.3)
            status, attempts, next_at, _, _ = emails(project)["u4"]
            schedule.append((at, status, attempts, next_at))
            at = next_at or at + dt.timedelta(days=1)
    finally:
        silent.stop()
    h = dt.timedelta(hours=1)
    assert schedule == [
        (T, "failed", 1, T + 15 * MIN),
        (T + 15 * MIN, "failed", 2, T + 45 * MIN),
        (T + 45 * MIN, "failed", 3, T + 105 * MIN),
        (T + 105 * MIN, "failed", 4, T + 225 * MIN),
        (T + 225 * MIN, "failed", 5, None),  # the fifth attempt was the last
        (T + 225 * MIN + 24 * h, "failed", 5, None),
    ]
    assert silent.connections == 4 * 5

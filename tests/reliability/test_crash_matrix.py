"""Crash-point matrix (SPEC §4.3): `journeys run` killed with SIGKILL at every phase boundary and inside
every phase, then the next run (no fault) completes; nothing is lost, nothing applied twice, the state is
the state of a crash-free run at the same T, and the only duplicate email is the documented one.

The world (built once per module, copied per case): day 0 is committed; the run under test is day 1.
Due at day 1, in execution order: account a1's CSM introduction (reached after a 23h wait: one message to
each of its two CSMs, `<KEY.1@...>` and `<KEY.2@...>`, then +1 to `intros`), the follow-up email and +10
to `visits` of users u1-u3 (enrolled on day 0), and u4's whole start (it enters on day 1: welcome email,
+1 visits, a set_attribute, a task); account a2 enters on day 1 with nothing due yet. That is 7 internal
actions, 5 email actions and 6 messages; u1's `visits` starts at '5' in the source, so that a double
increase shows in the numbers (16 expected).

Crash points are `JOURNEYS_FAULT=<point>` (journeys/engine/faults.py), except `during_dbt_build`: the test
kills the process itself once dbt has started executing the rule models and before it finished.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import copy_of, project_with
from tests.reliability.harness import JOURNEYS_CLI, cli, journey_state, query, release_dbt
from tests.smtp_server import SmtpServer

T0 = dt.datetime(2026, 6, 15, 9, 0)
T1 = T0 + dt.timedelta(days=1)
D = dt.datetime

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
  - increase_attribute: {name: visits, by: 1}
  - set_attribute: {name: stage, value: welcomed}
  - create_task: {title: "Call {{ user.email }}", assignee: csm, due_in: 1d}
  - wait: 1d
  - send_email: {template: followup, subject: "How is it going, {{ user.first_name }}?"}
  - increase_attribute: {name: visits, by: 10}
""",
    "sql_rules/journeys/csm_intro.yml": """\
journey: csm_intro
name: CSM introduction
entity: account
entry: {segments: [customers], existing_members: enroll}
actions:
  - wait: 23h
  - send_email: {template: csm_intro, to: csm, subject: "New customer: {{ account.name }}"}
  - increase_attribute: {name: intros, by: 1}
""",
    "sql_rules/templates/welcome.txt": "Hi {{ user.first_name }}, welcome.\n",
    "sql_rules/templates/followup.txt": "Hi {{ user.first_name }}, day two.\n",
    "sql_rules/templates/csm_intro.txt": "{{ account.name }} is your customer, {{ recipient }}.\n",
}


def rows(day: int) -> dict[str, list[tuple]]:
    return {
        "accounts": [
            ("a1", "Acme", 500.0, 6000.0, D(2026, 6, 1), None, 10, "onboarding", "active"),
            ("a2", "Globex", 90.0, 900.0, D(2026, 6, 1), None, 3, "trial", "active" if day >= 1 else "trial"),
        ],
        "users": [
            ("u1", "a1", "u1@example.com", "Ann", None, D(2026, 6, 1), None),
            ("u2", "a1", "u2@example.com", "Bob", None, D(2026, 6, 1), None),
            ("u3", "a2", "u3@example.com", "Cy", None, D(2026, 6, 1), None),
            ("u4", "a2", "u4@example.com", "Di" if day >= 1 else None, None, D(2026, 6, 1), None),
        ],
        "account_team": [("a1", "csm", "csm1@vendor.example"), ("a1", "csm", "csm2@vendor.example"),
                         ("a2", "csm", "csm3@vendor.example")],  # fmt: skip
        "custom_attributes": [("user", "u1", "visits", "5")],
    }


# What every crash-free or recovered run at T1 leaves in the attributes (u1 starts at 5 in the source).
ATTRIBUTES_AT_T1 = {
    ("account", "a1", "intros"): "1",
    ("user", "u1", "visits"): "16", ("user", "u2", "visits"): "11", ("user", "u3", "visits"): "11",
    ("user", "u4", "visits"): "1",
    ("user", "u1", "stage"): "welcomed", ("user", "u2", "stage"): "welcomed", ("user", "u3", "stage"): "welcomed",
    ("user", "u4", "stage"): "welcomed",
}  # fmt: skip
T1_INTERNAL, T1_EMAILS, T1_MESSAGES = 7, 5, 6


@dataclass(frozen=True)
class After:
    """What is on disk after the crash (asserted), for the matrix in docs/reliability.md."""

    run_status: str  # status of run r<T1>
    transitions: bool  # T1's transitions committed
    internal_done: int  # T1 internal actions done
    emails: dict  # T1 email actions by status
    accepted: int  # messages the server accepted before the crash (a1's CSM introduction goes first: 2 messages)
    in_flight: bool = False  # one email action left `sending` (attempts + 1 after the retry)
    duplicates: int = 0  # messages the next run sends again (same Message-ID)
    built_at_t1: bool = True  # journey_state.run_context already holds T1 (the build started)


NONE_YET = After("running", False, 0, {}, 0)
COMMITTED = After("committed", True, 0, {"pending": T1_EMAILS}, 0)
MATRIX = {
    "before_dbt_build": After("running", False, 0, {}, 0, built_at_t1=False),
    "during_dbt_build": NONE_YET,
    "after_dbt_build": NONE_YET,
    "mid_transitions": NONE_YET,
    "before_commit": NONE_YET,
    "after_commit": COMMITTED,
    "mid_internal_actions": COMMITTED,  # the first attribute was written, then the transaction died
    "after_internal_actions": After("committed", True, T1_INTERNAL, {"pending": T1_EMAILS}, 0),
    "before_external_delivery": After("committed", True, T1_INTERNAL, {"sending": 1, "pending": T1_EMAILS - 1}, 0, True),
    "after_smtp_accept": After("committed", True, T1_INTERNAL, {"sending": 1, "pending": T1_EMAILS - 1}, 1, True, 1),
    "after_external_delivery": After("committed", True, T1_INTERNAL, {"sending": 1, "pending": T1_EMAILS - 1}, 2, True),
    "after_actions": After("committed", True, T1_INTERNAL, {"done": T1_EMAILS}, T1_MESSAGES),
}
# In the default suite: the two windows where a crash could apply something twice (an attribute increase inside
# the internal batch; an email accepted but not recorded). `make test-slow` runs all twelve.
DEFAULT = ("mid_internal_actions", "after_smtp_accept")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The project after a committed day-0 run, its day-1 data loaded, and the crash-free run at T1."""
    base = tmp_path_factory.mktemp("crash")
    with SmtpServer() as server:
        template = project_with(base / "template", RULES, rows(0)).use_smtp(server.url)
        template.run(T0)
        release_dbt()
        template.insert_rows(rows(1))

        reference = copy_of(template.root, base / "reference")
        server.received.clear()
        reference.use_smtp(server.url).run(T1)
        release_dbt()
        messages = messages_by_id(server)
    assert sum(len(v) for v in messages.values()) == T1_MESSAGES
    assert attributes(reference.settings.db_path) == ATTRIBUTES_AT_T1
    return template.root, journey_state(reference.settings.db_path, exclude=WITHOUT_ATTEMPTS), attempts(
        reference.settings.db_path), messages  # fmt: skip


WITHOUT_ATTEMPTS = {"runs": {"started_at", "finished_at", "attempts", "error"}, "actions": {"attempts"}}


def messages_by_id(server: SmtpServer) -> dict[str, list[tuple[str, str, str]]]:
    out: dict[str, list] = {}
    for r in server.messages():
        out.setdefault(r.message_id, []).append((r.message["To"], r.subject, r.body))
    return out


def attributes(db: Path) -> dict[tuple[str, str, str], str]:
    rows = query(db, "select entity_type, entity_id, name, value from journey_state.attributes")
    return {(t, e, n): v for t, e, n, v in rows}


def attempts(db: Path) -> dict[str, int]:
    return dict(query(db, "select action_key, attempts from journey_state.actions"))


def run_args(root: Path, as_of: dt.datetime) -> list[str]:
    return ["--project-dir", str(root), "--db", str(root / "warehouse" / "journeys.duckdb"), "run", "--as-of",
            as_of.isoformat()]  # fmt: skip


def start_run(root: Path, env: dict[str, str]) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if k not in ("JOURNEYS_FAULT", "JOURNEYS_DB")}
    return subprocess.Popen([str(JOURNEYS_CLI), *run_args(root, T1)], env={**base, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def kill_during_dbt_build(root: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a run and SIGKILL it once dbt is executing the rule models (and has not finished)."""
    target = root / "dbt_project" / "target"
    shutil.rmtree(target / "run", ignore_errors=True)
    (target / "run_results.json").unlink(missing_ok=True)
    started = target / "run" / "journeys" / "models" / "generated" / "segment_membership.sql"
    process = start_run(root, env)
    deadline = time.monotonic() + 120
    while not started.exists():
        assert process.poll() is None, f"the run ended before dbt got to the rule models: {process.communicate()}"
        assert time.monotonic() < deadline, "dbt never started the rule models"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert not (target / "run_results.json").exists(), "dbt had finished: the kill was not during the build"
    return process


def on_disk(db: Path) -> dict:
    run = query(db, "select status from journey_state.runs where as_of = ?", [T1])
    emails = dict(query(db, "select status, count(*) from journey_state.actions "
                            "where action_type = 'send_email' and due_at > ? group by all", [T0]))  # fmt: skip
    return {
        "run_status": run[0][0] if run else None,
        "transitions": query(db, "select count(*) from journey_state.transitions where as_of = ?", [T1])[0][0] > 0,
        "internal_done": query(db, "select count(*) from journey_state.actions where action_type <> 'send_email' "
                                   "and due_at > ? and status = 'done'", [T0])[0][0],  # fmt: skip
        "emails": emails,
        "built_at_t1": query(db, "select max(as_of) from journey_state.run_context")[0][0] == T1,
        # messages recorded delivered for the action left `sending` (None: no action in flight)
        "recorded": next(iter(query(db, "select count(d.message_id) from journey_state.actions as a left join "
                                        "journey_state.deliveries as d using (action_key) where a.status = 'sending' "
                                        "group by a.action_key")), (None,))[0],  # fmt: skip
    }


def crash_and_recover(template: Path, tmp_path: Path, point: str):
    """Crash a run at T1 at `point`, look at the disk, then run again (no fault): what each step saw."""
    root = tmp_path / "project"
    shutil.copytree(template, root)
    db = root / "warehouse" / "journeys.duckdb"
    with SmtpServer() as server:
        env = {"JOURNEYS_SMTP_URL": server.url}
        if point == "during_dbt_build":
            crashed = kill_during_dbt_build(root, env)
        else:
            crashed = start_run(root, {**env, "JOURNEYS_FAULT": point})
            _, stderr = crashed.communicate(timeout=180)
            assert crashed.returncode == -signal.SIGKILL, stderr
        accepted = len(server.messages())
        disk = on_disk(db)
        holder = (db.parent / "journeys.duckdb.lock").read_text()
        assert holder.startswith(f"pid {crashed.pid} on ") and holder.endswith("journeys run r20260616T090000"), holder

        recovered = cli(*run_args(root, T1), env=env)
        received = messages_by_id(server)
    return disk, accepted, recovered, received, db, holder


@pytest.mark.parametrize("point", [p if p in DEFAULT else pytest.param(p, marks=pytest.mark.slow) for p in MATRIX])
def test_a_run_killed_at_any_point_is_completed_by_the_next_run_exactly_once(world, tmp_path, point):
    template, expected_state, expected_attempts, expected_messages = world
    expected = MATRIX[point]

    disk, accepted, recovered, received, db, holder = crash_and_recover(template, tmp_path, point)

    # what the crash left on disk
    recorded = disk.pop("recorded")
    assert disk == {"run_status": expected.run_status, "transitions": expected.transitions,
                    "internal_done": expected.internal_done, "emails": expected.emails,
                    "built_at_t1": expected.built_at_t1}  # fmt: skip
    assert accepted == expected.accepted
    if point == "after_external_delivery":  # every message of the in-flight action accepted and recorded
        assert recorded == accepted
    else:  # in flight, nothing recorded yet (after_smtp_accept: one message accepted, not recorded)
        assert recorded == (0 if expected.in_flight else None)

    # the next run takes over the dead run's lock, says so, and completes
    assert recovered.returncode == 0, recovered.stderr
    assert f"note: taking over the lock of a run that died ({holder})" in recovered.stderr
    assert "(committed)" in recovered.stdout

    # nothing lost, nothing applied twice: the state of a crash-free run at the same T
    assert journey_state(db, exclude=WITHOUT_ATTEMPTS) == expected_state
    assert attributes(db) == ATTRIBUTES_AT_T1
    assert query(db, "select count(*) from journey_state.actions where due_at <= ? and status not in ('done', 'cancelled')",
                 [T1]) == [(0,)]  # fmt: skip
    assert query(db, "select status, attempts from journey_state.runs where as_of = ?", [T1]) == [("committed", 2)]
    # an action interrupted while `sending` counts that try: one more attempt than without the crash
    got = attempts(db)
    more = {k: got[k] - expected_attempts[k] for k in got if got[k] != expected_attempts[k]}
    assert list(more.values()) == ([1] if expected.in_flight else [])

    # email: every message arrived; the only duplicate is the one accepted-not-recorded, same Message-ID
    duplicated = {mid: copies for mid, copies in received.items() if len(copies) > 1}
    assert {mid: copies[:1] for mid, copies in received.items()} == expected_messages
    assert len(duplicated) == expected.duplicates
    for mid, copies in duplicated.items():  # a1's first CSM message, the one in flight
        assert mid.endswith(".1@journeys.local>") and len(copies) == 2 and copies[0] == copies[1]

"""webhook steps against a real HTTP server on loopback (SPEC §4.3, §9): one POST per action with the
action key as Idempotency-Key and the rendered JSON body; retries on the next runs; then skip or abort.

One project, built once for the module, runs at 09:00 on days 0, 1, 2 and 3, then re-runs day 3. Each
journey has its own entry segment (a list of user ids) and its own path on the server, so the server's
script for one path (e.g. 500, 500, then 200) does not disturb the others. User x1 appears on day 3
only, so the re-run of day 3 meets a webhook that failed at that same T. Emails go to an SMTP address
where nothing listens (they are only there to be cancelled). A second server, outside the allowlist,
is where one path redirects to. Expectations are written by hand.

Some tests first showed bugs in journeys/engine/execute.py (fixed since); they keep guarding them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import shutil
from pathlib import Path

import pytest

from actions.base import ActionFailed
from actions.webhook import WebhookExecutor
from journeys.engine.ledger import DueAction
from journeys.errors import RuleError
from journeys.rules.validate import load_and_validate
from tests.conftest import Project, copy_project
from tests.http_server import HttpServer, http_server  # noqa: F401  (fixture)

T0 = dt.datetime(2026, 3, 2, 9, 0)
DAY = dt.timedelta(days=1)
REPO = Path(__file__).resolve().parents[2]

USERS = [("w1", "Wanda"), ("w2", "Walt"), ("r1", "Rita"), ("a1", "Abe"), ("a2", "Ada"), ("s1", "Sam"), ("d1", "Dee"),
         ("h1", "Hal\r\nX-Injected: yes")]  # fmt: skip


def rows(day: int) -> dict[str, list[tuple]]:
    users = USERS + ([("x1", "Xena")] if day >= 3 else [])
    return {
        # account_id, name, mrr, amount, created_at, next_billing_on, licenses, stage, status
        "accounts": [("acc1", "Acme", 500.0, 6000.0, dt.datetime(2025, 1, 1), dt.date(2026, 12, 1), 10, "adoption", "active")],
        # user_id, account_id, email, first_name, last_name, created_at, last_seen_at
        "users": [(u, "acc1", f"{u}@example.com", name, "Tester", dt.datetime(2026, 1, 1), None) for u, name in users],
    }


def journeys(port: int) -> dict[str, str]:
    base = f"http://127.0.0.1:{port}"
    segment = "segment: {0}\nentity: user\ncriteria: {{property: user.user_id, op: in, value: {1}}}\n"
    return {
        "sql_rules/segments/once_users.yml": segment.format("once_users", "[w1, w2]"),
        "sql_rules/segments/retry_users.yml": segment.format("retry_users", "[r1]"),
        "sql_rules/segments/abort_users.yml": segment.format("abort_users", "[a1]"),
        "sql_rules/segments/skip_users.yml": segment.format("skip_users", "[s1]"),
        "sql_rules/segments/pending_users.yml": segment.format("pending_users", "[a2]"),
        "sql_rules/segments/rerun_users.yml": segment.format("rerun_users", "[x1]"),
        "sql_rules/segments/redirect_users.yml": segment.format("redirect_users", "[d1]"),
        "sql_rules/segments/header_users.yml": segment.format("header_users", "[h1]"),
        "sql_rules/templates/hello.txt": "Hello {{ user.first_name }}\n",
        "sql_rules/journeys/hook_once.yml": f"""\
journey: hook_once
name: Hook once
entity: user
entry: {{segments: [once_users], existing_members: enroll}}
actions:
  - webhook:
      url: "{base}/once"
      headers: {{X-Journey: "{{{{ journey.id }}}}"}}
      body:
        user: "{{{{ user.user_id }}}}"
        greeting: "Hi {{{{ user.first_name }}}} of {{{{ account.name }}}}"
        key: "{{{{ action_key }}}}"
        seats: 3
        vip: false
        tags: [static, "{{{{ entity.email }}}}"]
        nested: {{mrr: "{{{{ account.mrr }}}}", none: null}}
""",
        "sql_rules/journeys/hook_retry.yml": f"""\
journey: hook_retry
entity: user
entry: {{segments: [retry_users], existing_members: enroll}}
actions:
  - webhook: {{url: "{base}/retry", body: {{user: "{{{{ user.user_id }}}}"}}}}
    on_failure: {{retry: 3}}
""",
        "sql_rules/journeys/hook_abort.yml": f"""\
journey: hook_abort
entity: user
entry: {{segments: [abort_users], existing_members: enroll}}
actions:
  - webhook: {{url: "{base}/abort", body: {{user: "{{{{ user.user_id }}}}"}}}}
    on_failure: {{retry: 2, then: abort}}
  - set_attribute: {{name: abort_first, value: done}}
  - wait: 5d
  - set_attribute: {{name: abort_later, value: done}}
""",
        "sql_rules/journeys/hook_skip.yml": f"""\
journey: hook_skip
entity: user
entry: {{segments: [skip_users], existing_members: enroll}}
actions:
  - webhook: {{url: "{base}/skip", body: {{user: "{{{{ user.user_id }}}}"}}}}
    on_failure: {{retry: 1, then: skip}}
  - wait: 1d
  - set_attribute: {{name: after_skip, value: done}}
""",
        # the email is due with the webhook but runs after it (same due time, later step): the abort cancels it.
        # The final wait keeps the enrollment active past day 0 (an enrollment that already completed has
        # nothing left for an abort to end).
        "sql_rules/journeys/hook_abort_pending.yml": f"""\
journey: hook_abort_pending
entity: user
entry: {{segments: [pending_users], existing_members: enroll}}
actions:
  - webhook: {{url: "{base}/abort_now", body: {{}}}}
    on_failure: {{retry: 0, then: abort}}
  - send_email: {{template: hello}}
  - wait: 1d
""",
        # the server answers with a redirect to a host outside the allowlist
        "sql_rules/journeys/hook_redirect.yml": f"""\
journey: hook_redirect
entity: user
entry: {{segments: [redirect_users], existing_members: enroll}}
actions:
  - webhook: {{url: "{base}/redirect", body: {{user: "{{{{ user.user_id }}}}"}}}}
    on_failure: {{retry: 0, then: skip}}
""",
        # a header rendered from data with a line break in it
        "sql_rules/journeys/hook_header.yml": f"""\
journey: hook_header
entity: user
entry: {{segments: [header_users], existing_members: enroll}}
actions:
  - webhook: {{url: "{base}/header", headers: {{X-Name: "{{{{ user.first_name }}}}"}}}}
    on_failure: {{retry: 3, then: skip}}
""",
        "sql_rules/journeys/hook_rerun.yml": f"""\
journey: hook_rerun
entity: user
entry: {{segments: [rerun_users]}}
actions:
  - webhook: {{url: "{base}/rerun", body: {{}}}}
    on_failure: {{retry: 3, then: skip}}
""",
    }


def key(journey: str, user: str, step: str, enrolled_at: dt.datetime = T0) -> str:
    """The action key by hand: sha256 of 'journey|user|id|enrolled_at|step', first 32 hex digits."""
    content = f"{journey}|user|{user}|{enrolled_at:%Y-%m-%dT%H:%M:%S.%f}|{step}"
    return hashlib.sha256(content.encode()).hexdigest()[:32]


class World:
    def __init__(self, project: Project, server: HttpServer, outside: HttpServer):
        self.project, self.server, self.outside = project, server, outside
        self.after: dict[str, dict] = {}  # label → snapshot of the ledger after that run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    server = HttpServer().start()
    server.answer(500, 500, path="/retry")  # then the default 200
    server.always("/abort", 500)
    for path in ("/skip", "/abort_now", "/rerun"):
        server.always(path, 500)
    outside = HttpServer().start()  # not in the allowlist
    server.redirect("/redirect", outside.url("/collect"))
    try:
        root = copy_project(tmp_path_factory.mktemp("webhooks") / "project", rules_from=None)
        project = Project(root)
        for path, text in journeys(server.port).items():
            project.write(path, text)
        project.write("journeys.yml", f"webhooks:\n  allow: ['http://127.0.0.1:{server.port}/']\n")
        # emails are external (SMTP) and go nowhere: nothing listens on the discard port
        project.settings = dataclasses.replace(project.settings, smtp_url="smtp://127.0.0.1:9")
        w = World(project, server, outside)
        for label, n in [("day0", 0), ("day1", 1), ("day2", 2), ("day3", 3), ("day3_again", 3)]:
            project.insert_rows(rows(n))
            project.run(T0 + n * DAY)
            w.after[label] = {"ledger": ledger(project), "posts": len(server.received())}
        yield w
    finally:
        server.stop()
        outside.stop()


def ledger(project: Project) -> dict[tuple[str, str, str], tuple]:
    """(journey, entity, step) → (action type, status, reason, attempts, due_at, executed_at)."""
    rows = project.query(
        "select journey_id, entity_id, step_id, action_type, status, reason, attempts, due_at, executed_at "
        "from journey_actions"
    )
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}


def enrollment(project: Project, journey: str, user: str) -> tuple:
    [row] = project.query(
        "select status, end_reason, ended_at from journey_enrollments where journey_id = ? and entity_id = ?",
        [journey, user],
    )
    return row


# Bugs in journeys/engine/execute.py, outside what these tests may fix.


def test_each_webhook_is_posted_exactly_once_with_the_action_key_and_the_rendered_body(world):
    posts = world.server.received("/once")
    assert sorted(p.json["user"] for p in posts) == ["w1", "w2"]  # once each, over five runs
    by_user = {p.json["user"]: p for p in posts}
    for user, first_name in [("w1", "Wanda"), ("w2", "Walt")]:
        post, action_key = by_user[user], key("hook_once", user, "1")
        assert post.method == "POST"
        assert post.idempotency_key == action_key
        assert post.headers["content-type"] == "application/json"
        assert post.headers["x-journey"] == "hook_once"
        assert post.json == {
            "user": user,
            "greeting": f"Hi {first_name} of Acme",
            "key": action_key,
            "seats": 3,
            "vip": False,
            "tags": ["static", f"{user}@example.com"],
            "nested": {"mrr": "500.0", "none": None},
        }
    for label in ("day0", "day3_again"):
        for user in ("w1", "w2"):
            assert world.after[label]["ledger"]["hook_once", user, "1"] == ("webhook", "done", None, 1, T0, T0)
    # the ledger's key is the header's key
    keys = dict(world.project.query("select entity_id, action_key from journey_actions where journey_id = 'hook_once'"))
    assert keys == {"w1": key("hook_once", "w1", "1"), "w2": key("hook_once", "w2", "1")}


def test_a_webhook_that_failed_is_not_retried_by_a_rerun_at_the_same_t_itself(world):
    assert world.after["day3"]["ledger"]["hook_rerun", "x1", "1"][:2] == ("webhook", "failed")
    assert [p.status for p in world.server.received("/rerun")] == [500]  # day 3 only, not its re-run
    assert world.after["day3_again"]["ledger"] == world.after["day3"]["ledger"]


def test_500_twice_then_200_is_failed_failed_done_with_one_post_per_run_and_the_same_key(world):
    row = lambda label: world.after[label]["ledger"]["hook_retry", "r1", "1"][:4]  # noqa: E731
    assert row("day0") == ("webhook", "failed", None, 1)
    assert row("day1") == ("webhook", "failed", None, 2)
    assert row("day2") == ("webhook", "done", None, 3)
    assert world.after["day3"]["ledger"]["hook_retry", "r1", "1"] == ("webhook", "done", None, 3, T0, T0 + 2 * DAY)
    posts = world.server.received("/retry")
    assert [p.status for p in posts] == [500, 500, 200]
    assert {p.idempotency_key for p in posts} == {key("hook_retry", "r1", "1")}
    assert [p.json for p in posts] == [{"user": "r1"}] * 3
    assert enrollment(world.project, "hook_retry", "r1") == ("completed", "completed", T0)


def test_retry_2_then_abort_ends_the_enrollment_after_the_retries_and_nothing_later_is_reached(world):
    posts = world.server.received("/abort")
    assert [p.status for p in posts] == [500, 500, 500]  # the first try and 2 retries, on days 0, 1, 2
    assert {p.idempotency_key for p in posts} == {key("hook_abort", "a1", "1")}
    assert world.after["day1"]["ledger"]["hook_abort", "a1", "1"][:4] == ("webhook", "failed", None, 2)
    assert enrollment(world.project, "hook_abort", "a1") == ("unenrolled", "action_failed", T0 + 2 * DAY)
    assert enrollment_transitions(world.project, "hook_abort", "a1") == [
        ("enrolled", None, T0), ("unenrolled", "action_failed", T0 + 2 * DAY)]
    final = world.after["day3_again"]["ledger"]
    assert final["hook_abort", "a1", "1"][:4] == ("webhook", "failed", None, 3)
    assert final["hook_abort", "a1", "2"] == ("set_attribute", "done", None, 1, T0, T0)  # internal: ran on day 0
    # step 4 would be reached at T0 + 5d, after the enrollment ended: never recorded
    assert ("hook_abort", "a1", "4") not in final


def test_then_skip_records_the_action_skipped_with_the_reason_and_the_journey_goes_on(world):
    posts = world.server.received("/skip")
    assert [p.status for p in posts] == [500, 500]  # the first try and 1 retry, on days 0 and 1
    assert world.after["day0"]["ledger"]["hook_skip", "s1", "1"][:4] == ("webhook", "failed", None, 1)
    final = world.after["day3_again"]["ledger"]
    url = f"http://127.0.0.1:{world.server.port}/skip"
    assert final["hook_skip", "s1", "1"] == (
        "webhook", "skipped", f"webhook_failed after 2 attempt(s): HTTP 500 from {url}", 2, T0, T0 + DAY)
    assert final["hook_skip", "s1", "3"] == ("set_attribute", "done", None, 1, T0 + DAY, T0 + DAY)
    assert enrollment(world.project, "hook_skip", "s1") == ("completed", "completed", T0 + DAY)


def test_retry_0_then_abort_ends_the_enrollment_at_the_first_failure(world):
    assert [p.status for p in world.server.received("/abort_now")] == [500]
    assert enrollment(world.project, "hook_abort_pending", "a2") == ("unenrolled", "action_failed", T0)
    assert world.after["day3_again"]["ledger"]["hook_abort_pending", "a2", "1"][:2] == ("webhook", "failed")


def test_an_abort_cancels_the_email_due_after_it_in_the_same_run(world):
    # same due time, later step: listed after the webhook, so the abort comes first and the email is never tried
    for label in ("day0", "day3_again"):
        assert world.after[label]["ledger"]["hook_abort_pending", "a2", "2"] == ("send_email", "cancelled", None, 0, T0, None)


def test_a_redirect_is_a_failure_and_is_never_followed_outside_the_allowlist(world):
    [post] = world.server.received("/redirect")
    assert (post.method, post.status, post.idempotency_key) == ("POST", 302, key("hook_redirect", "d1", "1"))
    assert world.outside.received() == []  # neither the body nor the Idempotency-Key went elsewhere
    url = f"http://127.0.0.1:{world.server.port}/redirect"
    status, reason = world.after["day0"]["ledger"]["hook_redirect", "d1", "1"][1:3]
    assert (status, reason) == ("skipped", f"webhook_failed after 1 attempt(s): HTTP 302 from {url}")


def test_a_line_break_in_a_rendered_header_fails_for_good_without_a_request(world):
    # bad data: retrying cannot help, so `retry: 3` is not spent; the header never reaches the server
    assert world.server.received("/header") == []
    status, reason = world.after["day0"]["ledger"]["hook_header", "h1", "1"][1:3]
    assert status == "skipped"
    assert reason.startswith("webhook_failed after 1 attempt(s): cannot build the request: Invalid header value")


def test_an_empty_allowlist_allows_no_pending_webhook(http_server):
    """Validation refuses every webhook URL while webhooks.allow is empty; the executor agrees, so an action
    recorded under older rules (a journey version that still had the step) is not posted once the list is gone."""
    action = DueAction("k" * 32, "e1", "old_hook", "user", "u1", "1", "webhook",
                       {"url": http_server.url("/hook"), "body": {}}, T0, "pending", 0)  # fmt: skip
    with pytest.raises(ActionFailed) as caught:
        WebhookExecutor(allow=()).deliver(action, ctx=None)
    assert caught.value.permanent
    assert str(caught.value) == f"{http_server.url('/hook')} is no longer allowed by journeys.yml webhooks.allow"
    assert http_server.received() == []


def enrollment_transitions(project: Project, journey: str, user: str) -> list[tuple]:
    return project.query(
        "select event, reason, as_of from journey_transitions where journey_id = ? and entity_id = ? order by as_of, event",
        [journey, user],
    )


# ------------------------------------------------------------------------------------ the allowlist


@pytest.fixture
def rules_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(REPO / "sql_rules", root / "sql_rules")
    shutil.copytree(REPO / "dbt_project" / "models" / "staging", root / "dbt_project" / "models" / "staging")
    shutil.copy(REPO / "journeys.yml", root / "journeys.yml")
    return root


def test_a_url_outside_the_allowlist_is_a_validation_error(rules_project):
    (rules_project / "sql_rules" / "journeys" / "hook_elsewhere.yml").write_text(
        "journey: hook_elsewhere\n"
        "entity: user\n"
        "entry: {segments: [new_users]}\n"
        "actions:\n"
        "  - webhook: {url: 'https://evil.example/collect', body: {user: '{{ user.user_id }}'}}\n"
    )
    with pytest.raises(RuleError) as caught:
        load_and_validate(rules_project)
    assert [str(p) for p in caught.value.problems] == [
        "sql_rules/journeys/hook_elsewhere.yml:5:15: actions[0].webhook.url: 'https://evil.example/collect' is not"
        " allowed by journeys.yml webhooks.allow; expected a URL starting with: https://hooks.acme-analytics.example/"
    ]


def test_a_lookalike_host_is_not_inside_an_allowed_prefix(rules_project):
    # 'https://hooks.acme-analytics.example.evil.example/' does not start with the allowed prefix (which ends in '/')
    (rules_project / "sql_rules" / "journeys" / "hook_lookalike.yml").write_text(
        "journey: hook_lookalike\nentity: user\nentry: {segments: [new_users]}\nactions:\n"
        "  - webhook: {url: 'https://hooks.acme-analytics.example.evil.example/x'}\n"
    )
    with pytest.raises(RuleError) as caught:
        load_and_validate(rules_project)
    assert [str(p) for p in caught.value.problems] == [
        "sql_rules/journeys/hook_lookalike.yml:5:15: actions[0].webhook.url: 'https://hooks.acme-analytics.example"
        ".evil.example/x' is not allowed by journeys.yml webhooks.allow; expected a URL starting with:"
        " https://hooks.acme-analytics.example/"
    ]

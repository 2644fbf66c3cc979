"""Bad §9 rules and bad journeys.yml settings are rejected before any SQL runs, each with its exact
`path:line:col: field: message` (the harness of test_validation.py).

Each case copies the valid base (the sample rules, the sample journeys.yml and the staging contracts)
into a fresh project, then adds one journey from tests/fixtures/bad_rules_9/journeys/ or replaces
journeys.yml by one file from tests/fixtures/bad_rules_9/settings/. Every fixture starts with a comment
line saying what is wrong, so its rule starts on line 2. The expected lines are written by hand.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from journeys.rules.validate import load_and_validate
from tests.validation_harness import REPO, add_new_rule, make_base_project, problems_of
from tests.validation_harness import project  # noqa: F401  (fixture)

BAD = REPO / "tests" / "fixtures" / "bad_rules_9"

J = "sql_rules/journeys/"
Y = "journeys.yml"
DURATION = "is not a duration; expected a number and a unit m, h, d or w, e.g. 30m, 12h, 2d, 1w"
SHARE = "is not a share; expected a percent from 0% to 99%, e.g. 10%"
SEGMENTS = "at_risk_accounts, checkin_due, dashboards_not_adopted, inactive_users, new_users, power_users, renewal_window"
USER_COLUMNS = "user_id, account_id, email, first_name, last_name, created_at, last_seen_at"
ACCOUNT_FIELDS = "account_id, amount, created_at, custom, licenses, mrr, name, next_billing_on, stage, status"
TEMPLATE_VARIABLES = "account, action_key, entity, journey, recipient, user"
ALLOWED = "https://hooks.acme-analytics.example/"
CHANNELS = "expected one of: email, webhook"
SETTINGS_KEYS = "email, frequency_caps, send_window, max_sends_per_run, webhooks"

# (fixture under tests/fixtures/bad_rules_9/, the exact problems)
CASES = [
    # ---- split
    ("journeys/split_percents_sum.yml", [
        f"{J}split_percents_sum.yml:7:5: actions[0].split: path percents sum to 90; expected 100"]),
    ("journeys/split_duplicate_names.yml", [
        f"{J}split_duplicate_names.yml:9:10: actions[0].split[1].name: 'short' is already the name of split[0];"
        " expected a distinct name per path"]),
    ("journeys/split_percent_zero.yml", [
        f"{J}split_percent_zero.yml:9:22: actions[0].split[1].percent: expected a number > 0, got 0"]),
    ("journeys/split_one_path.yml", [f"{J}split_one_path.yml:7:5: actions[0].split: expected at least 2 item(s)"]),
    ("journeys/split_path_bad_name.yml", [
        f"{J}split_path_bad_name.yml:8:10: actions[0].split[0].name: 'Short' is not a valid id; expected lowercase"
        " letters, digits and _ (starting with a letter)"]),
    # ---- wait_until
    ("journeys/wait_until_no_timeout.yml", [
        f"{J}wait_until_no_timeout.yml:7:5: actions[0].wait_until.timeout: missing; this key is required"]),
    ("journeys/wait_until_bad_timeout.yml", [
        f"{J}wait_until_bad_timeout.yml:9:7: actions[0].wait_until.timeout: '7 days' {DURATION}"]),
    ("journeys/wait_until_unknown_segment.yml", [
        f"{J}wait_until_unknown_segment.yml:8:18: actions[0].wait_until.criteria.segment: unknown segment 'new_usrs';"
        f" expected one of: {SEGMENTS}"]),
    ("journeys/wait_until_then_mapping.yml", [
        f"{J}wait_until_then_mapping.yml:10:5: actions[0].on_timeout: expected a list, got a mapping"]),
    # ---- wait_until_date
    ("journeys/wait_until_date_text.yml", [
        f"{J}wait_until_date_text.yml:7:23: actions[0].wait_until_date.property: user.email is a text property;"
        " expected a date or timestamp property (or a custom attribute holding ISO dates)"]),
    ("journeys/wait_until_date_bad_offset.yml", [
        f"{J}wait_until_date_bad_offset.yml:7:58: actions[0].wait_until_date.offset: '30d' is not an offset;"
        " expected a signed duration like -30d or +2h"]),
    ("journeys/wait_until_date_bad_if_past.yml", [
        f"{J}wait_until_date_bad_if_past.yml:9:7: actions[0].wait_until_date.if_past: 'skip' is not allowed;"
        " expected one of: continue, exit"]),
    ("journeys/wait_until_date_event_property.yml", [
        f"{J}wait_until_date_event_property.yml:8:7: actions[0].wait_until_date.property: event.renews_at cannot be"
        " used in wait_until_date; expected a date of the user or its account: user.<column>, user.custom.<name>,"
        " account.<column> or account.custom.<name>"]),
    ("journeys/wait_until_date_user_in_account.yml", [
        f"{J}wait_until_date_user_in_account.yml:7:23: actions[0].wait_until_date.property: user.created_at cannot be"
        " used in wait_until_date; expected a date of the account: account.<column> or account.custom.<name>"]),
    # ---- webhook and on_failure
    ("journeys/webhook_not_allowed.yml", [
        f"{J}webhook_not_allowed.yml:8:7: actions[0].webhook.url: 'https://hooks.other.example/renewal' is not allowed"
        f" by journeys.yml webhooks.allow; expected a URL starting with: {ALLOWED}"]),
    ("journeys/split_path_webhook_not_allowed.yml", [
        f"{J}split_path_webhook_not_allowed.yml:12:23: actions[0].split[1].steps[0].webhook.url:"
        " 'http://hooks.acme-analytics.example/renewal' is not allowed by journeys.yml webhooks.allow;"
        f" expected a URL starting with: {ALLOWED}"]),
    ("journeys/webhook_not_http.yml", [
        f"{J}webhook_not_http.yml:8:7: actions[0].webhook.url: 'ftp://hooks.acme-analytics.example/renewal' is not"
        " an http(s) URL"]),
    ("journeys/webhook_body_unknown_variable.yml", [
        f"{J}webhook_body_unknown_variable.yml:11:9: actions[0].webhook.body.account: unknown template variable"
        f" 'contact'; expected one of: {TEMPLATE_VARIABLES}"]),
    ("journeys/webhook_header_unknown_field.yml", [
        f"{J}webhook_header_unknown_field.yml:9:17: actions[0].webhook.headers.X-Account: unknown field 'account.nme';"
        f" expected one of: {ACCOUNT_FIELDS}"]),
    ("journeys/on_failure_bad_then.yml", [
        f"{J}on_failure_bad_then.yml:8:28: actions[0].on_failure.then: 'retry' is not allowed; expected one of:"
        " skip, abort"]),
    ("journeys/on_failure_negative_retry.yml", [
        f"{J}on_failure_negative_retry.yml:8:18: actions[0].on_failure.retry: expected a number >= 0, got -1"]),
    ("journeys/on_failure_retry_too_many.yml", [
        f"{J}on_failure_retry_too_many.yml:8:18: actions[0].on_failure.retry: expected a number <= 50, got 100"]),
    # ---- holdout, goal.within, on_leave_entry
    ("journeys/holdout_over_100.yml", [f"{J}holdout_over_100.yml:6:3: entry.holdout: '110%' {SHARE}"]),
    ("journeys/holdout_text.yml", [f"{J}holdout_text.yml:6:3: entry.holdout: 'abc' {SHARE}"]),
    ("journeys/holdout_100.yml", [f"{J}holdout_100.yml:6:3: entry.holdout: '100' {SHARE}"]),
    ("journeys/holdout_negative.yml", [f"{J}holdout_negative.yml:6:3: entry.holdout: '-5%' {SHARE}"]),
    ("journeys/goal_within_bad.yml", [f"{J}goal_within_bad.yml:10:3: goal.within: '3 weeks' {DURATION}"]),
    ("journeys/on_leave_entry_yes.yml", [
        f"{J}on_leave_entry_yes.yml:7:3: exit.on_leave_entry: expected true or false, got 'yes'"]),
    # ---- journeys.yml
    ("settings/timezone_unknown.yml", [
        f"{Y}:5:3: send_window.default_timezone: unknown timezone 'Mars/Olympus'; expected an IANA name like UTC,"
        " Europe/Paris or America/New_York"]),
    ("settings/clock_9am.yml", [
        f"{Y}:3:3: send_window.start: '9am' is not a time of day; expected HH:MM, e.g. \"09:00\" (quoted)"]),
    ("settings/window_empty.yml", [f"{Y}:2:1: send_window: start equals end; expected a window of some length"]),
    ("settings/unknown_key.yml", [
        f"{Y}:2:1: frequency_cap: unknown key 'frequency_cap'; expected one of: {SETTINGS_KEYS}"]),
    ("settings/cap_max_zero.yml", [f"{Y}:3:22: frequency_caps[0].max: expected a number >= 1, got 0"]),
    ("settings/cap_bad_per.yml", [f"{Y}:3:30: frequency_caps[0].per: '1 month' {DURATION}"]),
    ("settings/cap_unknown_channel.yml", [f"{Y}:3:6: frequency_caps[0].channel: 'sms' is not allowed; {CHANNELS}"]),
    ("settings/max_sends_zero.yml", [f"{Y}:3:3: max_sends_per_run.email: expected a number >= 1, got 0"]),
    ("settings/max_sends_unknown_channel.yml", [f"{Y}:4:3: max_sends_per_run.sms: 'sms' is not allowed; {CHANNELS}"]),
    ("settings/timezone_property_unknown.yml", [
        f"{Y}:5:3: send_window.timezone_property: unknown column 'tz' of users; expected one of: {USER_COLUMNS}"]),
    ("settings/window_channels_unknown.yml", [f"{Y}:5:21: send_window.channels[1]: 'sms' is not allowed; {CHANNELS}"]),
    ("settings/allow_not_http.yml", [
        f"{Y}:5:7: webhooks.allow[1]: 'hooks.acme-analytics.example/' is not an http(s) URL prefix;"
        " expected a prefix like https://hooks.example.com/"]),
    ("settings/email_bad_domain.yml", [
        f"{Y}:3:3: email.message_id_domain: 'acme analytics.example' is not a domain; expected letters, digits,"
        " dots and dashes, e.g. acme.example"]),
]

@pytest.fixture(scope="session")
def base_project(tmp_path_factory) -> Path:
    """The valid sample rules, the sample journeys.yml and the staging contracts, built once."""
    return make_base_project(tmp_path_factory.mktemp("base9") / "project", with_settings=True)


def add_bad_file(project: Path, relative: str) -> None:
    kind, name = relative.split("/")
    if kind == "settings":
        shutil.copy(BAD / relative, project / "journeys.yml")
    else:
        add_new_rule(BAD / relative, project / "sql_rules" / "journeys" / name, relative)


def test_the_base_with_journeys_yml_is_valid(project):
    rules = load_and_validate(project)
    assert rules.settings.webhooks.allow == (ALLOWED,)
    assert rules.settings.frequency_caps[0].max == 3


def test_every_fixture_file_is_used_by_a_case():
    used = {f for f, _ in CASES}
    on_disk = {p.relative_to(BAD).as_posix() for p in BAD.rglob("*") if p.is_file()}
    assert on_disk == used
    assert len(used) >= 25


def test_every_fixture_starts_with_a_comment_and_the_journey_id_matches_its_file():
    for path in BAD.rglob("*.yml"):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("# "), path
        if path.parent.name == "journeys":
            assert lines[1] == f"journey: {path.stem}", path


@pytest.mark.parametrize(("fixture", "expected"), CASES, ids=[Path(f).stem for f, _ in CASES])
def test_bad_rule_or_setting_is_rejected_with_its_place_and_what_is_expected(project, fixture, expected):
    add_bad_file(project, fixture)
    assert problems_of(project) == expected


def test_a_bad_journeys_yml_and_a_bad_journey_are_reported_together(project):
    add_bad_file(project, "settings/clock_9am.yml")
    add_bad_file(project, "journeys/holdout_text.yml")
    assert problems_of(project) == [
        f"{Y}:3:3: send_window.start: '9am' is not a time of day; expected HH:MM, e.g. \"09:00\" (quoted)",
        f"{J}holdout_text.yml:6:3: entry.holdout: 'abc' {SHARE}",
    ]


def test_without_an_allowlist_every_webhook_url_is_refused_and_the_message_says_how_to_allow_one(project):
    (project / "journeys.yml").unlink()
    (project / "sql_rules" / "journeys" / "hook.yml").write_text(
        "journey: hook\nentity: user\nentry: {segments: [new_users]}\n"
        "actions:\n  - webhook: {url: 'https://hooks.acme-analytics.example/x'}\n"
    )
    assert problems_of(project) == [
        f"{J}hook.yml:5:15: actions[0].webhook.url: 'https://hooks.acme-analytics.example/x' is not allowed by"
        " journeys.yml webhooks.allow; expected a URL starting with: nothing yet (add webhooks.allow to journeys.yml)"
    ]


def test_a_split_error_points_at_its_split_or_its_path_however_deep_the_split_is(project):
    """The sum and the repeated name are checked across the paths: their place is the split, or the
    path whose name repeats, not the step holding the split (here inside an `if`)."""
    (project / "sql_rules" / "journeys" / "nested_split.yml").write_text(
        "journey: nested_split\nentity: user\nentry: {segments: [new_users]}\nactions:\n"
        "  - if: {property: user.email, op: is_set}\n"
        "    then:\n"
        "      - split:\n"
        "          - {name: a, percent: 60}\n"
        "          - {name: b, percent: 30}\n"
        "      - split:\n"
        "          - {name: a, percent: 50}\n"
        "          - {name: b, percent: 25}\n"
        "          - {name: a, percent: 25}\n"
    )
    assert problems_of(project) == [
        f"{J}nested_split.yml:7:9: actions[0].then[0].split: path percents sum to 90; expected 100",
        f"{J}nested_split.yml:13:14: actions[0].then[1].split[2].name: 'a' is already the name of split[0];"
        " expected a distinct name per path",
    ]

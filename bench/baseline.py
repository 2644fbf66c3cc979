"""The hand-written baseline: what a skilled engineer would write in plain DuckDB SQL for the same journeys.

No dbt, no rule compiler: one scan of the raw events for every count the rules need, one wide row per
user (with its account's columns) and per account, one query per segment, and the journey logic of
SPEC §4.1 as a handful of set-based statements over its own state (schema `bench_baseline`). Goals,
blacklists and `if` conditions are evaluated only for the enrollments (and entry candidates) they can
affect, as one would by hand. Each journey family below is the SQL twin of its file in bench/rules/;
variants only change the parameters (bench/project.py KNOBS).

Criteria here never read attributes written by journeys (the bench rules do not), so the baseline does
not need to replay the actions it counts.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import duckdb

from bench.project import JourneySpec

S = "bench_baseline"
DAY = 86400

# Event counts: name -> (level, filter). Every count also has occurred_at <= T (in the scan's where).
EVENT_FEATURES = {
    "login_30d": ("user", "e.event_name = 'login' and e.occurred_at >= {T} - interval 30 day"),
    "login_7d": ("user", "e.event_name = 'login' and e.occurred_at >= {T} - interval 7 day"),
    "login_3d": ("user", "e.event_name = 'login' and e.occurred_at >= {T} - interval 3 day"),
    "login_2d": ("user", "e.event_name = 'login' and e.occurred_at >= {T} - interval 2 day"),
    "dash_30d": ("user", "e.event_name = 'feature_used' and e.properties->>'$.feature' = 'dashboards' "
                         "and e.occurred_at >= {T} - interval 30 day"),
    "dash_7d": ("user", "e.event_name = 'feature_used' and e.properties->>'$.feature' = 'dashboards' "
                        "and e.occurred_at >= {T} - interval 7 day"),
    "api_call_30d": ("user", "e.event_name = 'api_call' and e.occurred_at >= {T} - interval 30 day"),
    "report_created_7d": ("user", "e.event_name = 'report_created' and e.occurred_at >= {T} - interval 7 day"),
    "report_created_14d": ("user", "e.event_name = 'report_created' and e.occurred_at >= {T} - interval 14 day"),
    "report_created_30d": ("user", "e.event_name = 'report_created' and e.occurred_at >= {T} - interval 30 day"),
    "export_web_30d": ("user", "e.event_name = 'export_csv' and e.properties->>'$.source.channel' = 'web' "
                               "and e.occurred_at >= {T} - interval 30 day"),
    "plan_upgraded_30d": ("user", "e.event_name = 'plan_upgraded' and e.occurred_at >= {T} - interval 30 day"),
    "invite_sent_30d": ("user", "e.event_name = 'invite_sent' and e.occurred_at >= {T} - interval 30 day"),
    "report_shared_30d": ("user", "e.event_name = 'report_shared' and e.occurred_at >= {T} - interval 30 day"),
    "alert_created_30d": ("user", "e.event_name = 'alert_created' and e.occurred_at >= {T} - interval 30 day"),
    "invite_accepted_30d": ("user", "e.event_name = 'invite_accepted' and e.occurred_at >= {T} - interval 30 day"),
    "events_7d": ("user", "e.occurred_at > {T} - interval 7 day"),  # every event name (power_users)
    "acct_api_call_30d": ("account", "e.event_name = 'api_call' and e.occurred_at >= {T} - interval 30 day"),
    "acct_integration_sync_14d": ("account", "e.event_name = 'integration_sync' and e.occurred_at >= {T} - interval 14 day"),
}  # fmt: skip
WIDEST_WINDOW_DAYS = 30

HEALTH = "try_cast(a.health_score as double)"
NPS = "try_cast(a.nps as double)"
COMPETITOR = "coalesce(strpos(lower(u.email), '@competitor.com') > 0, false)"
ACCOUNT_CHURNED = "coalesce(a.status = 'churned', false)"
USER_ACCOUNT_CHURNED = "coalesce(u.acct_status = 'churned', false)"

# Segments: id -> (entity, features it needs, condition over `u` (user + account columns) or `a`).
SEGMENTS = {
    "new_users": ("user", [], "u.created_at > {T} - interval 14 day"),
    "inactive_users": ("user", [], "u.created_at < {T} - interval 30 day "
                                   "and (u.last_seen_at < {T} - interval 14 day or u.last_seen_at is null) "
                                   "and coalesce(u.acct_status <> 'churned', false)"),
    "dashboards_not_adopted": ("user", ["login_30d", "dash_30d"], "u.login_30d >= 3 and u.dash_30d = 0"),
    "power_users": ("user", ["events_7d"], None),  # from the event counts directly (raw SQL segment)
    "trial_users": ("user", [], "u.acct_trialing"),
    "api_adopters": ("user", ["api_call_30d"], "u.api_call_30d >= 10 and u.plan_tier in ('growth', 'enterprise')"),
    "report_builders": ("user", ["report_created_7d"], "u.report_created_7d >= 1"),
    "exporters": ("user", ["export_web_30d"], "u.export_web_30d >= 2"),
    "at_risk_accounts": ("account", [], f"a.pb_onboarding_completed and not a.ms_integration_live "
                                        f"and not a.oc_churn_risk_resolved and a.csm_set and a.sub_core_paying "
                                        f"and (coalesce({HEALTH} < 70, false) or a.pb_risk_overdue or a.pb_adoption_active)"),
    "renewal_window": ("account", [], "a.sub_renewal_60d"),
    "checkin_due": ("account", [], "a.stage = 'adoption' and a.csm_set and a.industry in ('software', 'fintech', 'healthcare')"),
    "expansion_candidates": ("account", ["acct_api_call_30d"], "a.licenses > 25 and a.acct_api_call_30d >= 40 and not a.oc_expanded"),
    "low_nps_accounts": ("account", [], f"{NPS} < 0"),
    "trial_ending": ("account", [], "a.sub_trial_end_7d"),
    "churned_accounts": ("account", [], "a.status = 'churned'"),
    "past_due_accounts": ("account", [], "a.sub_past_due"),
    "onboarding_accounts": ("account", [], "a.stage = 'onboarding' and a.pb_onboarding_active"),
    "quiet_integrations": ("account", ["acct_integration_sync_14d"], "a.ms_integration_live and a.acct_integration_sync_14d = 0"),
}  # fmt: skip


@dataclass(frozen=True)
class Family:
    """A base journey by hand: entry, policies, goal/blacklist/if conditions and its step program."""

    entity: str
    segments: tuple[str, ...]
    existing_members: str
    reenrollment: str  # never | after_exit | cooldown
    features: tuple[str, ...] = ()
    cooldown: str | None = None  # a param name or a literal duration
    goal: str | None = None  # condition over u / a, with {param} placeholders
    on_goal: str = "exit"
    blacklist: str | None = None
    ifs: dict[str, str] = field(default_factory=dict)  # step id -> condition
    # (step id, kind, wait (duration or {param}), next, then, else)
    steps: tuple[tuple, ...] = ()
    refs: tuple[str, ...] = ()  # segments its criteria name (they are members of segment_membership too)


def _act(step_id, nxt):
    return (step_id, "action", None, nxt, None, None)


def _wait(step_id, wait, nxt):
    return (step_id, "wait", wait, nxt, None, None)


def _if(step_id, nxt, then_id, else_id):
    return (step_id, "if", None, nxt, then_id, else_id or nxt)


FAMILIES = {
    "onboarding_drip": Family(
        "user", ("new_users",), "skip", "never", ("report_created_30d", "report_created_14d"),
        goal="u.report_created_30d >= {goal_reports}", blacklist=COMPETITOR,
        ifs={"3": "u.report_created_14d = 0"},
        steps=(_act("1", "2"), _wait("2", "{first_wait}", "3"), _if("3", "4", "3.then.1", "3.else.1"),
               _act("3.then.1", "4"), _act("3.else.1", "4"), _wait("4", "3d", "5"), _act("5", None))),
    "account_health": Family(
        "account", ("at_risk_accounts",), "enroll", "after_exit",
        goal=f"a.oc_churn_risk_resolved or coalesce({HEALTH} > {{goal_health}}, false)", blacklist=ACCOUNT_CHURNED,
        ifs={"5": "a.ms_integration_live or a.sm_set"},
        steps=(_act("1", "2"), _act("2", "3"), _act("3", "4"), _wait("4", "{wait}", "5"),
               _if("5", None, "5.then.1", "5.else.1"), _act("5.then.1", None), _act("5.else.1", None))),
    "trial_conversion": Family(
        "user", ("trial_users",), "enroll", "never", ("plan_upgraded_30d", "login_7d"),
        goal="u.plan_upgraded_30d >= 1", blacklist=USER_ACCOUNT_CHURNED,
        ifs={"3": "u.login_7d >= {if_logins}"},
        steps=(_act("1", "2"), _wait("2", "1h", "3"), _if("3", "4", "3.then.1", "3.else.1"),
               _act("3.then.1", "4"), _act("3.else.1", "4"), _wait("4", "2d", "5"), _act("5", None)),
        refs=("churned_accounts",)),
    "renewal": Family(
        "account", ("renewal_window",), "enroll", "cooldown", cooldown="{cooldown}",
        goal="a.oc_renewed", blacklist=ACCOUNT_CHURNED, ifs={"3": "not a.oc_renewed"},
        steps=(_act("1", "2"), _wait("2", "{wait}", "3"), _if("3", None, "3.then.1", None), _act("3.then.1", None))),
    "dashboards_intro": Family(
        "user", ("dashboards_not_adopted",), "enroll", "after_exit", ("dash_7d",),
        goal="u.dash_7d >= {goal_uses}", blacklist=COMPETITOR,
        steps=(_act("1", "2"), _wait("2", "4d", "3"), _act("3", None))),
    "reengagement": Family(
        "user", ("inactive_users",), "skip", "cooldown", ("login_2d", "login_3d"), cooldown="{cooldown}",
        goal="u.login_2d >= {goal_logins}", ifs={"3": "u.login_3d = 0"},
        steps=(_act("1", "2"), _wait("2", "3d", "3"), _if("3", None, "3.then.1", None), _act("3.then.1", None))),
    "dunning": Family(
        "account", ("past_due_accounts",), "enroll", "after_exit",
        goal="not a.sub_past_due", blacklist=ACCOUNT_CHURNED, ifs={"3": "a.sub_past_due"},
        steps=(_act("1", "2"), _wait("2", "{wait}", "3"), _if("3", None, "3.then.1", None), _act("3.then.1", None)),
        refs=("churned_accounts",)),
    "api_upsell": Family(
        "user", ("api_adopters",), "enroll", "after_exit", ("plan_upgraded_30d",),
        goal="u.plan_upgraded_30d >= 1",
        blacklist=f"coalesce(u.acct_mrr > {{max_mrr}}, false) or {USER_ACCOUNT_CHURNED}",
        steps=(_act("1", "2"), _wait("2", "1w", "3"), _act("3", None))),
    "expansion": Family(
        "account", ("expansion_candidates",), "enroll", "cooldown", cooldown="90d",
        goal="a.oc_expanded", blacklist=f"coalesce({HEALTH} < {{min_health}}, false)",
        steps=(_act("1", None),)),
    "power_user_advocacy": Family(
        "user", ("power_users",), "skip", "never", ("invite_sent_30d",),
        goal="u.invite_sent_30d >= {goal_invites}", on_goal="continue",
        steps=(_act("1", None),)),
    "periodic_checkin": Family(
        "account", ("checkin_due",), "enroll", "after_exit", blacklist=ACCOUNT_CHURNED,
        steps=(_act("1", "2"), _act("2", "3"), _wait("3", "{wait}", "4"), _act("4", None))),
    "report_tips": Family(
        "user", ("report_builders",), "skip", "cooldown", cooldown="{cooldown}", steps=(_act("1", None),)),
    "nps_followup": Family(
        "account", ("low_nps_accounts",), "enroll", "never",
        goal=f"coalesce({NPS} > {{goal_nps}}, false)", blacklist=ACCOUNT_CHURNED,
        steps=(_act("1", "2"), _wait("2", "2d", "3"), _act("3", None)), refs=("churned_accounts",)),
    "export_power": Family(
        "user", ("exporters",), "skip", "never", ("report_shared_30d",),
        goal="u.report_shared_30d >= {goal_shares}", steps=(_act("1", "2"), _act("2", None))),
    "trial_ending": Family(
        "account", ("trial_ending",), "enroll", "never",
        goal="coalesce(a.max_core_active_quantity > {goal_seats}, false)", steps=(_act("1", None),)),
    "feature_discovery": Family(
        "user", ("dashboards_not_adopted", "report_builders"), "skip", "after_exit", ("alert_created_30d",),
        goal="u.alert_created_30d >= {goal_alerts}", steps=(_act("1", None),)),
    "onboarding_playbook": Family(
        "account", ("onboarding_accounts",), "enroll", "never",
        goal="a.ms_onboarding_complete", blacklist=ACCOUNT_CHURNED, ifs={"3": "not a.ms_first_report"},
        steps=(_act("1", "2"), _wait("2", "{wait}", "3"), _if("3", None, "3.then.1", None), _act("3.then.1", None)),
        refs=("churned_accounts",)),
    "champion_program": Family(
        "user", ("power_users", "api_adopters"), "skip", "cooldown", ("invite_accepted_30d",), cooldown="30d",
        goal="u.invite_accepted_30d >= 1", blacklist="coalesce(u.acct_industry = '{industry}', false)",
        steps=(_act("1", None),)),
    "integration_health": Family(
        "account", ("quiet_integrations",), "enroll", "after_exit", ("acct_integration_sync_14d",),
        goal="a.acct_integration_sync_14d >= {goal_syncs}", blacklist=ACCOUNT_CHURNED,
        steps=(_act("1", None),)),
    "csm_intro": Family(
        "user", ("new_users",), "skip", "never", blacklist="not u.acct_csm_set",
        ifs={"1": "coalesce(u.acct_mrr > {min_mrr}, false)"},
        steps=(_if("1", None, "1.then.1", "1.else.1"), _act("1.then.1", None), _act("1.else.1", None))),
}  # fmt: skip

COUNT_KINDS = ("entered", "enrolled", "suppressed", "unenrolled", "goal_achieved", "completed", "actions_due")


@dataclass
class RunCounts:
    """What one run decided: members per segment, and per journey the counts of COUNT_KINDS."""

    membership: dict[str, int] = field(default_factory=dict)
    journeys: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> journey -> count


def seconds(duration: str) -> int:
    return int(duration[:-1]) * {"m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}[duration[-1]]


class Baseline:
    """The hand-written pipeline over the raw tables of one DuckDB database; state in schema bench_baseline."""

    def __init__(self, con: duckdb.DuckDBPyConnection, specs: list[JourneySpec], raw: str = "raw"):
        self.con, self.specs, self.raw = con, specs, raw
        self.timings: list[tuple[str, float]] = []  # (statement, seconds), to see where the time goes
        self.families = {s.id: FAMILIES[s.base] for s in specs}
        self.segments = sorted({seg for s in specs for seg in FAMILIES[s.base].segments + FAMILIES[s.base].refs})
        self.features = sorted({f for seg in self.segments for f in SEGMENTS[seg][1]}
                               | {f for s in specs for f in FAMILIES[s.base].features})

    def sql(self, statement: str, params: list | None = None):
        start = time.perf_counter()
        result = self.con.execute(statement, params or [])
        words = statement.split()
        label = " ".join(words[:6]) if words[:3] != ["create", "or", "replace"] else " ".join(words[3:6])
        self.timings.append((label, time.perf_counter() - start))
        return result

    def setup(self) -> None:
        """Empty state (a first run)."""
        self.sql(f"drop schema if exists {S} cascade")
        self.sql(f"create schema {S}")
        self.sql(f"create table {S}.membership (segment_id varchar, entity_id varchar)")
        self.sql(f"create table {S}.journey_segments (journey_id varchar, segment_id varchar)")
        self.sql(f"""create table {S}.enrollments (journey_id varchar, entity_type varchar, entity_id varchar,
                     enrolled_at timestamp, status varchar, goal_achieved_at timestamp, ended_at timestamp,
                     cursor_step varchar, cursor_at timestamp)""")
        self.sql(f"""create table {S}.actions (journey_id varchar, entity_id varchar, enrolled_at timestamp,
                     step_id varchar, due_at timestamp, run_at timestamp)""")

    # ------------------------------------------------------------------ one run

    def run(self, as_of: dt.datetime) -> RunCounts:
        T = f"timestamp '{as_of.isoformat(sep=' ')}'"
        self._journey_tables()
        self._features(T)
        self._membership(T)
        self.sql("begin")
        try:
            counts = self._transitions(T)
            self.sql("commit")
        except BaseException:
            self.sql("rollback")
            raise
        return counts

    def _param(self, text: str | None, spec: JourneySpec) -> str | None:
        return None if text is None else text.format(**spec.params)

    def _journey_tables(self) -> None:
        jrows, srows, urows, steps = [], [], [], []
        for spec in self.specs:
            fam = self.families[spec.id]
            cooldown = seconds(self._param(fam.cooldown, spec)) if fam.cooldown else None
            jrows.append((spec.id, fam.entity, fam.existing_members, fam.reenrollment, cooldown, fam.on_goal,
                          fam.steps[0][0] if fam.steps else None))
            srows += [(spec.id, seg) for seg in fam.segments]
            urows += [(spec.id, other) for other in spec.unenroll_from]
            for step_id, kind, wait, nxt, then_id, else_id in fam.steps:
                wait_s = seconds(self._param(wait, spec)) if wait else None
                steps.append((spec.id, step_id, kind, wait_s, nxt, then_id, else_id))
        self.sql("""create or replace temp table _j (journey_id varchar, entity_type varchar, existing_members varchar,
                    reenrollment varchar, cooldown_s bigint, on_goal varchar, first_step varchar)""")
        self.sql("create or replace temp table _js (journey_id varchar, segment_id varchar)")
        self.sql("create or replace temp table _ju (journey_id varchar, other varchar)")
        self.sql("""create or replace temp table _steps (journey_id varchar, step_id varchar, kind varchar, wait_s bigint,
                    next_id varchar, then_id varchar, else_id varchar)""")
        for table, rows in (("_j", jrows), ("_js", srows), ("_ju", urows), ("_steps", steps)):
            if rows:
                self.con.executemany(f"insert into {table} values ({', '.join('?' * len(rows[0]))})", rows)

    def _features(self, T: str) -> None:
        r = self.raw
        # sum(case ...) rather than count(*) filter (...): twice as fast in DuckDB 1.x on 2 cores
        # and integer counts: a sum of integers is a HUGEINT in DuckDB, slow to add up again per user and account
        counts = [f"sum(case when {EVENT_FEATURES[f][1].format(T=T)} then 1 else 0 end)::integer as {f}"
                  for f in self.features]
        names = sorted({EVENT_FEATURES[f][1].split("'")[1] for f in self.features
                        if EVENT_FEATURES[f][1].startswith("e.event_name")})
        window = f"e.occurred_at >= {T} - interval {WIDEST_WINDOW_DAYS} day"
        if names:
            window += " and e.event_name in (" + ", ".join(f"'{n}'" for n in names) + ")"
        if "events_7d" in self.features:  # every event of the last 7 days counts for power_users
            window = f"(e.occurred_at > {T} - interval 7 day or ({window}))"
        if counts:
            self.sql(f"""create or replace temp table _ev as
                         select e.user_id, e.account_id, {', '.join(counts)}
                         from {r}.events as e where e.occurred_at <= {T} and {window}
                         group by e.user_id, e.account_id""")
        user_f = [f for f in self.features if EVENT_FEATURES[f][0] == "user"]
        acct_f = [f for f in self.features if EVENT_FEATURES[f][0] == "account"]
        playbook_live = "(p.enrolled_at is null or p.enrolled_at <= {T})".format(T=T)
        active = f"{playbook_live} and (p.status = 'active' or p.completed_at > {T})"
        self.sql(f"""
            create or replace temp table _a as
            with pb as (
                select account_id,
                    bool_or(playbook = 'onboarding' and {playbook_live} and status = 'completed'
                            and (completed_at is null or completed_at <= {T})) as pb_onboarding_completed,
                    bool_or(playbook = 'onboarding' and {active}) as pb_onboarding_active,
                    bool_or(playbook = 'adoption_push' and {active}) as pb_adoption_active,
                    bool_or(playbook = 'risk_mitigation' and {active} and due_at < {T}) as pb_risk_overdue
                from {r}.playbook_enrollments as p group by account_id
            ),
            ms as (
                select account_id,
                    bool_or(milestone = 'integration_live') as ms_integration_live,
                    bool_or(milestone = 'first_report') as ms_first_report,
                    bool_or(milestone = 'onboarding_complete') as ms_onboarding_complete
                from {r}.milestones where achieved_at is null or achieved_at <= {T} group by account_id
            ),
            oc as (
                select account_id,
                    bool_or(outcome = 'churn_risk_resolved') as oc_churn_risk_resolved,
                    bool_or(outcome = 'expanded') as oc_expanded,
                    bool_or(outcome = 'renewed') as oc_renewed
                from {r}.outcomes where met_at is null or met_at <= {T} group by account_id
            ),
            team as (
                select account_id, bool_or(role = 'csm') as csm_set, bool_or(role = 'sales_manager') as sm_set
                from {r}.account_team group by account_id
            ),
            subs as (
                select account_id,
                    bool_or(status in ('active', 'past_due') and product_name = 'Core Platform') as sub_core_paying,
                    bool_or(status = 'active' and next_billing_on::timestamp between {T} and {T} + interval 60 day)
                        as sub_renewal_60d,
                    bool_or(status = 'trialing') as sub_trialing,
                    bool_or(status = 'trialing' and trial_ends_on::timestamp between {T} and {T} + interval 7 day)
                        as sub_trial_end_7d,
                    bool_or(status = 'past_due') as sub_past_due,
                    max(plan_quantity) filter (where status = 'active' and product_name = 'Core Platform')
                        as max_core_active_quantity
                from {r}.subscriptions group by account_id
            ),
            attrs as (
                select entity_id as account_id, max(value) filter (where name = 'health_score') as health_score,
                    max(value) filter (where name = 'nps') as nps, max(value) filter (where name = 'industry') as industry
                from {r}.custom_attributes
                where entity_type = 'account' and name in ('health_score', 'nps', 'industry') group by entity_id
            ){''.join(f''',
            ev as (select account_id, {', '.join(f'sum({f})::integer as {f}' for f in acct_f)} from _ev group by account_id)''' if acct_f else [])}
            select a.account_id, a.status, a.stage, a.licenses, a.mrr, attrs.health_score, attrs.nps, attrs.industry,
                coalesce(pb.pb_onboarding_completed, false) as pb_onboarding_completed,
                coalesce(pb.pb_onboarding_active, false) as pb_onboarding_active,
                coalesce(pb.pb_adoption_active, false) as pb_adoption_active,
                coalesce(pb.pb_risk_overdue, false) as pb_risk_overdue,
                coalesce(ms.ms_integration_live, false) as ms_integration_live,
                coalesce(ms.ms_first_report, false) as ms_first_report,
                coalesce(ms.ms_onboarding_complete, false) as ms_onboarding_complete,
                coalesce(oc.oc_churn_risk_resolved, false) as oc_churn_risk_resolved,
                coalesce(oc.oc_expanded, false) as oc_expanded, coalesce(oc.oc_renewed, false) as oc_renewed,
                coalesce(team.csm_set, false) as csm_set, coalesce(team.sm_set, false) as sm_set,
                coalesce(subs.sub_core_paying, false) as sub_core_paying,
                coalesce(subs.sub_renewal_60d, false) as sub_renewal_60d,
                coalesce(subs.sub_trialing, false) as sub_trialing,
                coalesce(subs.sub_trial_end_7d, false) as sub_trial_end_7d,
                coalesce(subs.sub_past_due, false) as sub_past_due, subs.max_core_active_quantity
                {''.join(f', coalesce(ev.{f}, 0) as {f}' for f in acct_f)}
            from {r}.accounts as a
            left join pb using (account_id) left join ms using (account_id) left join oc using (account_id)
            left join team using (account_id) left join subs using (account_id) left join attrs using (account_id)
            {'left join ev using (account_id)' if acct_f else ''}""")
        ev_users = (f"left join (select user_id, {', '.join(f'sum({f})::integer as {f}' for f in user_f)} from _ev group by user_id) "
                    f"as ev on ev.user_id = u.user_id") if user_f else ""
        self.sql(f"""
            create or replace temp table _u as
            select u.user_id, u.account_id, u.created_at, u.last_seen_at, u.email, ca.plan_tier,
                a.status as acct_status, a.mrr as acct_mrr, a.industry as acct_industry,
                coalesce(a.csm_set, false) as acct_csm_set, coalesce(a.sub_trialing, false) as acct_trialing
                {''.join(f', coalesce(ev.{f}, 0) as {f}' for f in user_f)}
            from {r}.users as u
            left join _a as a on a.account_id = u.account_id
            left join (select entity_id, max(value) as plan_tier from {r}.custom_attributes
                       where entity_type = 'user' and name = 'plan_tier' group by entity_id) as ca on ca.entity_id = u.user_id
            {ev_users}""")

    def _membership(self, T: str) -> None:
        parts = []
        for seg in self.segments:
            entity, _, cond = SEGMENTS[seg]
            if seg == "power_users":
                parts.append("select 'power_users' as segment_id, 'user' as entity_type, user_id as entity_id "
                             "from _ev group by user_id having sum(events_7d) >= 12")
            elif entity == "user":
                parts.append(f"select '{seg}' as segment_id, 'user' as entity_type, u.user_id as entity_id from _u as u "
                             f"where {cond.format(T=T)}")
            else:
                parts.append(f"select '{seg}' as segment_id, 'account' as entity_type, a.account_id as entity_id from _a as a "
                             f"where {cond.format(T=T)}")
        self.sql("create or replace temp table _m as " + "\nunion all\n".join(parts))

    def _matches(self, table: str, scope: str, which: str) -> None:
        """Rows of `scope` (journey_id, entity_type, entity_id) whose journey's `which` condition holds."""
        parts = []
        for entity, alias, key in (("user", "u", "user_id"), ("account", "a", "account_id")):
            cases = [(s.id, self._param(getattr(self.families[s.id], which), s)) for s in self.specs
                     if self.families[s.id].entity == entity and getattr(self.families[s.id], which)]
            if not cases:
                continue
            whens = " ".join(f"when '{jid}' then ({cond})" for jid, cond in cases)
            parts.append(f"""select c.journey_id, c.entity_id from {scope} as c
                             inner join _{alias} as {alias} on {alias}.{key} = c.entity_id
                             where c.entity_type = '{entity}' and coalesce(case c.journey_id {whens} else false end, false)""")
        self.sql(f"create or replace temp table {table} as "
                 + ("\nunion all\n".join(parts) or "select null::varchar as journey_id, null::varchar as entity_id where false"))

    def _conditions(self) -> None:
        parts = []
        for entity, alias, key in (("user", "u", "user_id"), ("account", "a", "account_id")):
            for spec in self.specs:
                fam = self.families[spec.id]
                if fam.entity != entity:
                    continue
                for step_id, cond in fam.ifs.items():
                    parts.append(f"""select journey_id, '{step_id}' as step_id, entity_id from {S}.enrollments as c
                                     inner join _{alias} as {alias} on {alias}.{key} = c.entity_id
                                     where c.status = 'active' and c.journey_id = '{spec.id}'
                                       and coalesce({self._param(cond, spec)}, false)""")
        self.sql("create or replace temp table _cond as "
                 + ("\nunion all\n".join(parts) or "select null::varchar as journey_id, null::varchar as step_id, "
                                                   "null::varchar as entity_id where false"))

    def _transitions(self, T: str) -> RunCounts:
        # 1. entering: members now that were not members at the last run (a new (journey, segment): existing_members)
        self.sql(f"""create or replace temp table _entering as
            select distinct js.journey_id, m.entity_type, m.entity_id
            from _js as js inner join _j as j using (journey_id) inner join _m as m using (segment_id)
            left join {S}.journey_segments as t on t.journey_id = js.journey_id and t.segment_id = js.segment_id
            left join {S}.membership as p on p.segment_id = m.segment_id and p.entity_id = m.entity_id
            where case when t.journey_id is null then j.existing_members = 'enroll' else p.entity_id is null end""")
        # 2. candidates: not active, allowed by reenrollment; blacklisted ones are suppressed
        self.sql(f"""create or replace temp table _cand as
            select e.* from _entering as e inner join _j as j using (journey_id)
            left join (select journey_id, entity_id, bool_or(status = 'active') as active, max(enrolled_at) as last_at
                       from {S}.enrollments group by journey_id, entity_id) as h using (journey_id, entity_id)
            where h.journey_id is null
               or (not h.active and (j.reenrollment = 'after_exit'
                                     or (j.reenrollment = 'cooldown' and h.last_at + to_seconds(j.cooldown_s) <= {T})))""")
        self.sql(f"""create or replace temp table _scope as
            select journey_id, entity_type, entity_id from _cand
            union select journey_id, entity_type, entity_id from {S}.enrollments where status = 'active'""")
        self._matches("_x", "_scope", "blacklist")
        self.sql("""create or replace temp table _new as
            select c.*, x.entity_id is not null as blacklisted from _cand as c
            left join _x as x using (journey_id, entity_id)""")
        self.sql(f"""insert into {S}.enrollments
            select n.journey_id, n.entity_type, n.entity_id, {T}, 'active', null, null, j.first_step, {T}
            from _new as n inner join _j as j using (journey_id) where not n.blacklisted""")
        # 3. unenroll from other journeys (active enrollments, including ones made just now)
        self.sql(f"""create or replace temp table _ended as
            select distinct e.journey_id, e.entity_id, e.enrolled_at
            from _new as n inner join _ju as u on u.journey_id = n.journey_id
            inner join {S}.enrollments as e on e.journey_id = u.other and e.entity_id = n.entity_id and e.status = 'active'
            where not n.blacklisted""")
        self._end("_ended")
        # 4. blacklist
        self.sql(f"""create or replace temp table _blacklisted as
            select e.journey_id, e.entity_id, e.enrolled_at from {S}.enrollments as e
            inner join _x as x using (journey_id, entity_id) where e.status = 'active'""")
        self._end("_blacklisted")
        # 5. goal, for active enrollments without one
        self.sql(f"""create or replace temp table _goal_scope as
            select journey_id, entity_type, entity_id from {S}.enrollments
            where status = 'active' and goal_achieved_at is null""")
        self._matches("_g", "_goal_scope", "goal")
        self.sql(f"""update {S}.enrollments as e set goal_achieved_at = {T},
                         status = case when j.on_goal = 'exit' then 'goal_achieved' else status end,
                         ended_at = case when j.on_goal = 'exit' then {T} end
                     from _g as g, _j as j
                     where e.journey_id = g.journey_id and e.entity_id = g.entity_id and j.journey_id = e.journey_id
                       and e.status = 'active' and e.goal_achieved_at is null""")
        # 6. actions: walk each active enrollment's program as far as T allows
        self._conditions()
        self.sql(f"""create or replace temp table _walk as
            with recursive w (journey_id, entity_id, enrolled_at, step_id, reached_at, kind, depth) as (
                select e.journey_id, e.entity_id, e.enrolled_at, e.cursor_step, e.cursor_at, s.kind, 0
                from {S}.enrollments as e
                inner join _steps as s on s.journey_id = e.journey_id and s.step_id = e.cursor_step
                where e.status = 'active' and e.cursor_at <= {T}
                union all
                select w.journey_id, w.entity_id, w.enrolled_at,
                       case when s.kind = 'if' then (case when c.entity_id is not null then s.then_id else s.else_id end)
                            else s.next_id end,
                       case when s.kind = 'wait' then w.reached_at + to_seconds(s.wait_s) else w.reached_at end,
                       s2.kind, w.depth + 1
                from w inner join _steps as s on s.journey_id = w.journey_id and s.step_id = w.step_id
                left join _cond as c on c.journey_id = w.journey_id and c.step_id = w.step_id and c.entity_id = w.entity_id
                left join _steps as s2 on s2.journey_id = w.journey_id
                    and s2.step_id = (case when s.kind = 'if' then (case when c.entity_id is not null then s.then_id
                                                                         else s.else_id end) else s.next_id end)
                where w.reached_at <= {T}
            )
            select * from w""")
        self.sql(f"""insert into {S}.actions
            select journey_id, entity_id, enrolled_at, step_id, reached_at, {T} from _walk where kind = 'action' and reached_at <= {T}""")
        self.sql(f"""update {S}.enrollments as e
            set cursor_step = f.step_id, cursor_at = f.reached_at,
                status = case when f.step_id is null and f.reached_at <= {T} then 'completed' else 'active' end,
                ended_at = case when f.step_id is null and f.reached_at <= {T} then f.reached_at end
            from (select * from _walk qualify row_number() over (partition by journey_id, entity_id, enrolled_at
                                                                  order by depth desc) = 1) as f
            where e.journey_id = f.journey_id and e.entity_id = f.entity_id and e.enrolled_at = f.enrolled_at""")
        counts = self._counts(T)
        # the membership and journey/segment pairs of this run: the previous side of the next diff
        self.sql(f"create or replace table {S}.membership as select segment_id, entity_id from _m")
        self.sql(f"""insert into {S}.journey_segments select * from _js
                     except select journey_id, segment_id from {S}.journey_segments""")
        return counts

    def _end(self, table: str) -> None:
        self.sql(f"""update {S}.enrollments as e set status = 'unenrolled'
                     from {table} as t where e.journey_id = t.journey_id and e.entity_id = t.entity_id
                       and e.enrolled_at = t.enrolled_at and e.status = 'active'""")

    def _counts(self, T: str) -> RunCounts:
        def by_journey(query: str) -> dict[str, int]:
            return {j: n for j, n in self.sql(query).fetchall() if n}

        counts = RunCounts()
        counts.membership = dict(self.sql("select segment_id, count(*) from _m group by segment_id").fetchall())
        for seg in self.segments:
            counts.membership.setdefault(seg, 0)
        k = counts.journeys
        k["entered"] = by_journey("select journey_id, count(*) from _entering group by 1")
        k["enrolled"] = by_journey("select journey_id, count(*) from _new where not blacklisted group by 1")
        k["suppressed"] = by_journey("select journey_id, count(*) from _new where blacklisted group by 1")
        k["unenrolled"] = by_journey("select journey_id, count(*) from (select journey_id from _ended "
                                     "union all select journey_id from _blacklisted) group by 1")
        k["goal_achieved"] = by_journey("select journey_id, count(*) from _g group by 1")
        k["completed"] = self._completed_counts(T)
        k["actions_due"] = by_journey(f"select journey_id, count(*) from {S}.actions where run_at = {T} group by 1")
        return counts

    def _completed_counts(self, T: str) -> dict[str, int]:
        return {j: n for j, n in self.sql(
            f"""select journey_id, count(*) from (
                    select * from _walk qualify row_number() over (partition by journey_id, entity_id, enrolled_at
                                                                   order by depth desc) = 1)
                where step_id is null and reached_at <= {T} group by 1""").fetchall() if n}

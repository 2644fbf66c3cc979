"""The ~1% change between the two benchmark runs, applied with SQL to the raw tables (DuckDB-side).

Between T0 and T1 (one hour later): 0.2% new users (with attributes and first events), 1% of the users
send 2-9 new events (and are seen again), 2% of the accounts get a new health score, 1% a new NPS
answer, 0.3% of the users change plan tier, 0.5% of the accounts churn and a quarter of the past-due
subscriptions are paid. Row choices are hashes of keys, so a size always gets the same change.
"""

from __future__ import annotations

import datetime as dt

import duckdb


def _r(salt: str, key: str) -> str:
    """A uniform draw in [0, 1) fixed by the key and the salt."""
    return f"((hash(hash({key}, '{salt}')) >> 11) / 9007199254740992.0)"


def apply_changes(con: duckdb.DuckDBPyConnection, t0: dt.datetime, t1: dt.datetime, schema: str = "raw") -> dict[str, int]:
    """Apply the change in one transaction; returns what changed (rows per kind)."""
    span = int((t1 - t0).total_seconds())
    at = f"(timestamp '{t0.isoformat(sep=' ')}' + to_seconds(1 + floor({{r}} * {span - 1})::bigint))"
    users = con.execute(f"select count(*) from {schema}.users").fetchone()[0]
    new_users = max(1, users // 500)
    counts: dict[str, int] = {}
    con.execute("begin")
    try:
        con.execute(
            f"""create or replace temp table _bench_new_users as
                with picked as (
                    select i, (select list(account_id order by account_id) from {schema}.accounts where status <> 'churned') as accs
                    from range({new_users}) t(i)
                )
                select printf('usr_b%07d', i) as user_id,
                       accs[1 + floor({_r('acc', 'i')} * len(accs))::integer] as account_id,
                       printf('new.user%d@bench.example', i) as email, 'New' as first_name, printf('User%d', i) as last_name,
                       {at.format(r=_r('created', 'i'))} as created_at
                from picked"""
        )
        counts["new_users"] = con.execute(
            f"""insert into {schema}.users (user_id, account_id, email, first_name, last_name, created_at, last_seen_at)
                select user_id, account_id, email, first_name, last_name, created_at, created_at from _bench_new_users"""
        ).fetchone()[0]
        con.execute(
            f"""insert into {schema}.custom_attributes (entity_type, entity_id, name, value)
                select 'user', user_id, 'plan_tier', 'starter' from _bench_new_users
                union all select 'user', user_id, 'timezone', 'UTC' from _bench_new_users"""
        )
        # new events: every new user logs in; 1% of the existing users are active in the hour
        names = "['login', 'login', 'dashboard_viewed', 'feature_used', 'report_created', 'report_viewed', 'api_call', " \
                "'export_csv', 'integration_sync', 'plan_upgraded', 'invite_sent', 'alert_created']"  # fmt: skip
        features = "['dashboards', 'exports', 'alerts', 'api']"
        con.execute(
            f"""create or replace temp table _bench_active as
                select user_id, account_id, 2 + floor({_r('n', 'user_id')} * 8)::integer as n
                from {schema}.users where {_r('active', 'user_id')} < 0.01 and user_id not like 'usr_b%'
                union all
                select user_id, account_id, 3 from _bench_new_users"""
        )
        counts["new_events"] = con.execute(
            f"""insert into {schema}.events (event_id, user_id, account_id, event_name, properties, occurred_at)
                select printf('evt_b_%s_%d', user_id, k), user_id, account_id,
                       case when k = 0 then 'login' else {names}[1 + floor({_r('name', 'user_id || k')} * 12)::integer] end,
                       ('{{"feature": "' || {features}[1 + floor({_r('feat', 'user_id || k')} * 4)::integer]
                        || '", "duration_ms": 120, "source": {{"channel": "'
                        || case when {_r('ch', 'user_id || k')} < 0.7 then 'web' else 'mobile' end || '"}}}}')::json,
                       {at.format(r=_r('at', 'user_id || k'))}
                from _bench_active, range(n) t(k)"""
        ).fetchone()[0]
        con.execute(
            f"""update {schema}.users as u set last_seen_at = x.seen
                from (select e.user_id, max(e.occurred_at) as seen from {schema}.events as e
                      where e.event_id like 'evt_b_%' group by e.user_id) as x
                where u.user_id = x.user_id"""
        )
        counts["active_users"] = con.execute("select count(*) from _bench_active").fetchone()[0]
        # attribute edits
        counts["health_edits"] = con.execute(
            f"""update {schema}.custom_attributes set value = cast(floor({_r('hs', 'entity_id')} * 100)::integer as varchar)
                where entity_type = 'account' and name = 'health_score' and {_r('edit_hs', 'entity_id')} < 0.02"""
        ).fetchone()[0]
        counts["nps_edits"] = con.execute(
            f"""update {schema}.custom_attributes set value = cast(floor(-60 + 150 * {_r('nps', 'entity_id')})::integer as varchar)
                where entity_type = 'account' and name = 'nps' and {_r('edit_nps', 'entity_id')} < 0.01"""
        ).fetchone()[0]
        counts["plan_tier_edits"] = con.execute(
            f"""update {schema}.custom_attributes set value = 'enterprise'
                where entity_type = 'user' and name = 'plan_tier' and {_r('edit_tier', 'entity_id')} < 0.003"""
        ).fetchone()[0]
        counts["churned_accounts"] = con.execute(
            f"""update {schema}.accounts set status = 'churned', stage = 'churned', mrr = 0
                where status <> 'churned' and {_r('churn', 'account_id')} < 0.005"""
        ).fetchone()[0]
        counts["paid_subscriptions"] = con.execute(
            f"""update {schema}.subscriptions set status = 'active'
                where status = 'past_due' and {_r('paid', 'subscription_id')} < 0.25"""
        ).fetchone()[0]
        con.execute("drop table _bench_new_users; drop table _bench_active")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return counts

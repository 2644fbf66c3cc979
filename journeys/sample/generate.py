"""Generate the nine source tables of a simulated SaaS world, entirely inside DuckDB.

The world is fixed by (users, origin); a snapshot at `as_of` holds what exists at that time.
Randomness is `hash()` of row keys (no random()), so the same parameters always give the same rows
(and byte-identical files), and nothing loops over rows in Python: 1M users and ~51M events take
~11 s in memory, ~19 s into a database file, on 2 cores.

Time line: accounts are created over the 400 days before origin (5% of them over the 30 days
after); events fall between max(created_at, origin - 90d) and origin + 30d. Each user's events
are stratified in time (event k lies in slot k of its window), so `last_seen_at` at any as_of
is computed from the slot arithmetic instead of aggregating the events.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import duckdb

from journeys.contracts import SOURCE_TABLES
from journeys.sample.vocabulary import (
    ADD_ONS, COMPANIES, COMPANY_SUFFIXES, CSMS, EVENT_WEIGHTS, FEATURE_EVENTS, FEATURES, FIRST_NAMES,
    INDUSTRIES, LAST_NAMES, MILESTONES, OUTCOMES, PLANS, PLAYBOOKS, SALES_MANAGERS, TIMEZONES,
)


def _rand(salt: str, *keys: str) -> str:
    """SQL for a uniform double in [0, 1) fixed by the keys and the salt (53 bits of their hash).

    The outer hash() matters: DuckDB combines a multi-argument hash by xor-ing the last argument in,
    so draws that differ only by salt would be strongly correlated without it."""
    return f"((hash(hash({', '.join(keys)}, '{salt}')) >> 11) / 9007199254740992.0)"


def _pick(values, r: str) -> str:
    """SQL picking one of `values` (repeat a value to weight it) with the uniform draw `r`."""
    return "[" + ", ".join(f"'{v}'" for v in values) + f"][1 + floor({r} * {len(values)})::integer]"


def _ts(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return f"timestamp '{value.isoformat(sep=' ')}'"


def _event_at(k: str) -> str:
    """When user u's event k happens: a random point in the k-th of its n_events equal slots."""
    return f"u.start_at + _jw_secs(({k} + {_rand('at', 'u.i', k)}) * u.slot_s)"


def _world_sql(users: int, o: str) -> list[str]:
    """The whole world as temp tables (accounts, subscriptions, users, properties), independent of as_of."""
    accounts = max(1, users // 20)
    r = _rand
    feature_rows = ", ".join(f"""({n + 1}, '"{f}"')""" for n, f in enumerate(FEATURES))
    prices = " ".join(f"when '{k}' then {v}" for k, v in {**PLANS, **ADD_ONS}.items())
    return [
        "create or replace temp macro _jw_secs(x) as to_seconds(floor(x)::bigint)",
        "create or replace temp macro _jw_days(x) as to_seconds(floor(x * 86400)::bigint)",
        f"""create or replace temp table _jw_accounts as
        with base as (
            select i as a, {r('new', 'i')} < 0.05 as is_new, {r('created', 'i')} as r_created,
                {r('lost', 'i')} as r_lost, {r('lost_at', 'i')} as r_lost_at,
                {_pick(COMPANIES, r('company', 'i'))} as company,
                {_pick(COMPANY_SUFFIXES, r('suffix', 'i'))} as suffix
            from range(1, {accounts} + 1) t(i)
        ),
        dated as (
            select *, case when is_new then {o} + _jw_days(r_created * 30)
                           else {o} - _jw_days(1 + r_created * 399) end as created_at
            from base
        )
        select a, printf('acc_%06d', a) as account_id, is_new, created_at, company || ' ' || suffix as name,
            lower(replace(company, ' ', '')) || a || '.example' as domain,
            -- a lost account cancels everything between 90 and 30 days before origin
            case when not is_new and created_at < {o} - interval 120 day and r_lost < 0.09
                 then {o} - _jw_days(30 + r_lost_at * 60) end as lost_at
        from dated order by a""",
        f"""create or replace temp table _jw_subscriptions as
        with base as (
            select acc.*, s, {r('fate', 'acc.a', 's')} as r_fate,
                {r('date', 'acc.a', 's')} as r_date, {r('bill', 'acc.a', 's')} as r_bill,
                {r('cancel', 'acc.a', 's')} as r_cancel, {r('qty', 'acc.a', 's')} as r_qty,
                {r('plan', 'acc.a', 's')} as r_plan,
                is_new or s > 0 and lost_at is null and {r('kind', 'acc.a', 's')} < 0.3 as is_trial
            from _jw_accounts acc,
                range(1 + ({r('subs1', 'acc.a')} < 0.35)::integer
                      + ({r('subs2', 'acc.a')} < 0.15)::integer) t(s)  -- 1.5 subscriptions per account
        ),
        dated as (
            select *,
                case when s = 0 then created_at::date
                     when is_trial then
                         greatest(created_at, {o} - interval 14 day + _jw_days(r_date * 44))::date
                     else (created_at
                           + _jw_secs(r_date * date_diff('second', created_at, coalesce(lost_at, {o}))))::date
                end as created_on,
                case when lost_at is not null then 'cancelled' when is_trial and r_fate < 0.65 then 'convert'
                     when is_trial then 'lapse' when r_fate < 0.07 then 'past_due'
                     when r_fate < 0.15 and s > 0 then 'cancelled' else 'active' end as fate,
                -- renewal date: 12% within 60 days of origin, the rest from origin - 30d to + 365d
                case when r_fate < 0.07 then ({o} - _jw_days(1 + r_bill * 29))::date
                     when r_bill < 0.12 then ({o} + _jw_days(r_bill / 0.12 * 60))::date
                     else ({o} - interval 30 day + _jw_days((r_bill - 0.12) / 0.88 * 395))::date
                end as bill_on,
                case when s = 0 then case when r_plan < 0.5 then 'Starter' when r_plan < 0.85 then 'Growth'
                                          else 'Enterprise' end
                     else {_pick(ADD_ONS, 'r_plan')} end as plan_name
            from base
        )
        select *, printf('sub_%06d_%d', a, s + 1) as subscription_id,
            case when s = 0 then 'Core Platform' else plan_name end as product_name,
            case when s = 0 then plan_name else 'Standard' end as plan_display,
            case when s = 0 then 3 + floor(r_qty * r_qty * 60) else 1 + floor(r_qty * 20)
                end as plan_quantity,
            case plan_name {prices} end as plan_unit_price,
            case when fate = 'cancelled' then greatest(created_on + 1, coalesce(lost_at::date,
                created_on + (r_cancel * date_diff('day', created_on, {o}::date))::integer)) end as cancel_on,
            case when is_trial then created_on + 14 end as trial_ends_on
        from dated order by a, s""",
        # every distinct event properties document, rendered once: (feature, duration_ms, source.channel)
        f"""create or replace temp table _jw_properties as
        select list(concat('{{"feature": ', f, ', "duration_ms": ', 50 + 2 * d * d,
                           ', "source": {{"channel": "', c, '"}}}}')::json order by f_i, d, c_i) as choices
        from (values (0, 'null'), {feature_rows}) f(f_i, f),
            range(100) t(d), (values (0, 'web'), (1, 'web'), (2, 'web'), (3, 'mobile')) c(c_i, c)""",
        f"""create or replace temp table _jw_users as
        with base as (
            select i,
                case when i <= {accounts} then i else 1 + floor({r('account', 'i')} * {accounts})::bigint
                end as a,
                {r('created', 'i')} as r_created, {r('late', 'i')} as r_late, {r('churn', 'i')} as r_churn,
                {r('end', 'i')} as r_end, {r('rate', 'i')} as r_rate, {r('never', 'i')} as r_never,
                {r('case', 'i')} as r_case, {r('domain', 'i')} as r_domain,
                {_pick(FIRST_NAMES, r('first', 'i'))} as first, {_pick(LAST_NAMES, r('last', 'i'))} as last
            from range(1, {users} + 1) t(i)
        ),
        created as (
            select b.*, acc.account_id, acc.domain, acc.lost_at,
                case when i <= {accounts} then acc.created_at  -- each account's founding user
                     when acc.is_new then acc.created_at
                         + _jw_secs(r_created * date_diff('second', acc.created_at, {o} + interval 30 day))
                     when acc.lost_at is null and r_late < 0.02 then {o} + _jw_days(r_created * 30)
                     else acc.created_at
                         + _jw_secs(r_created
                                    * date_diff('second', acc.created_at, coalesce(acc.lost_at, {o})))
                end as created_at
            from base b join _jw_accounts acc using (a)
        ),
        windows as (
            select *, greatest(created_at, {o} - interval 90 day) as start_at,
                -- churned users have no events in the 30 days before origin, nor after
                case when lost_at is not null then lost_at
                     when r_churn < 0.035 and created_at < {o} - interval 45 day then {o} - interval 31 day
                end as churn_at
            from created
        ),
        ends as (
            select *, case when churn_at is null then {o} + interval 30 day
                else start_at + _jw_secs((0.3 + 0.7 * r_end) * date_diff('second', start_at, churn_at))
                end as end_at
            from windows
        ),
        counted as (
            select *, case when r_never < 0.02 then 0 else greatest(1, round((0.2 + 2.4 * r_rate * r_rate)
                * date_diff('second', start_at, end_at) / 86400))::integer end as n_events
            from ends
        )
        select *, case when n_events > 0 then date_diff('second', start_at, end_at) / n_events end as slot_s,
            case when r_domain < 0.004 then 'competitor.com' else domain end as email_domain,
            printf('usr_%07d', i) as user_id
        from counted order by i""",
    ]


def _snapshot_sql(schema: str, a: str) -> dict[str, str]:
    """One `select` per source table: the world as it is at as_of `a`."""
    d, r = f"({a})::date", _rand
    # the first yearly renewal of {x} after d
    roll = "({x} + to_years((floor(date_diff('day', {x}, " + d + ") / 365) + 1)::integer))"
    # the user's last event slot that starts by as_of (its event may still fall after as_of)
    last_slot = (f"case when u.n_events = 0 or u.start_at > {a} then null "
                 f"when u.slot_s = 0 then u.n_events - 1 "
                 f"else least(u.n_events - 1, floor(date_diff('second', u.start_at, {a}) / u.slot_s)) end")
    weighted_names = [n for n, w in EVENT_WEIGHTS.items() for _ in range(w)]
    # one hash per event feeds its name and properties from separate bit ranges (cheaper than one per field);
    # constant lists rather than `in (...)`, which DuckDB plans as a join
    names = "[" + ", ".join(f"'{n}'" for n in weighted_names) + "]"
    has_feature = "[" + ", ".join(str(n in FEATURE_EVENTS).lower() for n in weighted_names) + "]"
    feature = f"case when {has_feature}[n] then 1 + (h >> 12) % {len(FEATURES)} else 0 end"
    existing = f"from _jw_accounts where created_at <= {a}"
    return {
        "subscriptions": f"""
        with subs as (
            select *, case when trial_ends_on > {d} then 'trialing' when fate = 'convert' then 'active'
                           when fate = 'lapse' then 'cancelled' when cancel_on <= {d} then 'cancelled'
                           when fate = 'past_due' and bill_on <= {d} then 'past_due'
                           else 'active' end as status
            from _jw_subscriptions where created_on <= {d} and created_at <= {a}  -- created_at: the account's
        )
        select subscription_id::varchar as subscription_id, account_id::varchar as account_id,
            status::varchar as status, (plan_quantity * plan_unit_price * 12)::double as amount,
            (case when status in ('active', 'past_due') then plan_quantity * plan_unit_price else 0 end)
                ::double as mrr,
            product_name::varchar as product_name, plan_display::varchar as plan_name,
            plan_quantity::integer as plan_quantity, plan_unit_price::double as plan_unit_price,
            (case when trial_ends_on is null then created_on when status = 'active' then trial_ends_on end)
                ::date as activated_on,
            (case when status = 'cancelled' then coalesce(cancel_on, trial_ends_on) end)::date
                as cancelled_on,
            created_on::date as created_on,
            (case when status = 'trialing' then trial_ends_on
                  when status = 'active' and trial_ends_on is not null then {roll.format(x='trial_ends_on')}
                  when status = 'past_due' or status = 'active' and bill_on > {d} then bill_on
                  when status = 'active' then {roll.format(x='bill_on')} end)::date as next_billing_on,
            (case when status = 'cancelled' then coalesce(cancel_on + 30, trial_ends_on) end)::date
                as ends_on,
            created_on::date as starts_on, trial_ends_on::date as trial_ends_on,
            (case when trial_ends_on is not null then created_on end)::date as trial_starts_on
        from subs order by subscription_id""",
        "accounts": f"""
        with subs as (
            select account_id, sum(mrr) as mrr, sum(amount) filter (where mrr > 0) as amount,
                min(next_billing_on) filter (where status = 'active') as next_billing_on,
                sum(plan_quantity) filter (where product_name = 'Core Platform' and status <> 'cancelled')
                    as licenses,
                bool_or(status in ('active', 'past_due')) as paying, bool_or(status = 'trialing') as trialing
            from {schema}.subscriptions group by account_id
        ),
        final as (
            select acc.account_id, acc.name, coalesce(s.mrr, 0) as mrr, coalesce(s.amount, 0) as amount,
                acc.created_at, s.next_billing_on, coalesce(s.licenses, 0) as licenses,
                case when s.paying then 'active' when s.trialing then 'trial' else 'churned' end as status
            from _jw_accounts acc left join subs s using (account_id)
            where acc.created_at <= {a}
        )
        select account_id::varchar as account_id, name::varchar as name, mrr::double as mrr,
            amount::double as amount, created_at::timestamp as created_at,
            next_billing_on::date as next_billing_on, licenses::integer as licenses,
            (case when status = 'churned' then 'churned'
                  when created_at > {a} - interval 90 day then 'onboarding'
                  when next_billing_on <= {d} + 90 then 'renewal' else 'adoption' end)::varchar as stage,
            status::varchar as status
        from final order by account_id""",
        "users": f"""
        with slotted as (
            select u.*, ({last_slot})::bigint as k_last from _jw_users u where u.created_at <= {a}
        ),
        seen as (
            select u.*, case when {_event_at('k_last')} <= {a} then {_event_at('k_last')}
                             when k_last > 0 then {_event_at('k_last - 1')} end as last_seen_at
            from slotted u
        )
        select user_id::varchar as user_id, account_id::varchar as account_id,
            (case when r_case < 0.05  -- mixed case, as typed by the user
                  then first || '.' || last || i || '@' || upper(email_domain[1]) || email_domain[2:]
                  else lower(first || '.' || last || i || '@' || email_domain) end)::varchar as email,
            (case when r_case > 0.98 then null else first end)::varchar as first_name,
            last::varchar as last_name,
            created_at::timestamp as created_at, last_seen_at::timestamp as last_seen_at
        from seen order by i""",
        "events": f"""
        with slots as (
            select u.i, u.user_id, u.account_id, u.start_at, u.slot_s, unnest(range(u.n_events)) as k
            from _jw_users u where u.start_at <= {a}
        ),
        timed as (select u.i, u.k, u.user_id, u.account_id, {_event_at('k')} as occurred_at from slots u),
        drawn as (select *, hash(hash(i, k, 'event')) as h from timed where occurred_at <= {a}),
        named as (select *, 1 + (h % {len(weighted_names)})::bigint as n from drawn)
        select ('evt_' || (i * 1000 + k))::varchar as event_id, user_id::varchar as user_id,
            account_id::varchar as account_id, {names}[n]::varchar as event_name,
            -- (feature, duration, channel) indexes the pre-rendered property documents
            p.choices[(1 + ({feature}) * 400 + ((h >> 20) % 100) * 4 + (h >> 32) % 4)::bigint]::json
                as properties,
            occurred_at::timestamp as occurred_at
        from named, _jw_properties p""",
        "account_team": f"""
        select account_id::varchar as account_id, role::varchar as role,
            (case role when 'csm' then 'csm' else 'sales' end
                || (1 + floor({r('who', 'a', 'role')} * n))::integer || '@vendor.example')::varchar as member
        from (select a, account_id {existing}) acc,
            (values ('csm', 0.9, {CSMS}), ('sales_manager', 0.7, {SALES_MANAGERS})) t(role, share, n)
        where {r('staffed', 'a', 'role')} < share
        order by account_id, role""",
        "milestones": _dated_rows_sql("milestone", "achieved_at", MILESTONES, a) + " order by 1, 2",
        "outcomes": _dated_rows_sql("outcome", "met_at", OUTCOMES, a) + f"""
        union all  -- renewed on the renewal date of the core subscription
        select account_id::varchar, 'renewed', bill_on::timestamp from _jw_subscriptions
        where s = 0 and fate = 'active' and not is_trial and bill_on <= {d} and bill_on > created_on + 30
        order by 1, 2""",
        "playbook_enrollments": f"""
        with anchors as (
            select acc.a, acc.account_id, acc.created_at, s.bill_on::timestamp as renews_at
            from _jw_accounts acc
            left join _jw_subscriptions s on s.a = acc.a and s.s = 0 and s.fate = 'active' and not s.is_trial
                and s.bill_on > s.created_on + 90  -- renewal prep starts after the account exists
        ),
        enrolled as (
            select x.a, x.account_id, p.*, case p.anchor when 'created' then x.created_at else x.renews_at end
                + _jw_days(p.start_from + {r('start', 'x.a', 'p.playbook')} * (p.start_to - p.start_from))
                as enrolled_at
            from anchors x, (values {', '.join(str(p) for p in PLAYBOOKS)})
                p(playbook, share, anchor, start_from, start_to, due_days, p_done, done_from, done_to)
            where {r('enrolled', 'x.a', 'p.playbook')} < p.share
        ),
        done as (
            select *, case when {r('done', 'a', 'playbook')} < p_done then enrolled_at
                + _jw_days(done_from + {r('done_at', 'a', 'playbook')} * (done_to - done_from)) end as done_at
            from enrolled where enrolled_at <= {a}
        )
        select account_id::varchar as account_id, playbook::varchar as playbook,
            (case when done_at <= {a} then 'completed' else 'active' end)::varchar as status,
            enrolled_at::timestamp as enrolled_at, (enrolled_at + to_days(due_days))::timestamp as due_at,
            (case when done_at <= {a} then done_at end)::timestamp as completed_at
        from done order by account_id, playbook""",
        "custom_attributes": f"""
        with attributes as (
            select 'user' as entity_type, user_id as entity_id, 'timezone' as name,
                {_pick(TIMEZONES, r('tz', 'i'))} as value, {r('has_tz', 'i')} < 0.9 as present
            from _jw_users where created_at <= {a}
            union all
            select 'user', u.user_id, 'plan_tier', lower(s.plan_name), true
            from _jw_users u join _jw_subscriptions s on s.a = u.a and s.s = 0 where u.created_at <= {a}
            union all
            select 'account', account_id, 'health_score',
                case when {r('hs_text', 'a')} < 0.03 then 'n/a'  -- not a number: numeric criteria are false
                     -- a base score (low for lost accounts) that moves a little every day
                     else greatest(0, least(100, round(
                         case when lost_at is null then 35 + 65 * sqrt({r('hs', 'a')})
                              else 5 + 30 * {r('hs', 'a')} end
                         + 10 * {r('hs_day', 'a', d)} - 5)))::integer::varchar
                end, true
            {existing}
            union all
            select 'account', account_id, 'nps', round(-60 + 150 * {r('nps', 'a')})::integer::varchar,
                {r('has_nps', 'a')} < 0.6
            {existing}
            union all
            select 'account', account_id, 'industry', {_pick(INDUSTRIES, r('industry', 'a'))}, true
            {existing}
        )
        select entity_type::varchar as entity_type, entity_id::varchar as entity_id, name::varchar as name,
            value::varchar as value
        from attributes where present order by entity_type, entity_id, name""",
    }


def _dated_rows_sql(kind: str, at: str, rows: tuple, a: str) -> str:
    """Account rows (milestones, outcomes) reached some days after the account's creation."""
    return f"""
        select account_id::varchar as account_id, {kind}::varchar as {kind}, {at}::timestamp as {at}
        from (
            select acc.account_id, t.name as {kind},
                acc.created_at
                    + _jw_days(t.day_from + {_rand('day', 'acc.a', 't.name')} * (t.day_to - t.day_from))
                    as {at}
            from _jw_accounts acc,
                (values {', '.join(str(row) for row in rows)}) t(name, share, day_from, day_to)
            where {_rand('has', 'acc.a', 't.name')} < t.share
        )
        where {at} <= {a}"""


def generate_sample_data(
    con: duckdb.DuckDBPyConnection, *, users: int, origin: datetime, as_of: datetime | None = None,
    schema: str = "raw",
) -> dict[str, int]:
    """Create or replace the nine source tables in `schema` with the snapshot at `as_of` (default: origin)
    of a simulated SaaS world defined by (users, origin). Returns row counts."""
    if users < 1:
        raise ValueError("users must be at least 1")
    if not schema.isidentifier():
        raise ValueError(f"schema must be a plain identifier, got {schema!r}")
    o, a = _ts(origin), _ts(as_of or origin)
    for sql in _world_sql(users, o):
        con.execute(sql)
    con.execute(f"create schema if not exists {schema}")
    snapshot = _snapshot_sql(schema, a)
    # subscriptions first: accounts are summarised from them
    for table in ("subscriptions", *(t for t in SOURCE_TABLES if t not in ("subscriptions", "events"))):
        con.execute(f"create or replace table {schema}.{table} as {snapshot[table]}")
    # ~50M events insert twice as fast when DuckDB may write them out of order: their rows are still
    # fixed, only the physical order varies (write_sample_files sorts them)
    keep = con.execute("select current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("set preserve_insertion_order = false")
    try:
        con.execute(f"create or replace table {schema}.events as {snapshot['events']}")
    finally:
        con.execute(f"set preserve_insertion_order = {str(keep).lower()}")
    con.execute("drop table _jw_users; drop table _jw_subscriptions; drop table _jw_accounts; "
                "drop table _jw_properties; drop macro _jw_secs; drop macro _jw_days")
    return {t: con.execute(f"select count(*) from {schema}.{t}").fetchall()[0][0] for t in SOURCE_TABLES}


def write_sample_files(
    out_dir: Path, *, users: int, origin: datetime, as_of: datetime | None = None, fmt: str = "csv",
) -> list[Path]:
    """Same snapshot written as out_dir/<table>.csv (or .parquet), for `journeys load`."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be csv or parquet, got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = "(header, delimiter ',')" if fmt == "csv" else "(format parquet)"
    paths = []
    with duckdb.connect() as con:
        con.execute("set enable_progress_bar = false")
        generate_sample_data(con, users=users, origin=origin, as_of=as_of, schema="raw")
        for table in SOURCE_TABLES:
            path = out_dir / f"{table}.{fmt}"
            quoted = str(path).replace("'", "''")
            ordered = "order by occurred_at, event_id" if table == "events" else ""
            con.execute(f"copy (select * from raw.{table} {ordered}) to '{quoted}' {options}")
            paths.append(path)
    return paths

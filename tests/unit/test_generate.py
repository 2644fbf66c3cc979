"""Sample data: deterministic, consistent snapshots of one simulated world that fit the contracts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from journeys.contracts import OPTIONAL_SOURCE_TABLES, SOURCE_TABLES, load_contracts
from journeys.loading import load_directory
from journeys.sample import generate_sample_data, write_sample_files
from journeys.sample.vocabulary import EVENT_NAMES

PROJECT_DIR = Path(__file__).resolve().parents[2]
ORIGIN = dt.datetime(2025, 6, 1)
USERS = 4000


def checksums(con: duckdb.DuckDBPyConnection, schema: str = "raw") -> dict[str, tuple]:
    return {t: tuple(con.execute(f"select count(*), sum(hash(t)) from {schema}.{t} t").fetchall()[0])
            for t in SOURCE_TABLES}


def one(con: duckdb.DuckDBPyConnection, sql: str):
    return con.execute(sql).fetchall()[0][0]


def count(con: duckdb.DuckDBPyConnection, rows: str) -> int:
    """count(con, "s0.users where ...")"""
    return one(con, f"select count(*) from {rows}")


@pytest.fixture(scope="module")
def world() -> duckdb.DuckDBPyConnection:
    """Snapshots at origin, +10 days and +30 days (all users exist) in schemas s0, s10, s30."""
    con = duckdb.connect()
    for days in (0, 10, 30):
        generate_sample_data(con, users=USERS, origin=ORIGIN, as_of=ORIGIN + dt.timedelta(days=days),
                             schema=f"s{days}")
    yield con
    con.close()


def test_same_parameters_give_identical_tables():
    first, second = duckdb.connect(), duckdb.connect()
    counts = generate_sample_data(first, users=USERS, origin=ORIGIN)
    generate_sample_data(second, users=USERS, origin=ORIGIN)
    assert checksums(first) == checksums(second)
    assert counts == {t: n for t, (n, _) in checksums(first).items()}


def test_same_parameters_give_byte_identical_files(tmp_path: Path):
    a = write_sample_files(tmp_path / "a", users=USERS, origin=ORIGIN)
    b = write_sample_files(tmp_path / "b", users=USERS, origin=ORIGIN)
    assert [p.name for p in a] == [f"{t}.csv" for t in SOURCE_TABLES]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def test_as_of_defaults_to_origin_and_other_origins_differ():
    con = duckdb.connect()
    generate_sample_data(con, users=USERS, origin=ORIGIN, schema="implicit")
    generate_sample_data(con, users=USERS, origin=ORIGIN, as_of=ORIGIN, schema="explicit")
    generate_sample_data(con, users=USERS, origin=ORIGIN + dt.timedelta(days=1), schema="shifted")
    assert checksums(con, "implicit") == checksums(con, "explicit")
    assert checksums(con, "implicit")["users"] != checksums(con, "shifted")["users"]


def test_later_snapshots_only_add_users_and_events(world):
    for earlier, later in (("s0", "s10"), ("s10", "s30")):
        for table, key in (("users", "user_id"), ("accounts", "account_id"), ("events", "event_id")):
            assert count(world, f"{earlier}.{table}") < count(world, f"{later}.{table}")
            # what existed stays; an event never changes
            gone = f"{earlier}.{table} where {key} not in (select {key} from {later}.{table})"
            assert count(world, gone) == 0
        assert count(world, f"(from {earlier}.events except from {later}.events)") == 0


@pytest.mark.parametrize("days", [0, 10, 30])
def test_snapshot_holds_nothing_after_as_of(world, days):
    as_of, s = ORIGIN + dt.timedelta(days=days), f"s{days}"
    assert one(world, f"select max(occurred_at) from {s}.events") <= as_of
    assert one(world, f"select max(created_at) from {s}.users") <= as_of
    assert one(world, f"select max(created_at) from {s}.accounts") <= as_of
    assert one(world, f"select max(achieved_at) from {s}.milestones") <= as_of
    assert one(world, f"select max(met_at) from {s}.outcomes") <= as_of
    assert one(world, f"select max(greatest(enrolled_at, completed_at)) from {s}.playbook_enrollments") \
        <= as_of
    assert one(world, f"select max(created_on) from {s}.subscriptions") <= as_of.date()


@pytest.mark.parametrize("days", [0, 10])
def test_last_seen_at_is_the_latest_event(world, days):
    s = f"s{days}"
    mismatches = one(world, f"""
        select count(*) from {s}.users u
        left join (select user_id, max(occurred_at) as latest from {s}.events group by 1) e using (user_id)
        where u.last_seen_at is distinct from e.latest""")
    assert mismatches == 0


def test_references_resolve(world):
    s = "s10"
    accounts = f"(select account_id from {s}.accounts)"
    orphans = {
        "events": f"{s}.events e join {s}.users u using (user_id) "
                  "where e.account_id <> u.account_id or e.occurred_at < u.created_at",
        "events_users": f"{s}.events where user_id not in (select user_id from {s}.users)",
        "custom_attributes": f"{s}.custom_attributes where entity_id not in "
                             f"(select user_id from {s}.users union all select account_id from {s}.accounts)",
    }
    for table in ("users", "subscriptions", "account_team", "milestones", "outcomes", "playbook_enrollments"):
        orphans[table] = f"{s}.{table} where account_id not in {accounts}"
    assert {name: count(world, rows) for name, rows in orphans.items()} == dict.fromkeys(orphans, 0)


def test_columns_have_the_contract_types(world):
    for table, contract in load_contracts(PROJECT_DIR).items():
        if table in OPTIONAL_SOURCE_TABLES:
            continue  # not generated: created empty by ensure_source_tables
        described = world.execute(f"describe s0.{table}").fetchall()
        assert [(n, t.lower()) for n, t, *_ in described] == [(c.name, c.data_type) for c in contract.columns]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_sample_files_pass_the_load_checks(tmp_path: Path, fmt: str):
    as_of = ORIGIN + dt.timedelta(days=3)
    paths = write_sample_files(tmp_path / "data", users=500, origin=ORIGIN, as_of=as_of, fmt=fmt)
    counts = load_directory(tmp_path / "journeys.duckdb", tmp_path / "data", PROJECT_DIR)

    con = duckdb.connect()
    expected = generate_sample_data(con, users=500, origin=ORIGIN, as_of=as_of)
    assert counts == expected
    assert {p.name for p in paths} == {f"{t}.{fmt}" for t in SOURCE_TABLES}
    with duckdb.connect(str(tmp_path / "journeys.duckdb")) as loaded:
        assert checksums(loaded) == checksums(con)


def test_shapes(world):
    s = "s30"  # every user of the world exists 30 days after origin
    accounts, users = count(world, f"{s}.accounts"), count(world, f"{s}.users")
    assert (users, accounts) == (USERS, USERS // 20)
    assert 1.35 <= count(world, f"{s}.subscriptions") / accounts <= 1.65
    assert 0.90 <= count(world, "s0.users") / USERS <= 0.96
    assert count(world, "s0.accounts") < accounts  # new accounts arrive after origin
    assert one(world, f"select count(distinct event_name) from {s}.events") == len(EVENT_NAMES) == 30
    assert 40 <= count(world, "s0.events") / count(world, "s0.users") <= 65
    # about 10% of users churned: no event in the 30 days before origin
    quiet = f"coalesce(last_seen_at < timestamp '{ORIGIN}' - interval 30 day, true)"
    churned = count(world, f"s0.users where {quiet}")
    assert 0.06 <= churned / count(world, "s0.users") <= 0.15
    with_csm = one(world, f"select count(distinct account_id) from {s}.account_team where role = 'csm'")
    assert 0.85 <= with_csm / accounts <= 0.95


def test_data_has_the_awkward_cases_rules_must_handle(world):
    s = "s0"
    assert count(world, f"{s}.users where email <> lower(email)") > 0
    assert count(world, f"{s}.users where first_name is null") > 0
    assert count(world, f"{s}.users where last_seen_at is null") > 0
    assert count(world, f"{s}.events where properties->>'$.feature' is null") > 0
    assert one(world, f"select count(distinct properties->>'$.source.channel') from {s}.events") == 2
    not_a_number = "try_cast(value as double) is null"
    assert count(world, f"{s}.custom_attributes where name = 'health_score' and {not_a_number}") > 0
    playbooks = f"{s}.playbook_enrollments"
    overdue = f"{playbooks} where status = 'active' and due_at < timestamp '{ORIGIN}'"
    assert count(world, overdue) > 0
    assert count(world, f"{playbooks} where (status = 'completed') <> (completed_at is not null)") == 0
    day = f"date '{ORIGIN.date()}'"
    renewing = count(world, f"{s}.accounts where next_billing_on between {day} and {day} + 60")
    assert 0.15 <= renewing / count(world, f"{s}.accounts") <= 0.45
    statuses = world.execute("select distinct status from s10.subscriptions order by 1").fetchall()
    assert statuses == [("active",), ("cancelled",), ("past_due",), ("trialing",)]

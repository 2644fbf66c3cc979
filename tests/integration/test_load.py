"""`journeys load`: files checked against the staging contracts, then loaded all or nothing."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from journeys.contracts import OPTIONAL_SOURCE_TABLES, SOURCE_TABLES, load_contracts
from journeys.errors import DataError, StateError
from journeys.loading import ensure_source_tables, load_directory

PROJECT_DIR = Path(__file__).resolve().parents[2]
DB = Path("warehouse/journeys.duckdb")

USERS = """user_id,account_id,email,first_name,last_name,created_at,last_seen_at,extra_column
u1,a1,Ann@Example.com,Ann,Lee,2025-01-01 10:00:00,2025-02-01T08:00:00Z,ignored
u2,a1,bob@example.com,,Roe,2025-01-02,,ignored
u3,a2,cy@example.com,Cy,"Multi
line",2025-01-03T12:00:00+02:00,,ignored
"""
ACCOUNTS = """account_id,name,mrr,amount,created_at,next_billing_on,licenses,stage,status
a1,Acme,100.5,1206,2024-12-01 00:00:00,2025-06-01,10,adoption,active
a2,Globex,,,2024-12-02 00:00:00,,,onboarding,trial
"""
EVENTS = """event_id,user_id,account_id,event_name,properties,occurred_at
e1,u1,a1,login,"{""source"": {""channel"": ""web""}}",2025-02-01 08:00:00
e2,u2,a1,feature_used,"{""feature"": ""dashboards""}",2025-02-02 09:00:00
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def fingerprint(db: Path) -> dict[str, tuple]:
    """Row count and an order-independent checksum of every raw table."""
    with duckdb.connect(str(db)) as con:
        return {t: tuple(con.execute(f"select count(*), sum(hash(t)) from raw.{t} t").fetchall()[0])
                for t in SOURCE_TABLES}


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple]:
    """A warehouse loaded with good data, working from tmp_path so that paths read as the user typed them."""
    monkeypatch.chdir(tmp_path)
    write(Path("good"), {"users.csv": USERS, "accounts.csv": ACCOUNTS, "events.csv": EVENTS})
    load_directory(DB, Path("good"), PROJECT_DIR)
    return fingerprint(DB)


def test_good_load_round_trips_counts_and_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    write(Path("good"), {"users.csv": USERS, "accounts.csv": ACCOUNTS, "events.csv": EVENTS})

    counts = load_directory(DB, Path("good"), PROJECT_DIR)

    assert counts == {"users": 3, "accounts": 2, "events": 2}
    contracts = load_contracts(PROJECT_DIR)
    with duckdb.connect(str(DB)) as con:
        for table in SOURCE_TABLES:  # every table exists with the contract's columns and types, in order
            described = con.execute(f"describe raw.{table}").fetchall()
            assert [(name, kind.lower()) for name, kind, *_ in described] == [
                (c.name, c.data_type) for c in contracts[table].columns
            ]
        users = con.execute("select * from raw.users order by user_id").fetchall()
        channel = con.execute("select properties->>'$.source.channel' from raw.events where event_id = 'e1'")
        assert channel.fetchall() == [("web",)]
        accounts = con.execute("select licenses, mrr, next_billing_on from raw.accounts order by 1")
        accounts = accounts.fetchall()
        assert accounts == [(10, 100.5, dt.date(2025, 6, 1)), (None, None, None)]
    assert users[0] == ("u1", "a1", "Ann@Example.com", "Ann", "Lee", dt.datetime(2025, 1, 1, 10),
                        dt.datetime(2025, 2, 1, 8))
    assert users[1][3] is None and users[1][5] == dt.datetime(2025, 1, 2)  # empty is NULL; a date is midnight
    assert users[2][4] == "Multi\nline" and users[2][5] == dt.datetime(2025, 1, 3, 10)  # offset -> UTC


def test_reload_replaces_only_the_tables_given(loaded: dict, tmp_path: Path):
    header = ACCOUNTS.splitlines()[0]
    write(Path("next"), {"accounts.csv": f"{header}\na9,Initech,1,12,2025-01-01,,1,adoption,active\n"})

    assert load_directory(DB, Path("next"), PROJECT_DIR) == {"accounts": 1}

    after = fingerprint(DB)
    assert after["accounts"][0] == 1
    del after["accounts"], loaded["accounts"]
    assert after == loaded


def test_header_only_file_loads_zero_rows(loaded: dict):
    write(Path("empty"), {"events.csv": EVENTS.splitlines()[0] + "\n"})

    assert load_directory(DB, Path("empty"), PROJECT_DIR) == {"events": 0}


BAD_CASES = {
    "missing_column": (
        {"users.csv": USERS.replace(",email", "").replace(",Ann@Example.com", "")
         .replace(",bob@example.com", "").replace(",cy@example.com", "")},
        r"^bad/users\.csv: missing column 'email'; expected columns: user_id, account_id, email, first_name, "
        r"last_name, created_at, last_seen_at$",
    ),
    "wrong_type_on_csv_line": (  # line 6: the quoted field of u3 spans lines 4 and 5
        {"users.csv": USERS + "u4,a1,d@example.com,Di,Ho,yesterday,,x\n"},
        r"^bad/users\.csv:6: column 'created_at': 'yesterday' is not a timestamp$",
    ),
    "not_an_integer": (
        {"accounts.csv": ACCOUNTS.replace(",10,", ",3.5,")},
        r"^bad/accounts\.csv:2: column 'licenses': '3\.5' is not an integer$",
    ),
    "invalid_json": (
        {"events.csv": EVENTS.replace('"{""feature"": ""dashboards""}"', "{oops")},
        r"^bad/events\.csv:3: column 'properties': '\{oops' is not valid JSON$",
    ),
    "null_in_not_null_column": (
        {"users.csv": USERS.replace("u2,a1,", ",a1,")},
        r"^bad/users\.csv:3: column 'user_id': empty value; the column must have a value$",
    ),
    "duplicate_primary_key": (
        {"users.csv": USERS.replace("u3,a2", "u1,a2")},
        r"^bad/users\.csv:4: column 'user_id': duplicate value 'u1' \(also on line 2\); "
        r"values must be unique$",
    ),
    "unknown_file_name": (
        {"userz.csv": USERS},
        r"^bad/userz\.csv: not a source table file; expected <table>\.csv or <table>\.parquet with <table> "
        r"one of: users, accounts, subscriptions, ",
    ),
    "no_header": (
        {"users.csv": "".join(USERS.splitlines(keepends=True)[1:3])},
        r"^bad/users\.csv: no header row; the first line must name the columns: user_id, account_id, ",
    ),
    "empty_file": ({"users.csv": ""}, r"^bad/users\.csv: no header row; "),
    "ragged_row": (
        {"users.csv": USERS + "u4,a1\n"},
        r"^bad/users\.csv:6: cannot read the row: Expected Number of Columns: 8 Found: 2$",
    ),
    "csv_and_parquet": (
        {"users.csv": USERS, "users.parquet": "not really parquet"},
        r"^bad/users\.\*: both users\.csv and users\.parquet are present; keep one$",
    ),
}


@pytest.mark.parametrize("files, message", list(BAD_CASES.values()), ids=list(BAD_CASES))
def test_bad_file_raises_and_leaves_previous_data_intact(loaded: dict, files: dict, message: str):
    # a good accounts file travels with the bad one: nothing at all may be loaded
    good = {"accounts.csv": ACCOUNTS.replace("Acme", "Acme Changed")} if "accounts.csv" not in files else {}
    write(Path("bad"), {**good, **files})

    with pytest.raises(DataError, match=message):
        load_directory(DB, Path("bad"), PROJECT_DIR)

    assert fingerprint(DB) == loaded


def test_parquet_errors_name_the_row(loaded: dict):
    Path("bad").mkdir()
    with duckdb.connect() as con:
        con.execute("copy (select 'u' || i as user_id, 'a1' as account_id, "
                    "case when i = 3 then 'soon' else '2025-01-01' end as created_at, null as email, "
                    "null as first_name, null as last_name, null as last_seen_at from range(1, 5) t(i)) "
                    "to 'bad/users.parquet' (format parquet)")

    message = r"^bad/users\.parquet: row 3: column 'created_at': 'soon' is not a timestamp$"
    with pytest.raises(DataError, match=message):
        load_directory(DB, Path("bad"), PROJECT_DIR)
    assert fingerprint(DB) == loaded


def test_every_bad_file_is_reported(loaded: dict):
    write(Path("bad"), {"users.csv": USERS.replace("u2,a1,", ",a1,"),
                        "accounts.csv": ACCOUNTS.replace(",10,", ",x,")})

    with pytest.raises(DataError) as raised:
        load_directory(DB, Path("bad"), PROJECT_DIR)

    assert str(raised.value).splitlines() == [
        "bad/users.csv:3: column 'user_id': empty value; the column must have a value",
        "bad/accounts.csv:2: column 'licenses': 'x' is not an integer",
    ]


def test_missing_directory_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^nowhere: no such directory$"):
        load_directory(DB, Path("nowhere"), PROJECT_DIR)
    assert not DB.exists()  # nothing was created


def test_failed_validation_does_not_create_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    write(Path("bad"), {"users.csv": USERS.replace("u2,a1,", ",a1,")})
    with pytest.raises(DataError):
        load_directory(DB, Path("bad"), PROJECT_DIR)
    assert not DB.exists()


def test_locked_database_raises_state_error(loaded: dict):
    hold = ("import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(DB)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        write(Path("next"), {"accounts.csv": ACCOUNTS})
        message = r"^warehouse/journeys\.duckdb is in use by another process \(a run\?\); wait for it"
        with pytest.raises(StateError, match=message):
            load_directory(DB, Path("next"), PROJECT_DIR)
    finally:
        holder.kill()
        holder.wait()
    assert fingerprint(DB) == loaded


def test_ensure_source_tables_creates_missing_tables_and_keeps_existing(tmp_path: Path):
    with duckdb.connect(str(tmp_path / "fresh.duckdb")) as con:
        con.execute("create schema raw")
        con.execute("create table raw.users as select 'u1' as user_id")
        ensure_source_tables(con, PROJECT_DIR)
        tables = con.execute("select table_name from information_schema.tables where table_schema = 'raw'")
        assert sorted(t for (t,) in tables.fetchall()) == sorted(SOURCE_TABLES + OPTIONAL_SOURCE_TABLES)
        assert con.execute("select * from raw.users").fetchall() == [("u1",)]
        assert con.execute("select count(*) from raw.events").fetchall() == [(0,)]

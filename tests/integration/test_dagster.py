"""Dagster runs the same engine as `journeys run`: real Dagster, real dbt, real DuckDB files, no mocks."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
from dagster import DagsterInstance, build_schedule_context, instance_for_test

from journeys.engine.state import STATE_TABLES, ensure_state
from journeys.errors import JourneysError
from journeys.sample.generate import generate_sample_data
from orchestration.assets import AS_OF_TAG, as_of_for_run
from journeys.engine.breaker import (
    Bounds,
    Breaker,
    Entering,
    ensure_tables,
    evaluate,
    open_trips,
    parse_acks,
    trip_reasons,
)
from orchestration.definitions import build_definitions
from orchestration.jobs import JOB_NAME, SCHEDULE_NAME, build_schedule, ticks_to_launch
from tests.conftest import REPO, Project, copy_project

ORIGIN = dt.datetime(2026, 11, 2, 9, 0)
T1, T2, T3, T4 = (ORIGIN + dt.timedelta(hours=h) for h in range(4))
LATER = ORIGIN + dt.timedelta(days=2, hours=1)  # past the sample journeys' first waits
JOURNEYS = str(Path(sys.executable).with_name("journeys"))
WALL_CLOCK = {"runs": {"started_at", "finished_at"}}  # the only columns that are not a function of T


# Settings read from the environment: the tests use the defaults (emails to the outbox, default bounds).
CONFIG_ENV = ("JOURNEYS_SMTP_URL", "JOURNEYS_BREAKER_ACK", "JOURNEYS_BREAKER_MAX_FACTOR", "JOURNEYS_BREAKER_MAX_SHARE",
              "JOURNEYS_BREAKER_MIN_ENTERING", "JOURNEYS_SCHEDULE_CRON", "JOURNEYS_LOCK_WAIT")  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _default_settings():
    with pytest.MonkeyPatch.context() as mp:
        for name in CONFIG_ENV:
            mp.delenv(name, raising=False)
        yield


@pytest.fixture
def instance(tmp_path):
    """A real (SQLite) Dagster instance in tmp: schedules read the runs it has launched."""
    (tmp_path / "dagster_home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        yield instance


def sample_project(root: Path, users: int = 300) -> Project:
    project = Project(copy_project(root))
    con = project.connect()
    try:
        generate_sample_data(con, users=users, origin=ORIGIN)
    finally:
        con.close()
    return project


def run_job(
    defs, as_of: dt.datetime | None = None, acknowledge=(), tags=None, run_config=None, instance=None
):
    config = {"as_of": as_of.isoformat()} if as_of else {}
    if acknowledge:
        config["acknowledge"] = list(acknowledge)
    return defs.resolve_job_def(JOB_NAME).execute_in_process(
        run_config=run_config or {"ops": {"run_journeys": {"config": config}}},
        instance=instance or DagsterInstance.ephemeral(),
        tags=tags,
        raise_on_error=False,
    )


def journeys_run(project: Project, as_of: dt.datetime) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess: `journeys run --as-of T`."""
    command = [JOURNEYS, "--project-dir", str(project.root), "--db", str(project.settings.db_path),
               "run", "--as-of", as_of.isoformat()]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def state(project: Project) -> dict[str, list[tuple]]:
    """Every journey_state table, sorted, without wall-clock columns."""
    con = project.connect()
    try:
        found = {}
        for table in STATE_TABLES:
            columns = [r[0] for r in con.execute(
                "select column_name from information_schema.columns where table_schema = 'journey_state' "
                "and table_name = ? order by ordinal_position", [table]).fetchall()
                if r[0] not in WALL_CLOCK.get(table, set())]  # fmt: skip
            found[table] = con.execute(
                f"select {', '.join(columns)} from journey_state.{table} order by all"
            ).fetchall()
        return found
    finally:
        con.close()


def check_results(result, name: str) -> list:
    return [e.event_specific_data for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == name]  # fmt: skip


def materialized(result) -> dict[str, dict]:
    found = {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_MATERIALIZATION":
            m = e.event_specific_data.materialization
            found[m.asset_key.to_user_string()] = {k: getattr(v, "value", v) for k, v in m.metadata.items()}
    return found


# ----------------------------------------------------------------------------- definitions


def test_definitions_load_with_the_dbt_lineage():
    from orchestration.definitions import defs

    assert defs.get_job_def("journeys_run")
    assert defs.resolve_schedule_def(SCHEDULE_NAME).job_name == JOB_NAME
    repository = defs.get_repository_def()  # what a code server loads: every name unique, every job valid
    assert {"journeys_run", "journeys_data_checks"} <= {j.name for j in repository.get_all_jobs()}
    graph = defs.resolve_asset_graph()
    parents = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }
    assert parents["staging/stg_users"] == {"raw/users"}
    assert {"staging/stg_users", "entity_attributes", "event_features"} <= parents["user_features"]
    assert {"user_features", "account_features"} <= parents["segment_membership"]
    assert "segment_membership" in parents["journey_goal_matches"]
    assert {
        "segment_membership",
        "journey_eligible",
        "journey_goal_matches",
        "journey_exit_matches",
    } <= parents["journey_state/transitions"]
    assert parents["journey_state/actions"] == {"journey_state/transitions"}
    assert parents["journey_enrollments"] == {"journey_state/transitions"}
    assert parents["journey_actions"] == {"journey_state/actions"}
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("staging/stg_users", "unique_stg_users_user_id") in checks
    assert ("journey_state/transitions", "segment_size_breaker") in checks


# ----------------------------------------------------------------------------- one code path


@pytest.fixture(scope="module")
def dagster_runs(tmp_path_factory):
    """Two Dagster runs on a sample project, T1 from a schedule tick, then "run now" at LATER; the state after each."""
    root = tmp_path_factory.mktemp("dagster_runs")
    project = sample_project(root / "p")
    defs = build_definitions(project.root, project.settings.db_path)
    (root / "dagster_home").mkdir()
    with instance_for_test(temp_dir=str(root / "dagster_home")) as instance:
        tick = build_schedule_context(instance=instance, scheduled_execution_time=T1.replace(tzinfo=dt.UTC))
        [request] = defs.resolve_schedule_def(SCHEDULE_NAME).evaluate_tick(tick).run_requests
        first = run_job(defs, run_config=request.run_config, tags=request.tags, instance=instance)
        after_first = state(project) if first.success else None
        second = run_job(defs, LATER, instance=instance)  # waits that came due in between execute too
        after_second = state(project) if second.success else None
    return SimpleNamespace(
        request=request, first=first, second=second, states={T1: after_first, LATER: after_second}
    )


def test_dagster_runs_leave_the_same_state_as_the_cli(tmp_path, dagster_runs):
    assert dagster_runs.request.tags[AS_OF_TAG] == "2026-11-02T09:00:00"  # the tick time is T
    assert dagster_runs.first.success and dagster_runs.second.success
    cli_project = sample_project(tmp_path / "cli")
    for as_of in (T1, LATER):
        cli = journeys_run(cli_project, as_of)
        assert cli.returncode == 0, cli.stderr
        assert state(cli_project) == dagster_runs.states[as_of]
    after = dagster_runs.states[LATER]
    assert len(after["runs"]) == 2 and len(after["enrollments"]) > 0 and len(after["email_outbox"]) > 0

    assets = materialized(dagster_runs.first)
    assert assets["staging/stg_users"]["dagster/row_count"] > 0
    assert "dashboards_intro" in assets["journey_state/transitions"]["entering"]
    assert "| journey |" in assets["journey_state/transitions"]["transitions"]
    assert "journey_id" in assets["journey_state/actions"]["outcomes"]
    report = Path(assets["journey_state/actions"]["report_path"])  # the outcomes report, linked from the asset
    assert report.name == "index.html" and "dashboards_intro" in report.read_text()
    assert assets["journey_state/actions"]["report"] == report.as_uri()
    assert all(r.passed for r in check_results(dagster_runs.first, "unique_stg_users_user_id"))


CHILD = r"""
import sys, time
from datetime import datetime, timezone
from pathlib import Path
from dagster import DagsterInstance
from orchestration.definitions import defs      # JOURNEYS_PROJECT_DIR / JOURNEYS_DB point at the copy

as_of, ready, gate = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not gate.exists():
    time.sleep(0.05)
print("launching at", datetime.now(timezone.utc).replace(tzinfo=None).isoformat(), flush=True)
result = defs.resolve_job_def("journeys_run").execute_in_process(
    run_config={"ops": {"run_journeys": {"config": {"as_of": as_of}}}},
    instance=DagsterInstance.ephemeral(), raise_on_error=False)
sys.exit(0 if result.success else 1)
"""


def wait_for(condition, processes: list[subprocess.Popen], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        for p in processes:
            assert p.poll() is None, p.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_two_runs_launched_together_commit_one_after_the_other(tmp_path, dagster_runs):
    together = sample_project(tmp_path / "together")
    db = together.settings.db_path
    env = {
        **os.environ,
        "JOURNEYS_PROJECT_DIR": str(together.root),
        "JOURNEYS_DB": str(db),
        "PYTHONPATH": str(REPO),
    }
    children = []
    for n, as_of in enumerate((T1, LATER)):  # two processes, definitions loaded, waiting for their gate
        command = [
            sys.executable,
            "-c",
            CHILD,
            as_of.isoformat(),
            str(tmp_path / f"ready{n}"),
            str(tmp_path / f"go{n}"),
        ]
        children.append(subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True))  # fmt: skip
    wait_for(lambda: (tmp_path / "ready0").exists() and (tmp_path / "ready1").exists(), children)
    (tmp_path / "go0").touch()
    lock = Path(f"{db}.lock")
    wait_for(lambda: lock.exists() and "journeys run r20261102T090000" in lock.read_text(), children)
    (tmp_path / "go1").touch()  # the second run is launched while the first holds the database
    outputs = [p.communicate(timeout=240)[0] for p in children]
    assert children[0].returncode == 0, outputs[0][-3000:]
    assert children[1].returncode == 0, outputs[1][-3000:]

    runs = together.query(
        "select run_id, status, started_at, finished_at from journey_state.runs order by as_of"
    )
    assert [(r[0], r[1]) for r in runs] == [
        ("r20261102T090000", "committed"),
        (f"r{LATER:%Y%m%dT%H%M%S}", "committed"),
    ]
    [launched] = [
        dt.datetime.fromisoformat(line.split()[-1])
        for line in outputs[1].splitlines()
        if line.startswith("launching at")
    ]
    first_finished = runs[0][3]  # wall clock, whole seconds
    assert launched < first_finished <= runs[1][2]  # launched during the first run, started after it ended

    assert state(together) == dagster_runs.states[LATER]  # the same as one run after the other


def test_a_failing_staging_test_fails_its_check_and_the_run(tmp_path):
    project = sample_project(tmp_path / "p")
    con = project.connect()
    try:
        con.execute(
            "insert into raw.users select * from raw.users order by user_id limit 1"
        )  # a duplicate key
    finally:
        con.close()
    result = run_job(build_definitions(project.root, project.settings.db_path), T1)
    assert not result.success
    [check] = check_results(result, "unique_stg_users_user_id")
    assert not check.passed and check.severity.value == "ERROR"
    assert "staging/stg_users" in materialized(result)  # what dbt did build is reported
    assert project.query("select count(*) from journey_state.runs where status = 'committed'") == [(0,)]
    assert project.query("select count(*) from journey_state.enrollments") == [(0,)]


def test_a_duplicate_event_id_passes_the_run_and_fails_the_daily_data_check(tmp_path):
    """unique(stg_events.event_id) scans every event: the tick skips it, journeys_data_checks runs it."""
    project = sample_project(tmp_path / "p")
    con = project.connect()
    try:
        con.execute("insert into raw.events select * from raw.events order by event_id limit 1")
    finally:
        con.close()
    defs = build_definitions(project.root, project.settings.db_path)
    run = run_job(defs, T1)
    assert run.success
    assert check_results(run, "unique_stg_events_event_id") == []  # not part of the run
    assert project.query("select count(*) from journey_state.runs where status = 'committed'") == [(1,)]

    checks = defs.resolve_job_def("journeys_data_checks").execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    [unique] = check_results(checks, "unique_stg_events_event_id")
    assert not unique.passed and unique.metadata["dbt_status"].value == "fail"
    [enrollment_keys] = check_results(checks, "unique_journey_enrollments_enrollment_id")
    assert enrollment_keys.passed

    cli = subprocess.run([JOURNEYS, "--project-dir", str(project.root), "--db", str(project.settings.db_path), "check"],
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert cli.returncode == 1
    assert "unique_stg_events_event_id" in cli.stderr


# ----------------------------------------------------------------------------- circuit breaker


def add_new_users(project: Project, n: int, created_at: dt.datetime) -> None:
    """n sign-ups just now: they enter new_users (onboarding_drip) and no other journey's segment."""
    con = project.connect()
    try:
        con.execute("create temp table burst as select * from raw.users order by user_id limit ?", [n])
        con.execute("update burst set user_id = 'burst_' || user_id, created_at = ?", [created_at])
        con.execute("insert into raw.users select * from burst")
    finally:
        con.close()


def test_breaker_holds_an_exploding_journey_until_acknowledged(tmp_path):
    project = sample_project(tmp_path / "p")
    defs = build_definitions(project.root, project.settings.db_path)
    assert run_job(defs, T1).success

    add_new_users(project, 80, T2 - dt.timedelta(minutes=30))
    tripped = run_job(defs, T2)
    assert not tripped.success  # a blocking check failed: the Dagster run is red
    [check] = check_results(tripped, "segment_size_breaker")
    assert not check.passed
    meta = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert meta["onboarding_drip_entering"] >= 80 and meta["onboarding_drip_previous_entering"] == 0
    assert meta["onboarding_drip_acknowledge"] == "onboarding_drip@r20261102T100000"
    assert meta["held_journeys"] == ["onboarding_drip"]
    assert "onboarding_drip" in meta["held"] and "x 0 at the previous run" in meta["held"]
    assert "journey_state/actions" in materialized(tripped)  # the other journeys' actions did run

    due = "select journey_id, status, count(*) from journey_state.actions where due_at <= ? group by all"
    by_journey = {}
    for jid, status, n in project.query(due, [T2]):
        by_journey.setdefault(jid, {})[status] = n
    assert by_journey["onboarding_drip"] == {"pending": meta["onboarding_drip_entering"]}
    assert all("pending" not in statuses for jid, statuses in by_journey.items() if jid != "onboarding_drip")
    assert any(statuses.get("done") for jid, statuses in by_journey.items() if jid != "onboarding_drip")

    still = run_job(defs, T3)  # a later run with nothing new entering: still held until acknowledged
    assert not still.success
    assert project.query(
        "select count(*) from journey_state.actions where journey_id = 'onboarding_drip' and status = 'done'"
    ) == [(0,)]

    released = run_job(defs, T4, acknowledge=["onboarding_drip@r20261102T100000"])
    assert released.success
    [check] = check_results(released, "segment_size_breaker")
    assert check.passed
    welcome = "select count(*), count(distinct action_key) from journey_state.email_outbox where journey_id = 'onboarding_drip'"
    sent = project.query(welcome)[0]
    assert sent[0] == sent[1] == meta["onboarding_drip_entering"]
    assert project.query("select count(*) from journey_state.actions where journey_id = 'onboarding_drip' "
                         "and status = 'done' and attempts = 1") == [(sent[0],)]  # fmt: skip

    again = run_job(defs, T4)  # the same run again (a retry): executes nothing twice
    assert again.success
    assert project.query(welcome)[0] == sent
    trips = project.query("select journey_id, run_id, acknowledged_by is not null from journey_breaker.trips")
    assert trips == [("onboarding_drip", "r20261102T100000", True)]


@pytest.mark.parametrize(
    ("entering", "previous", "entity_count", "trips"),
    [
        (49, 0, 1000, False),  # under the floor: never trips
        (50, 0, 1000, True),  # from nothing to the floor
        (60, 6, 1000, False),  # 10x exactly is within the bound
        (61, 6, 1000, True),
        (200, None, 1000, False),  # a first run has no previous count; 20% of the table
        (260, None, 1000, True),  # more than 25% of the table
        (300, 100, 1000, True),  # a share trip even when the growth is modest
    ],
)
def test_breaker_trips_beyond_factor_or_share_above_the_floor(entering, previous, entity_count, trips):
    assert bool(trip_reasons(entering, previous, entity_count, Bounds(10, 0.25, 50))) is trips
    numbers = [Entering("j", "user", entering, previous, entity_count)]
    assert ("j" in evaluate(numbers, Bounds(10, 0.25, 50))) is trips


def test_raising_the_bound_releases_a_held_journey():
    con = duckdb.connect()
    ensure_tables(con)
    con.execute("insert into journey_breaker.trips values ('j', 'r20261102T100000', ?, 'user', 80, 0, 1000, 'x', ?, null, null)",
                [T2, T2])  # fmt: skip
    assert [t.ack for t in open_trips(con, Bounds(10, 0.25, 50))] == ["j@r20261102T100000"]
    assert open_trips(con, Bounds(10, 0.25, 100)) == []  # floor raised above 80


def test_a_run_the_breaker_never_saw_is_judged_by_the_next_run():
    """A run that committed its transitions and died before its breaker ran is not let through."""
    con = duckdb.connect()
    ensure_state(con)
    con.execute(
        "create schema staging; create table staging.stg_users as select range::varchar as user_id from range(1000)"
    )
    con.execute("create table staging.stg_accounts (account_id varchar)")
    con.execute("insert into journey_state.journeys values ('j', 'user', true, 'v1', ?, ?)", [T1, T1])
    for run_id, as_of in (("r1", T1), ("r2", T2), ("r3", T3)):
        con.execute("insert into journey_state.runs (run_id, as_of, started_at, status, attempts) "
                    "values (?, ?, ?, 'committed', 1)", [run_id, as_of, as_of])  # fmt: skip
    con.execute("insert into journey_state.transitions select 'r2', ?, 'j', 'user', range::varchar, null, 'enrolled', "
                "null, 'active', null, ? from range(80)", [T2, T2])  # fmt: skip
    breaker = Breaker(Bounds(10, 0.25, 50), [], "test")
    assert breaker.hold(con, SimpleNamespace(run_id="r1", as_of=T1)) == set()  # r1 evaluated; r2 died unseen
    assert breaker.hold(con, SimpleNamespace(run_id="r3", as_of=T3)) == {"j"}
    assert [t.run_id for t in breaker.outcome.held] == ["r2"]


def test_acknowledgements_name_journey_and_run():
    assert parse_acks("a@r20261102T100000, b_2@r20261103T000000") == [
        ("a", "r20261102T100000"),
        ("b_2", "r20261103T000000"),
    ]
    assert parse_acks("") == []
    with pytest.raises(
        JourneysError, match=r"^breaker acknowledgement 'onboarding_drip' is not journey@run_id"
    ):
        parse_acks(["onboarding_drip"])


# ----------------------------------------------------------------------------- schedule, T, instance


def test_missed_ticks_catch_up_oldest_first():
    utc = dt.UTC
    last, tick = dt.datetime(2026, 11, 2, 6, tzinfo=utc), dt.datetime(2026, 11, 2, 9, tzinfo=utc)
    assert [t.hour for t in ticks_to_launch("0 * * * *", "UTC", last, tick, 24)] == [7, 8, 9]
    assert [t.hour for t in ticks_to_launch("0 * * * *", "UTC", last, tick, 2)] == [8, 9]
    assert ticks_to_launch("0 * * * *", "UTC", None, tick, 24) == [tick]


def test_schedule_requests_each_missed_tick_with_its_time_as_t(tmp_path, instance):
    project = Project(copy_project(tmp_path / "p"))
    defs = build_definitions(project.root, project.settings.db_path)
    instance.create_run_for_job(
        defs.resolve_job_def(JOB_NAME),
        run_config={"ops": {"run_journeys": {"config": {"as_of": "2026-11-02T06:00:00"}}}},
        tags={"dagster/schedule_name": SCHEDULE_NAME, AS_OF_TAG: "2026-11-02T06:00:00"},
    )
    tick = build_schedule_context(
        instance=instance, scheduled_execution_time=dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
    )
    requests = defs.resolve_schedule_def(SCHEDULE_NAME).evaluate_tick(tick).run_requests
    assert [r.tags[AS_OF_TAG] for r in requests] == [
        "2026-11-02T07:00:00",
        "2026-11-02T08:00:00",
        "2026-11-02T09:00:00",
    ]
    assert [r.run_config["ops"]["run_journeys"]["config"]["as_of"] for r in requests] == [
        r.tags[AS_OF_TAG] for r in requests
    ]
    assert len({r.run_key for r in requests}) == 3


def test_schedule_is_hourly_unless_configured(monkeypatch):
    from orchestration.definitions import defs

    job = defs.resolve_job_def(JOB_NAME)
    assert build_schedule(job).cron_schedule == "0 * * * *"
    monkeypatch.setenv("JOURNEYS_SCHEDULE_CRON", "*/15 * * * *")
    assert build_schedule(job).cron_schedule == "*/15 * * * *"


def test_t_comes_from_config_then_tick_then_original_launch():
    launched = dt.datetime(2026, 11, 2, 9, 30, 12, 345, tzinfo=dt.UTC)
    assert as_of_for_run("2026-11-02T10:00:00+01:00", {AS_OF_TAG: "2026-11-01"}, launched) == dt.datetime(
        2026, 11, 2, 9
    )
    assert as_of_for_run(None, {AS_OF_TAG: "2026-11-01T05:00:00"}, launched) == dt.datetime(2026, 11, 1, 5)
    assert as_of_for_run(None, {}, launched) == dt.datetime(2026, 11, 2, 9, 30, 12)


def test_instance_queues_one_run_at_a_time_and_retries_dead_runs(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.get_run_queue_config().max_concurrent_runs == 1
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.run_monitoring_enabled

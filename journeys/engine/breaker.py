"""Segment-size circuit breaker: hold a journey's actions when its entering set jumps beyond a bound.

A journey trips at a run when at least `min_entering` entities entered it (enrolled + suppressed, as
the transition log records them) and that is more than `max_factor` times the previous run's count
or more than `max_share` of the entity table. A trip is stored in `journey_breaker.trips`; the
journey's due actions stay pending while any of its trips is unacknowledged and still beyond the
current bounds (so raising a bound releases it). An acknowledgement names the trip: `journey@run_id`.

No dagster import here: the decision is plain Python over numbers, the storage plain SQL.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import duckdb

from journeys.errors import JourneysError

B = "journey_breaker"
ACK_PATTERN = re.compile(r"^([a-z][a-z0-9_]*)@(r\d{8}T\d{6})$")

DDL = [
    f"create schema if not exists {B}",
    f"""create table if not exists {B}.trips (
        journey_id varchar not null,
        run_id varchar not null,             -- the run whose entering set tripped the breaker
        as_of timestamp not null,
        entity_type varchar not null,
        entering integer not null,           -- enrolled + suppressed at that run
        previous_entering integer,           -- at the run before (null: the journey's first run)
        entity_count bigint not null,        -- rows of the entity table at that run
        reasons varchar not null,
        tripped_at timestamp not null,       -- wall clock, UTC
        acknowledged_at timestamp,
        acknowledged_by varchar,
        primary key (journey_id, run_id)
    )""",
    # Runs the breaker has looked at: a committed run whose process died before the breaker saw it is
    # evaluated by the next run, whatever its T, so an explosion cannot slip through a crash.
    f"""create table if not exists {B}.evaluated_runs (
        run_id varchar primary key,
        as_of timestamp not null,
        evaluated_at timestamp not null      -- wall clock, UTC
    )""",
]


@dataclass(frozen=True)
class Bounds:
    max_factor: float = 10.0  # more than this times the previous run's entering count trips
    max_share: float = 0.25  # more than this share of the entity table trips
    min_entering: int = 50  # fewer entering than this never trips

    @classmethod
    def from_env(cls) -> "Bounds":
        """JOURNEYS_BREAKER_MAX_FACTOR / _MAX_SHARE / _MIN_ENTERING, as Dagster's resource reads them."""
        import os

        return cls(
            float(os.environ.get("JOURNEYS_BREAKER_MAX_FACTOR", cls.max_factor)),
            float(os.environ.get("JOURNEYS_BREAKER_MAX_SHARE", cls.max_share)),
            int(os.environ.get("JOURNEYS_BREAKER_MIN_ENTERING", cls.min_entering)),
        )


@dataclass(frozen=True)
class Entering:
    """One journey's numbers at one run."""

    journey_id: str
    entity_type: str
    entering: int
    previous: int | None
    entity_count: int


@dataclass(frozen=True)
class Trip:
    journey_id: str
    run_id: str
    as_of: dt.datetime
    entity_type: str
    entering: int
    previous: int | None
    entity_count: int
    reasons: tuple[str, ...]
    acknowledged: bool = False

    @property
    def ack(self) -> str:
        return f"{self.journey_id}@{self.run_id}"


def trip_reasons(
    entering: int, previous: int | None, entity_count: int, bounds: Bounds, entity: str = "entity"
) -> list[str]:
    """Why this entering count is beyond the bounds; empty when it is within them."""
    if entering < bounds.min_entering:
        return []
    reasons = []
    if previous is not None and entering > bounds.max_factor * previous:
        reasons.append(f"{entering} entering > {bounds.max_factor:g} x {previous} at the previous run")
    if entity_count > 0 and entering > bounds.max_share * entity_count:
        reasons.append(f"{entering} entering > {bounds.max_share:.0%} of {entity_count} {entity}s")
    return reasons


def evaluate(numbers: list[Entering], bounds: Bounds) -> dict[str, list[str]]:
    """Journey → reasons, for every journey of this run that trips (the pure decision)."""
    found = {}
    for n in numbers:
        reasons = trip_reasons(n.entering, n.previous, n.entity_count, bounds, n.entity_type)
        if reasons:
            found[n.journey_id] = reasons
    return found


def parse_acks(text: str | list[str] | None) -> list[tuple[str, str]]:
    """`journey@run_id` items, comma or space separated, as (journey, run_id); refuses anything else."""
    items = text if isinstance(text, list) else re.split(r"[,\s]+", text or "")
    acks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        match = ACK_PATTERN.match(item)
        if not match:
            raise JourneysError(
                f"breaker acknowledgement '{item}' is not journey@run_id; expected e.g. onboarding_drip@r20261102T090000 "
                "(the check's metadata names it)"
            )
        acks.append((match.group(1), match.group(2)))
    return acks


# ----------------------------------------------------------------------------- storage


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in DDL:
        con.execute(statement)


def run_numbers(con: duckdb.DuckDBPyConnection, run_id: str) -> list[Entering]:
    """Entering counts of every enabled journey at `run_id`, with the previous committed run's count
    (null on the journey's first run after being enabled) and the size of its entity table.

    Read from the transition log, so a retried run at the same T sees the numbers of the attempt
    that committed, not the empty diff of the retry."""
    rows = con.execute(
        """
        with this_run as (select run_id, as_of from journey_state.runs where run_id = ?),
        previous_run as (
            select r.run_id, r.as_of from journey_state.runs as r, this_run as t
            where r.status = 'committed' and r.as_of < t.as_of
            order by r.as_of desc limit 1
        ),
        counts as (
            select run_id, journey_id, count(*) as n from journey_state.transitions
            where event in ('enrolled', 'suppressed') and run_id in (select run_id from this_run union all select run_id from previous_run)
            group by all
        ),
        sizes as (
            select 'user' as entity_type, (select count(*) from staging.stg_users) as n
            union all select 'account', (select count(*) from staging.stg_accounts)
        )
        select j.journey_id, j.entity_type, coalesce(c.n, 0),
               case when p.run_id is null or j.enabled_at > p.as_of then null else coalesce(pc.n, 0) end,
               s.n
        from journey_state.journeys as j
        cross join this_run as t
        left join previous_run as p on true
        left join counts as c on c.run_id = t.run_id and c.journey_id = j.journey_id
        left join counts as pc on pc.run_id = p.run_id and pc.journey_id = j.journey_id
        left join sizes as s on s.entity_type = j.entity_type
        where j.enabled
        order by j.journey_id
        """,
        [run_id],
    ).fetchall()
    return [
        Entering(jid, entity, entering, previous, size or 0) for jid, entity, entering, previous, size in rows
    ]


def runs_to_evaluate(con: duckdb.DuckDBPyConnection, run_id: str) -> list[tuple[str, dt.datetime]]:
    """This run and any committed run since the last one evaluated (a run that died before its
    breaker ran), oldest first. The first evaluation ever looks at this run only: no retroactive trips."""
    last = con.execute(f"select max(as_of) from {B}.evaluated_runs").fetchone()[0]
    return con.execute(
        f"""select run_id, as_of from journey_state.runs
            where status = 'committed' and run_id not in (select run_id from {B}.evaluated_runs)
              and (run_id = ? or as_of > ?)
            order by as_of""",
        [run_id, last],
    ).fetchall()


def record_trips(con: duckdb.DuckDBPyConnection, run_id: str, as_of: dt.datetime, numbers: list[Entering],
                 tripped: dict[str, list[str]], now: dt.datetime) -> None:  # fmt: skip
    by_id = {n.journey_id: n for n in numbers}
    for jid, reasons in sorted(tripped.items()):
        n = by_id[jid]
        con.execute(
            f"""insert into {B}.trips (journey_id, run_id, as_of, entity_type, entering, previous_entering, entity_count,
                                       reasons, tripped_at)
                values (?, ?, ?, ?, ?, ?, ?, ?, ?)
                on conflict (journey_id, run_id) do nothing""",
            [
                jid,
                run_id,
                as_of,
                n.entity_type,
                n.entering,
                n.previous,
                n.entity_count,
                "; ".join(reasons),
                now,
            ],
        )


def acknowledge(
    con: duckdb.DuckDBPyConnection, acks: list[tuple[str, str]], by: str, now: dt.datetime
) -> list[str]:
    """Mark these trips acknowledged; returns the acknowledgements that matched no open trip."""
    unmatched = []
    for jid, run_id in acks:
        found = con.execute(
            f"update {B}.trips set acknowledged_at = ?, acknowledged_by = ? "
            f"where journey_id = ? and run_id = ? and acknowledged_at is null returning 1",
            [now, by, jid, run_id],
        ).fetchall()
        if not found:
            known = con.execute(
                f"select 1 from {B}.trips where journey_id = ? and run_id = ?", [jid, run_id]
            ).fetchall()
            if not known:
                unmatched.append(f"{jid}@{run_id}")
    return unmatched


def open_trips(con: duckdb.DuckDBPyConnection, bounds: Bounds) -> list[Trip]:
    """Unacknowledged trips still beyond the current bounds: their journeys are held."""
    rows = con.execute(
        f"""select journey_id, run_id, as_of, entity_type, entering, previous_entering, entity_count
            from {B}.trips where acknowledged_at is null order by as_of, journey_id"""
    ).fetchall()
    trips = []
    for jid, run_id, as_of, entity, entering, previous, size in rows:
        reasons = trip_reasons(entering, previous, size, bounds, entity)
        if reasons:
            trips.append(Trip(jid, run_id, as_of, entity, entering, previous, size, tuple(reasons)))
    return trips


@dataclass
class BreakerOutcome:
    """What the breaker saw and decided at one run (reported by the asset check)."""

    bounds: Bounds
    numbers: list[Entering]
    tripped_now: dict[str, list[str]]
    held: list[Trip]
    unmatched_acks: list[str]

    @property
    def held_journeys(self) -> set[str]:
        return {t.journey_id for t in self.held}


class Breaker:
    """The run's `hold` guard (called by the engine after the transitions commit, before any action runs):
    evaluate this run, record trips, apply acknowledgements, name the held journeys."""

    def __init__(self, bounds: Bounds, acks: list[tuple[str, str]], acknowledged_by: str):
        self.bounds, self.acks, self.acknowledged_by = bounds, acks, acknowledged_by
        self.outcome: BreakerOutcome | None = None

    def hold(self, con: duckdb.DuckDBPyConnection, report) -> set[str]:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        con.execute("begin")
        try:
            ensure_tables(con)
            tripped: dict[str, list[str]] = {}
            for run_id, as_of in runs_to_evaluate(con, report.run_id):
                seen = run_numbers(con, run_id)
                found = evaluate(seen, self.bounds)
                record_trips(con, run_id, as_of, seen, found, now)
                con.execute(
                    f"insert into {B}.evaluated_runs values (?, ?, ?) on conflict do nothing",
                    [run_id, as_of, now],
                )
                tripped.update(found)
            numbers = run_numbers(con, report.run_id)
            unmatched = acknowledge(con, self.acks, self.acknowledged_by, now)
            held = open_trips(con, self.bounds)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        self.outcome = BreakerOutcome(self.bounds, numbers, tripped, held, unmatched)
        return self.outcome.held_journeys

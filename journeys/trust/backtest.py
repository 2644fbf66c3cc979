"""`journeys backtest`: one journey replayed at past logical times on a scratch copy, the sources cut at each T.

The replay is the real engine (`journeys.engine.run.run`) at from, from+every, ..., to, on a copy whose
 * rules hold the journey alone (journeys it unenrolls from are kept, disabled, so the rules still validate;
   every segment and template stays),
 * journey state is empty, as if the journey had started at --from (journey-written attributes last set
   by another journey at or before --from are kept: their value then is known),
 * source tables are views as of each run's T (source_cut.py).
The live files are only read, to copy them.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import duckdb

from journeys.config import Settings
from journeys.engine.build import connect, prepare_warehouse
from journeys.engine.dbt import DbtProject
from journeys.engine.run import run
from journeys.errors import JourneysError
from journeys.progress import progress
from journeys.rules.model import duration_seconds
from journeys.rules.validate import load_and_validate
from journeys.trust.scratch import scratch_copy, scratch_executors, set_journey_enabled
from journeys.trust.source_cut import install_cut, quote, source_relations

S = "journey_state"
MAX_RUNS = 400
COUNTS = ("entered", "enrolled", "suppressed", "goal_achieved", "unenrolled", "completed")


def backtest(settings: Settings, journey_id: str, start: dt.datetime, end: dt.datetime, *, every: str = "1d",
             echo=print) -> dict:  # fmt: skip
    """Replay `journey_id` from `start` to `end` every `every`; per T and in total: entries, goals, exits, actions."""
    times = _times(start, end, every)
    rules = load_and_validate(settings.project_dir)  # a rule error stops here, before anything is copied
    if journey_id not in rules.journeys:
        raise JourneysError(f"unknown journey '{journey_id}'; expected one of: {', '.join(sorted(rules.journeys)) or '(none)'}")
    journey = rules.journeys[journey_id]
    notes = []
    with scratch_copy(settings) as scratch:
        if not journey.enabled:
            notes.append(f"{journey_id} is disabled; replayed as if enabled")
        _keep_only(scratch, rules, journey_id)
        prepare_warehouse(scratch)
        con = connect(scratch)
        try:
            _empty_state(con, journey_id, start)
            install_cut(con, source_relations(scratch.project_dir))
        finally:
            con.close()
        executors = scratch_executors(scratch, load_and_validate(scratch.project_dir))
        dbt = DbtProject(scratch.project_dir, scratch.db_path)  # one parse for every T
        ticks = []
        with progress(len(times), f"backtest {journey_id}") as advance:
            for t in times:
                before = _action_counts(scratch, journey_id)
                result = run(scratch, as_of=t, executors=executors, dbt=dbt)
                ticks.append(_tick(scratch, journey_id, result, before))
                advance()
        total = _total(scratch, journey_id, ticks)
    report = {"journey": journey_id, "from": start, "to": end, "every": every, "runs": len(times), "notes": notes,
              "ticks": ticks, "total": total}  # fmt: skip
    from journeys.trust.backtest_print import print_backtest

    print_backtest(report, echo)
    return report


def _times(start: dt.datetime, end: dt.datetime, every: str) -> list[dt.datetime]:
    try:
        step = dt.timedelta(seconds=duration_seconds(every))
    except (ValueError, KeyError, AttributeError, TypeError):
        raise JourneysError(f"--every '{every}' is not a duration; expected e.g. 30m, 12h, 1d or 1w") from None
    if step <= dt.timedelta(0):
        raise JourneysError(f"--every '{every}': expected a positive duration")
    if end < start:
        raise JourneysError(f"--to {end:%Y-%m-%d %H:%M:%S} is before --from {start:%Y-%m-%d %H:%M:%S}")
    count = int((end - start) / step) + 1
    if count > MAX_RUNS:
        raise JourneysError(f"{count} runs from --from to --to every {every}; at most {MAX_RUNS}: take a larger --every or a shorter window")
    return [start + n * step for n in range(count)]


def _keep_only(scratch: Settings, rules, journey_id: str) -> None:
    """The copy's rules: the journey alone (enabled); the journeys it unenrolls from stay, disabled, so it validates."""
    journey = rules.journeys[journey_id]
    referenced = set(journey.exit.unenroll_from) if journey.exit else set()
    for jid in rules.journeys:
        if jid == journey_id:
            if not journey.enabled:
                set_journey_enabled(scratch, rules, jid, True)
        elif jid in referenced:
            set_journey_enabled(scratch, rules, jid, False)  # no state, no enrollments: unenroll_from finds nothing
        else:
            (scratch.project_dir / rules.files[("journey", jid)].path).unlink()


def _empty_state(con: duckdb.DuckDBPyConnection, journey_id: str, start: dt.datetime) -> None:
    """Journey state as if the journey started at --from: every engine table emptied (whatever tables the engine
    has), but attributes another journey last wrote before --from, whose value at --from is known (one written
    at --from itself was written after that run's build, so the first run did not see it)."""
    con.execute("begin")
    con.execute(
        f"""delete from {S}.attributes where updated_at > ? or action_key is null
              or action_key in (select action_key from {S}.actions where journey_id = ?)""",
        [start, journey_id],
    )
    tables = [t for (t,) in con.execute(
        "select table_name from information_schema.tables where table_schema = ? and table_type = 'BASE TABLE' "
        "and table_catalog = current_database()", [S]).fetchall()]  # fmt: skip
    for table in tables:
        if table != "attributes":
            con.execute(f"delete from {S}.{quote(table)}")
    con.execute("commit")


def _action_counts(scratch: Settings, journey_id: str) -> dict[str, tuple[int, int]]:
    """action type -> (recorded, done) so far."""
    con = connect(scratch)
    try:
        rows = con.execute(
            f"""select action_type, count(*), sum(case when status = 'done' then 1 else 0 end)
                from {S}.actions where journey_id = ? group by 1""",
            [journey_id],
        ).fetchall()
    finally:
        con.close()
    return {r[0]: (r[1], int(r[2])) for r in rows}


def _tick(scratch: Settings, journey_id: str, result, before: dict) -> dict:
    """One run's figures: entries from the run's report, transitions from the log (every end, whatever ended it)."""
    after = _action_counts(scratch, journey_id)
    actions = {}
    for kind in sorted(after):
        due = after[kind][0] - before.get(kind, (0, 0))[0]
        done = after[kind][1] - before.get(kind, (0, 0))[1]
        if due or done:
            actions[kind] = {"due": due, "done": done}
    con = connect(scratch)
    try:
        events = dict(con.execute(
            f"select event, count(*) from {S}.transitions where journey_id = ? and run_id = ? group by 1",
            [journey_id, result.run_id]).fetchall())  # fmt: skip
        active, enrolled, goals = con.execute(
            f"""select sum(case when status = 'active' then 1 else 0 end), count(*),
                       sum(case when goal_achieved_at is not null then 1 else 0 end)
                from {S}.enrollments where journey_id = ?""",
            [journey_id],
        ).fetchone()
    finally:
        con.close()
    tick = {"as_of": result.as_of, "entered": result.transitions.entered.get(journey_id, 0),
            **{k: events.get(k, 0) for k in COUNTS[1:]}, "actions": actions}  # fmt: skip
    tick["active"] = int(active or 0)
    tick["goal_rate_to_date"] = round(goals / enrolled, 4) if enrolled else None
    return tick


def _total(scratch: Settings, journey_id: str, ticks: list[dict]) -> dict:
    total = {k: sum(t[k] for t in ticks) for k in COUNTS}
    con = connect(scratch)
    try:
        total["active"] = ticks[-1]["active"] if ticks else 0
        total["goal_rate"] = round(total["goal_achieved"] / total["enrolled"], 4) if total["enrolled"] else None
        total["exits"] = dict(con.execute(
            f"select end_reason, count(*) from {S}.enrollments where journey_id = ? and status = 'unenrolled' group by 1 order by 1",
            [journey_id]).fetchall())  # fmt: skip
        total["by_variant"] = {
            variant: {"enrolled": n, "goal_achieved": int(g), "goal_rate": round(g / n, 4)}
            for variant, n, g in con.execute(
                f"""select variant, count(*), sum(case when goal_achieved_at is not null then 1 else 0 end)
                    from {S}.enrollments where journey_id = ? group by 1 order by 1""", [journey_id]).fetchall()
        }  # fmt: skip
        statuses: dict[str, Counter] = {}
        for kind, status, n in con.execute(
            f"select action_type, status, count(*) from {S}.actions where journey_id = ? group by 1, 2 order by 1, 2", [journey_id]
        ).fetchall():
            statuses.setdefault(kind, Counter())[status] = n
    finally:
        con.close()
    total["actions"] = {kind: {"due": sum(c.values()), "done": c.get("done", 0), "by_status": dict(c)} for kind, c in statuses.items()}
    return total

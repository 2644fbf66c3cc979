"""`python -m bench.run --mature`: what the SPEC §9 constructs cost, plain rules against mature rules.

One pair = (users, journeys), in one process, on one generated data file: two scratch projects with
their own copy of the data, the plain rules (bench/rules/sql_rules) and the mature ones (the same
journeys with the §9 overlays of bench/rules/mature, see bench/project.py). Both get the full run at T0,
the same 1% change, and the incremental run at T1, interleaved (plain then mature, or the reverse with
`mature_first`, which `--repeat` alternates) so both sides see the same machine load.

Checks. The plain side is compared with the hand-written baseline as in every case. The mature side has
no hand-written baseline (bench/baseline.py implements SPEC §4.1 without §9), so it is checked against
what the §9 additions cannot change: segment membership (the segments are the same files) and, per
journey, who entered (a segment diff, independent of enrollments) in both runs; in the full run, on empty
state, also who was enrolled and suppressed (holdout enrollments are enrollments; exits, goals and steps
come after enrollment). And it must have done something: enrollments and actions recorded in both runs,
and evidence in its state of the constructs (holdout enrollments and their skipped actions, split paths,
webhook actions, enrollments waiting on a wait_until or a wait_until_date, or past them).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from bench.baseline import RunCounts
from bench.changes import apply_changes
from bench.project import JourneySpec, mature_constructs, select_journeys, write_project
from bench.run import (T0, T1, CaseResult, Meter, _fmt_s, _gib, baseline_run, best_of, compare, copy_data, engine_run,
                       generate, summarize)  # fmt: skip

SIDES = ("plain", "mature")
TARGET = 1.2  # the bound: mature / plain run time at 1M users
# the phases whose ratio mature / plain is reported (keys of bench.run.summarize)
RATIO_ROWS = [
    ("compile", "compile"), ("dbt build", "dbt build"), ("  generated models", "dbt models (generated)"),
    ("  staging + marts models", "dbt models (staging, marts)"), ("  dbt tests", "dbt tests"),
    ("  dbt overhead (parse, bookkeeping)", "dbt overhead"), ("transitions (one transaction)", "transitions"),
    ("other (lock, prepare, connect)", "other"), ("= project, no execution", "project (no execution)"),
    ("actions executed", "actions"), ("= project total", "project total"),
]  # fmt: skip
# evidence of each construct in the mature side's state after the incremental run; a zero fails the pair
REQUIRED_EVIDENCE = ("holdout enrollments", "holdout actions skipped", "split enrollments", "webhook actions",
                     "at or past a wait_until", "at or past a wait_until_date")  # fmt: skip


@dataclass
class Side:
    name: str
    project: Path
    db_path: Path
    meter: Meter = field(default_factory=Meter)
    runs: dict = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)


@dataclass
class PairResult:
    plain: CaseResult
    mature: CaseResult
    problems: list[str]  # the mature side's checks
    evidence: dict[str, dict[str, int]]  # run label -> construct evidence in the mature state
    constructs: dict[str, list[str]]  # journey -> the §9 constructs its mature document uses
    order: list[str]


def run_pair(users: int, journeys: int, work_dir: Path, data_db: Path | None = None, echo=print,
             execute: bool = True, mature_first: bool = False) -> PairResult:  # fmt: skip
    """Plain and mature rules on copies of one data file, in this process. `data_db`: a generated database
    (else one is generated here); execute=False leaves due actions pending (see bench.run.engine_phases)."""
    smtp_url = os.environ.pop("JOURNEYS_SMTP_URL", None)  # emails go to the outbox relation
    try:
        with local_webhooks():
            return _run_pair(users, journeys, Path(work_dir), data_db, echo, execute, mature_first)
    finally:
        if smtp_url is not None:
            os.environ["JOURNEYS_SMTP_URL"] = smtp_url


def _run_pair(users, journeys, work_dir: Path, data_db, echo, execute: bool, mature_first: bool) -> PairResult:
    from journeys.config import Settings
    from journeys.engine.dbt import DbtProject

    load_start = os.getloadavg()[0]
    specs = select_journeys(journeys)
    shared = Meter()
    if data_db is None:
        data_db = work_dir / "data.duckdb"
        with shared.phase("generate"):
            generate(data_db, users)
    sides = {name: Side(name, work_dir / name / "project", work_dir / name / "bench.duckdb") for name in SIDES}
    rows = {}
    for side in sides.values():
        write_project(side.project, specs, mature=side.name == "mature")
        with side.meter.phase("generate"):  # the copy of the data file
            rows = copy_data(data_db, side.db_path)
    echo(f"  data: {rows['users']:,} users, {rows['accounts']:,} accounts, {rows['events']:,} events "
         f"(one file, a copy per side)")  # fmt: skip
    engines = {name: (Settings.resolve(s.project, s.db_path), DbtProject(s.project, s.db_path)) for name, s in sides.items()}
    with shared.phase("warm-up"):
        warm_up(work_dir / "warm-up", specs)
    order = ["mature", "plain"] if mature_first else ["plain", "mature"]
    problems: list[str] = []
    evidence: dict[str, dict[str, int]] = {}
    changes = {}
    for label, as_of in (("full", T0), ("incremental", T1)):
        if label == "incremental":
            for name in order:
                with sides[name].meter.phase("apply 1% change"), duckdb.connect(str(sides[name].db_path)) as con:
                    changes[name] = apply_changes(con, T0, T1)
            if changes["plain"] != changes["mature"]:
                problems.append(f"the 1% change differs between the copies: {changes}")
            echo(f"  change: {changes['plain']}")
        for name in order:
            side = sides[name]
            settings, dbt = engines[name]
            counts = engine_run(settings, dbt, side.meter, label, as_of, execute, echo, who=name)
            side.runs[label] = {"project": counts, "baseline": None}
            if name == "plain":
                base = baseline_run(side.meter, side.db_path, specs, label, as_of)
                side.runs[label]["baseline"] = base
                side.mismatches += compare(label, counts, base, specs)
            else:
                evidence[label] = mature_evidence(side.db_path, as_of)
            run_seconds = next(ph.seconds for ph in reversed(side.meter.phases) if ph.name == f"{label} project run")
            echo(f"  {label} {name}: project {run_seconds:.1f} s")
        problems += check_mature(label, sides["plain"].runs[label]["project"], sides["mature"].runs[label]["project"], specs)
    for what in REQUIRED_EVIDENCE:
        if not evidence["incremental"].get(what):
            problems.append(f"mature: no {what} after both runs: the §9 construct did nothing")
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results = {
        name: CaseResult(users, journeys, rows, changes.get(name, {}), shared.phases + s.meter.phases, s.runs, s.mismatches,
                         max_rss, load_start)
        for name, s in sides.items()
    }  # fmt: skip
    return PairResult(results["plain"], results["mature"], problems, evidence, mature_constructs(specs), order)


def warm_up(folder: Path, specs: list[JourneySpec]) -> None:
    """dbt's first invocation in a process pays for imports and adapter set-up (~2-3 s) that the next ones do not:
    parse a throwaway copy of the plain project first, so that neither side's full run pays it. Each side still
    parses its own project in its full run (a new DbtProject), as a deployed run does after a rule change."""
    from journeys.engine.dbt import DbtProject

    write_project(folder / "project", specs)
    DbtProject(folder / "project", folder / "warm-up.duckdb")._runner()  # the parse; no database is opened
    shutil.rmtree(folder, ignore_errors=True)


def check_mature(label: str, plain: RunCounts, mature: RunCounts, specs: list[JourneySpec]) -> list[str]:
    """What the §9 additions cannot change, and that the mature side did something."""
    problems = []
    for seg in sorted(set(plain.membership) | set(mature.membership)):
        p, m = plain.membership.get(seg, 0), mature.membership.get(seg, 0)
        if p != m:
            problems.append(f"{label}: segment {seg}: mature {m} members, plain {p}")
    kinds = ("entered", "enrolled", "suppressed") if label == "full" else ("entered",)
    for kind in kinds:
        for spec in specs:
            p, m = plain.journeys[kind].get(spec.id, 0), mature.journeys[kind].get(spec.id, 0)
            if p != m:
                problems.append(f"{label}: journey {spec.id}: {kind}: mature {m}, plain {p}")
    for kind in ("enrolled", "actions_due") if label == "full" else ("actions_due",):
        if not sum(mature.journeys[kind].values()):
            problems.append(f"{label}: mature: nothing {kind.replace('_', ' ')}")
    return problems


def mature_evidence(db_path: Path, as_of) -> dict[str, int]:
    """The §9 constructs at work in the state (cumulative, after the run at `as_of`)."""
    S = "journey_state"
    queries = {
        "holdout enrollments": f"select count(*) from {S}.enrollments where variant = 'holdout'",
        "holdout actions skipped": f"select count(*) from {S}.actions where status = 'skipped' and reason = 'holdout'",
        "split enrollments": f"select count(*) from {S}.enrollments where split_path is not null",
        "webhook actions": f"select count(*) from {S}.actions where action_type = 'webhook'",
        "parked at a wait_until": f"""
            select count(*) from {S}.enrollments as e inner join {S}.journey_steps as s
                on s.journey_id = e.journey_id and s.version = e.journey_version and s.step_id = e.cursor_step_id
            where e.status = 'active' and s.kind = 'wait_until'""",
        "actions past a wait_until": f"""
            select count(*) from {S}.actions as a
            inner join (select distinct journey_id, step_id from {S}.journey_steps where kind = 'wait_until') as w
                on w.journey_id = a.journey_id
               and (a.step_id like w.step_id || '.then.%' or a.step_id like w.step_id || '.on_timeout.%')""",
        "waiting on a wait_until_date": f"""
            select count(*) from {S}.enrollments as e
            inner join (select distinct journey_id, version, next_step_id from {S}.journey_steps
                        where kind = 'wait_until_date') as w
                on w.journey_id = e.journey_id and w.version = e.journey_version and w.next_step_id = e.cursor_step_id
            where e.status = 'active' and e.cursor_at > ?""",
        "actions past a wait_until_date": f"""
            select count(*) from {S}.actions as a
            inner join (select distinct journey_id, next_step_id from {S}.journey_steps
                        where kind = 'wait_until_date') as w
                on w.journey_id = a.journey_id and w.next_step_id = a.step_id""",
        "ended: left_entry": f"select count(*) from {S}.enrollments where end_reason = 'left_entry'",
        "ended: date_passed": f"select count(*) from {S}.enrollments where end_reason = 'date_passed'",
        "ended: action_failed": f"select count(*) from {S}.enrollments where end_reason = 'action_failed'",
        "goal achieved": f"select count(*) from {S}.enrollments where goal_achieved_at is not null",
        "actions deferred": f"select count(*) from {S}.actions where status = 'deferred'",
    }
    with duckdb.connect(str(db_path), read_only=True) as con:
        out = {k: con.execute(q, [as_of] if "?" in q else []).fetchone()[0] for k, q in queries.items()}
        for reason, n in con.execute(f"""select split_part(reason, ':', 1), count(*) from {S}.actions
                                         where status = 'deferred' group by 1 order by 1""").fetchall():
            out[f"deferred: {reason}"] = n
    out["at or past a wait_until"] = out["parked at a wait_until"] + out["actions past a wait_until"]
    out["at or past a wait_until_date"] = (out["waiting on a wait_until_date"] + out["actions past a wait_until_date"]
                                           + out["ended: date_passed"])  # fmt: skip
    return out


@contextlib.contextmanager
def local_webhooks():
    """Webhooks executed by the benchmark (ACTIONS=execute) render and encode their body like the real executor
    (actions/webhook.py), then succeed without leaving the machine: the bench posts to no real server."""
    from actions.base import ActionFailed
    from actions.webhook import WebhookExecutor, _render
    from journeys.engine import run as run_module

    class LocalWebhookExecutor(WebhookExecutor):
        def deliver(self, action, ctx) -> None:
            p = action.params
            if not any(p["url"].startswith(prefix) for prefix in self.allow):
                raise ActionFailed(f"{p['url']} is no longer allowed by journeys.yml webhooks.allow", permanent=True)
            variables = ctx.template_variables(action)
            json.dumps(_render(p.get("body"), ctx, variables))
            for value in (p.get("headers") or {}).values():
                ctx.render(value, variables)

    original = run_module.default_executors

    def executors(settings, rules):
        return [LocalWebhookExecutor(e.allow) if isinstance(e, WebhookExecutor) else e for e in original(settings, rules)]

    run_module.default_executors = executors
    try:
        yield
    finally:
        run_module.default_executors = original


# --------------------------------------------------------------------------- report


def summarize_pair(r: PairResult) -> dict:
    plain, mature = summarize(r.plain), summarize(r.mature)
    checks = [f"plain vs baseline: {m}" for m in r.plain.mismatches] + [f"mature: {p}" for p in r.problems]
    return {
        "mode": "mature", "users": r.plain.users, "journeys": r.plain.journeys, "events": plain["events"],
        "order": "/".join(r.order), "load at start": plain["load at start"],
        "plain": plain, "mature": mature, "ratios": ratios(plain, mature),
        "evidence": r.evidence, "constructs": r.constructs,
        "plain checks": "OK" if not r.plain.mismatches else r.plain.mismatches,
        "mature checks": "OK" if not r.problems else r.problems,
        "checks": "OK" if not checks else checks,
    }  # fmt: skip


def ratios(plain: dict, mature: dict) -> dict:
    out = {}
    for label in ("full", "incremental"):
        p, m = plain["runs"][label], mature["runs"][label]
        out[label] = {key: round(m[key] / p[key], 3) if p[key] else None for _, key in RATIO_ROWS}
    return out


def best_of_pairs(reps: list[dict]) -> dict:
    """Repetitions of one pair: each side's best time per phase (bench.run.best_of), the ratio of the bests,
    and each repetition's own ratio (its two sides ran within seconds of each other)."""
    if len(reps) == 1:
        return reps[0]
    out = dict(reps[0])
    out["plain"], out["mature"] = best_of([r["plain"] for r in reps]), best_of([r["mature"] for r in reps])
    out["ratios"] = ratios(out["plain"], out["mature"])
    out["order"] = ", ".join(r["order"] for r in reps)
    out["load at start"] = "/".join(str(r["load at start"]) for r in reps)
    for key in ("checks", "plain checks", "mature checks"):
        out[key] = next((r[key] for r in reps if r[key] != "OK"), "OK")
    out["repetitions"] = reps
    return out


def print_pair(s: dict, echo=print) -> None:
    p, m = s["plain"]["runs"], s["mature"]["runs"]
    reps = s.get("repetitions")
    echo(f"\n== {s['users']:,} users, {s['journeys']} journeys, {s['events']:,} events: plain vs mature (§9) rules, "
         f"same data (order {s['order']}; load at start {s['load at start']}"
         + (f"; best of {len(reps)} repetitions per phase" if reps else "") + ")")
    echo(f"{'phase':38} {'plain full':>11} {'mature full':>11} {'ratio':>6}   {'plain incr':>11} {'mature incr':>11} {'ratio':>6}")
    for title, key in RATIO_ROWS:
        cells = []
        for label in ("full", "incremental"):
            r = s["ratios"][label][key]
            cells.append(f"{_fmt_s(p[label][key]):>11} {_fmt_s(m[label][key]):>11} {(f'{r:.2f}x' if r else '-'):>6}")
        echo(f"{title:38} {cells[0]}   {cells[1]}")
    for label in ("full", "incremental"):
        echo(f"{'peak RSS (' + label + ')':38} plain {_gib(p[label]['peak RSS project'])}, mature {_gib(m[label]['peak RSS project'])}")
    echo(f"{'load average (plain / mature)':38} full {p['full']['load project']} / {m['full']['load project']}   "
         f"incremental {p['incremental']['load project']} / {m['incremental']['load project']}")
    for label in ("full", "incremental"):
        echo(f"{'enrolled / actions due / executed (' + label[:4] + ')':38} plain {p[label]['enrolled']} / "
             f"{p[label]['actions due']} / {p[label]['executed actions']}   mature {m[label]['enrolled']} / "
             f"{m[label]['actions due']} / {m[label]['executed actions']}")
    key = "project (no execution)"
    verdicts = []
    for label in ("full", "incremental"):
        r = s["ratios"][label][key]
        each = ", ".join(f"{x['ratios'][label][key]:.2f}x" for x in reps or [])
        per_rep = f" (per repetition {each})" if reps else ""
        verdicts.append(f"{label} {r:.2f}x{per_rep}")
    worst = max(s["ratios"][label][key] for label in ("full", "incremental"))
    echo(f"ratio mature/plain, no execution: {'; '.join(verdicts)} -> "
         f"≤ {TARGET}x {'holds' if worst <= TARGET else 'MISSED'}")
    for label in ("full", "incremental"):
        echo(f"costlier with §9 ({label}): " + ", ".join(f"{n} {a:.2f} -> {b:.2f} s" for n, a, b in costlier(s, label)[:8]))
    plain_base = s["plain"]["runs"]
    echo(f"plain vs hand-written baseline: full {plain_base['full']['ratio (no execution)']:.2f}x, "
         f"incremental {plain_base['incremental']['ratio (no execution)']:.2f}x; "
         + ("checks agree" if s["plain checks"] == "OK" else f"CHECKS FAILED ({len(s['plain checks'])})"))
    echo("mature: no hand-written baseline (bench/baseline.py has no §9); checked: segment membership and entered "
         "per journey = plain (both runs), enrolled and suppressed = plain (full run), enrollments, actions and "
         "every construct's evidence nonzero: " + ("OK" if s["mature checks"] == "OK" else "FAILED"))
    echo("mature rules: " + "; ".join(f"{j}: {', '.join(c)}" for j, c in s["constructs"].items()))
    for label, ev in s["evidence"].items():
        echo(f"§9 evidence after the {label} run: " + ", ".join(f"{k} {v:,}" for k, v in ev.items()))
    for check in ("plain checks", "mature checks"):
        if s[check] != "OK":
            echo(f"{check.upper()} FAILED ({len(s[check])}):")
            for line in s[check][:40]:
                echo("  " + line)


def costlier(s: dict, label: str) -> list[tuple[str, float, float]]:
    """dbt nodes and transition statements that took longer with the mature rules, the largest difference first."""
    p, m = s["plain"]["runs"][label], s["mature"]["runs"][label]
    rows = []
    for key in ("nodes", "transition statements"):
        a, b = p.get(key, {}), m.get(key, {})
        rows += [(name, a.get(name, 0.0), b.get(name, 0.0)) for name in set(a) | set(b)]
    return sorted((r for r in rows if r[2] > r[1]), key=lambda r: r[1] - r[2])


def main_case(args, users: int, journeys: int) -> dict:
    """The child process of one pair (bench.run --case --mature)."""
    result = run_pair(users, journeys, args.work_dir, args.data, echo=lambda message: print(message, flush=True),
                      execute=args.actions == "execute", mature_first=args.mature_first)  # fmt: skip
    return summarize_pair(result)

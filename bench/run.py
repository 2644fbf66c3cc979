"""`make bench`: the engine's full and incremental runs against the hand-written baseline, phase by phase.

One case = (users, journeys): generate the sources at T0 with the project's generator, run the engine at
T0 (first, full run on empty state) and the baseline at T0, apply the ~1% change (bench/changes.py),
run both again at T1 = T0 + 1h, and check that both sides decided the same (members per segment; per
journey entered, enrolled, suppressed, unenrolled, goal achieved, completed, actions due). A
disagreement fails the benchmark (exit 1). Each case runs in its own process, so its peak RSS is its own.

    python -m bench.run --users 20000 --journeys 20
    python -m bench.run --users 100000,1000000 --journeys 10,100 --json bench/out.json
    python -m bench.run --users 1000000 --mature --actions skip    # plain vs §9 rules (bench/pair.py)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from bench.baseline import COUNT_KINDS, Baseline, RunCounts
from bench.changes import apply_changes
from bench.project import JourneySpec, select_journeys, write_project

T0 = dt.datetime(2026, 3, 2, 9, 0, 0)
T1 = T0 + dt.timedelta(hours=1)
GIB = 1024**3


# --------------------------------------------------------------------------- measuring


def _vm(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> None:
    """Linux: restart the high-water mark (VmHWM) so each phase reports its own peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    """Peak RSS in bytes since the last reset (VmHWM), else since the process started (getrusage)."""
    hwm = _vm("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Phase:
    name: str
    seconds: float
    peak_rss: int
    load: float  # 1-minute load average when the phase ended
    detail: dict = field(default_factory=dict)


class Meter:
    """Times phases; each phase's peak RSS is measured from a reset at its start."""

    def __init__(self):
        self.phases: list[Phase] = []

    @contextlib.contextmanager
    def phase(self, name: str, **detail):
        reset_peak_rss()
        start = time.perf_counter()
        record = Phase(name, 0.0, 0, 0.0, dict(detail))
        try:
            yield record
        finally:
            record.seconds = time.perf_counter() - start
            record.peak_rss = peak_rss()
            record.load = os.getloadavg()[0]
            self.phases.append(record)


@contextlib.contextmanager
def engine_phases(meter: Meter, prefix: str, execute: bool = True):
    """Time the phases of journeys.engine.run.run() by wrapping the functions it calls (the code path is unchanged).

    execute=False leaves the due actions pending instead of executing them (for sizes where executing
    hundreds of thousands of actions one by one would take longer than the rest of the benchmark)."""
    from journeys.engine import run as run_module
    from journeys.engine.execute import ExecutionCounts

    wrapped = {"compile_project": "compile", "build_models": "dbt build", "_transitions": "transitions",
               "execute_due_actions": "actions"}  # fmt: skip
    originals = {name: getattr(run_module, name) for name in wrapped if hasattr(run_module, name)}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            with meter.phase(f"{prefix} {wrapped[name]}") as record:
                result = fn(*args, **kwargs)
                if name == "build_models":
                    record.detail["nodes"] = [(n.name, n.resource_type, round(n.seconds, 3)) for n in result]
                if name == "execute_due_actions":
                    record.detail["executed"] = sum(result.done.values()) + sum(result.failed.values())
                if name == "_transitions":
                    record.detail["statements"] = sorted(((k, round(v, 3)) for k, v in statements.items()),
                                                         key=lambda x: -x[1])
                return result
        return timed

    # the transitions' statements, timed one by one (the slowest are reported)
    from journeys.engine.transitions import RunTransitions

    statements: dict[str, float] = {}
    original_sql = RunTransitions.sql

    def timed_sql(self, statement, params=None):
        start = time.perf_counter()
        try:
            return original_sql(self, statement, params)
        finally:
            words = statement.split()
            label = " ".join(words[3:6] if words[:3] == ["create", "or", "replace"] else words[:5])
            statements[label] = statements.get(label, 0.0) + time.perf_counter() - start

    RunTransitions.sql = timed_sql
    for name, fn in originals.items():
        if name == "execute_due_actions" and not execute:
            fn = lambda *args, **kwargs: ExecutionCounts()  # noqa: E731
        setattr(run_module, name, wrap(name, fn))
    try:
        yield
    finally:
        RunTransitions.sql = original_sql
        for name, fn in originals.items():
            setattr(run_module, name, fn)


# --------------------------------------------------------------------------- one case


@dataclass
class CaseResult:
    users: int
    journeys: int
    rows: dict[str, int]
    change: dict[str, int]
    phases: list[Phase]
    runs: dict[str, dict]  # "full" / "incremental" -> {"project": RunCounts, "baseline": RunCounts}
    mismatches: list[str]
    max_rss: int = 0  # whole process (ru_maxrss)
    load_start: float = 0.0

    def seconds(self, name: str) -> float:
        return sum(p.seconds for p in self.phases if p.name == name)

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)


def engine_counts(db_path: Path, report, run_id: str) -> RunCounts:
    """What the engine decided in one run, in the baseline's terms."""
    counts = RunCounts()
    with duckdb.connect(str(db_path)) as con:
        counts.membership = dict(con.execute("select segment_id, count(*) from main.segment_membership group by 1").fetchall())
        due = dict(con.execute("select journey_id, count(*) from journey_state.actions where run_id = ? group by 1",
                               [run_id]).fetchall())  # fmt: skip
    t = report.transitions
    counts.journeys = {
        "entered": t.entered, "enrolled": t.enrolled, "suppressed": t.suppressed, "unenrolled": t.unenrolled,
        "goal_achieved": t.goal_achieved, "completed": t.completed, "actions_due": due,
    }  # fmt: skip
    for kind in counts.journeys:
        counts.journeys[kind] = {j: n for j, n in counts.journeys[kind].items() if n}
    return counts


def compare(label: str, project: RunCounts, baseline: RunCounts, specs: list[JourneySpec]) -> list[str]:
    problems = []
    for seg in sorted(set(project.membership) | set(baseline.membership)):
        p, b = project.membership.get(seg, 0), baseline.membership.get(seg, 0)
        if p != b:
            problems.append(f"{label}: segment {seg}: project {p} members, baseline {b}")
    for kind in COUNT_KINDS:
        for spec in specs:
            p, b = project.journeys[kind].get(spec.id, 0), baseline.journeys[kind].get(spec.id, 0)
            if p != b:
                problems.append(f"{label}: journey {spec.id}: {kind}: project {p}, baseline {b}")
        extra = set(project.journeys[kind]) - {s.id for s in specs}
        problems += [f"{label}: {kind}: unexpected journey {j} in the project's counts" for j in sorted(extra)]
    return problems


def generate(db_path: Path, users: int) -> dict[str, int]:
    from journeys.sample.generate import generate_sample_data

    db_path.parent.mkdir(parents=True, exist_ok=True)
    if db_path.exists():
        db_path.unlink()
    with duckdb.connect(str(db_path)) as con:
        con.execute("set enable_progress_bar = false")
        return generate_sample_data(con, users=users, origin=T0, as_of=T0)


def engine_run(settings, dbt, meter: Meter, label: str, as_of: dt.datetime, execute: bool, echo, who: str = "project") -> RunCounts:
    """One engine run at `as_of`, its phases timed into `meter` under `label`; what it decided."""
    from journeys.engine.run import run, run_id_for

    with meter.phase(f"{label} project run"), engine_phases(meter, label, execute):
        report = run(settings, as_of=as_of, dbt=dbt)
    done = {p.name: p for p in meter.phases if p.name.startswith(f"{label} ")}
    slow = sorted(done[f"{label} dbt build"].detail.get("nodes", []), key=lambda n: -n[2])[:4] \
        if f"{label} dbt build" in done else []
    echo(f"  {label} {who} phases: " + ", ".join(f"{n[len(label) + 1:]} {p.seconds:.1f} s" for n, p in done.items())
         + "; slowest dbt nodes: " + ", ".join(f"{n} {s:.1f} s" for n, _, s in slow))
    return engine_counts(settings.db_path, report, run_id_for(as_of))


def baseline_run(meter: Meter, db_path: Path, specs: list[JourneySpec], label: str, as_of: dt.datetime) -> RunCounts:
    """The hand-written baseline at `as_of` on the same database (its state in its own schema), timed."""
    with meter.phase(f"{label} baseline") as record, duckdb.connect(str(db_path)) as con:
        baseline = Baseline(con, specs)
        if label == "full":
            baseline.setup()
        baseline.timings.clear()
        counts = baseline.run(as_of)
        record.detail["statements"] = [(k, round(v, 3)) for k, v in sorted(baseline.timings, key=lambda x: -x[1])[:6]]
    return counts


def copy_data(data_db: Path, db_path: Path) -> dict[str, int]:
    """A copy of a generated database, and its row counts."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_db, db_path)
    with duckdb.connect(str(db_path)) as con:
        return {t: con.execute(f"select count(*) from raw.{t}").fetchone()[0]
                for t in ("users", "accounts", "subscriptions", "custom_attributes", "events")}  # fmt: skip


def run_case(users: int, journeys: int, work_dir: Path, data_db: Path | None = None, echo=print,
             execute: bool = True) -> CaseResult:
    """One case in this process. `data_db`: a generated database to copy (else it is generated here);
    execute=False: due actions are recorded but not executed (see engine_phases)."""
    smtp_url = os.environ.pop("JOURNEYS_SMTP_URL", None)  # emails go to the outbox relation
    try:
        return _run_case(users, journeys, Path(work_dir), data_db, echo, execute)
    finally:
        if smtp_url is not None:
            os.environ["JOURNEYS_SMTP_URL"] = smtp_url


def _run_case(users: int, journeys: int, work_dir: Path, data_db: Path | None, echo, execute: bool) -> CaseResult:
    from journeys.config import Settings
    from journeys.engine.dbt import DbtProject

    load_start = os.getloadavg()[0]
    specs = select_journeys(journeys)
    project = write_project(work_dir / "project", specs)
    db_path = work_dir / "bench.duckdb"
    meter = Meter()
    with meter.phase("generate"):
        if data_db is not None:
            rows = copy_data(data_db, db_path)
        else:
            rows = generate(db_path, users)
    echo(f"  data: {rows['users']:,} users, {rows['accounts']:,} accounts, {rows['events']:,} events")
    settings = Settings.resolve(project, db_path)
    dbt = DbtProject(project, db_path)
    runs: dict[str, dict] = {}
    mismatches: list[str] = []
    change: dict[str, int] = {}
    for label, as_of in (("full", T0), ("incremental", T1)):
        if label == "incremental":
            with meter.phase("apply 1% change"), duckdb.connect(str(db_path)) as con:
                change = apply_changes(con, T0, T1)
            echo(f"  change: {change}")
        project_counts = engine_run(settings, dbt, meter, label, as_of, execute, echo)
        baseline_counts = baseline_run(meter, db_path, specs, label, as_of)
        runs[label] = {"project": project_counts, "baseline": baseline_counts}
        mismatches += compare(label, project_counts, baseline_counts, specs)
        echo(f"  {label}: project {meter.phases[-2].seconds:.1f} s, baseline {meter.phases[-1].seconds:.1f} s")
    result = CaseResult(users, journeys, rows, change, meter.phases, runs, mismatches,
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, load_start)  # fmt: skip
    return result


# --------------------------------------------------------------------------- report


def _fmt_s(seconds: float) -> str:
    return f"{seconds:8.2f} s"


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def summarize(r: CaseResult) -> dict:
    """The figures of one case: per run, the engine's phases, the baseline, ratios, peaks, loads."""
    out = {"users": r.users, "journeys": r.journeys, "events": r.rows.get("events"), "runs": {}}
    for label in ("full", "incremental"):
        run_phase = r.phase(f"{label} project run")
        build = r.phase(f"{label} dbt build")
        nodes = build.detail.get("nodes", []) if build else []
        parts = {name: r.seconds(f"{label} {name}") for name in ("compile", "dbt build", "transitions", "actions")}
        total = run_phase.seconds
        no_exec = total - parts["actions"]
        baseline = r.phase(f"{label} baseline")  # None: no hand-written baseline for these rules (--mature)
        project_peak = max((p.peak_rss for p in r.phases if p.name.startswith(f"{label} ") and "baseline" not in p.name), default=0)
        generated = {n: s for n, kind, s in nodes if kind == "model" and n in GENERATED}
        transitions = r.phase(f"{label} transitions")
        statements = transitions.detail.get("statements", []) if transitions else []
        out["runs"][label] = {
            **{k: round(v, 3) for k, v in parts.items()},
            "other": round(total - sum(parts.values()), 3),
            "dbt models (generated)": round(sum(generated.values()), 3),
            "dbt models (staging, marts)": round(sum(s for n, kind, s in nodes if kind == "model" and n not in GENERATED), 3),
            "dbt tests": round(sum(s for _, kind, s in nodes if kind == "test"), 3),
            "dbt overhead": round(parts["dbt build"] - sum(s for _, _, s in nodes), 3),
            "generated": {n: round(s, 3) for n, s in sorted(generated.items(), key=lambda x: -x[1])},
            "slowest tests": sorted(((n, s) for n, kind, s in nodes if kind == "test"), key=lambda x: -x[1])[:3],
            "slowest transition statements": statements[:6],
            "transition statements": dict(statements),
            "nodes": {n: s for n, _, s in nodes},
            "slowest baseline statements": baseline.detail.get("statements", []) if baseline else [],
            "project (no execution)": round(no_exec, 3),
            "project total": round(total, 3),
            "executed actions": (r.phase(f"{label} actions").detail.get("executed", 0) if r.phase(f"{label} actions") else 0),
            "baseline": round(baseline.seconds, 3) if baseline else None,
            "ratio (no execution)": round(no_exec / baseline.seconds, 2) if baseline else None,
            "ratio (total)": round(total / baseline.seconds, 2) if baseline else None,
            "peak RSS project": project_peak,
            "peak RSS baseline": baseline.peak_rss if baseline else None,
            "load project": round(run_phase.load, 2),
            "load baseline": round(baseline.load, 2) if baseline else None,
            "enrolled": sum(r.runs[label]["project"].journeys["enrolled"].values()),
            "actions due": sum(r.runs[label]["project"].journeys["actions_due"].values()),
        }
    out["max RSS (process)"] = r.max_rss
    out["load at start"] = round(r.load_start, 2)
    out["change"] = r.change
    out["checks"] = "OK" if not r.mismatches else r.mismatches
    return out


def best_of(reps: list[dict]) -> dict:
    """Repetitions of one case: the best (lowest) time of each phase, the highest peak RSS, every load."""
    if len(reps) == 1:
        return reps[0]
    out = json.loads(json.dumps(reps[0]))
    for label, figures in out["runs"].items():
        for key, value in figures.items():
            values = [r["runs"][label][key] for r in reps]
            if value is None:  # no baseline (--mature)
                continue
            if key.startswith("peak RSS"):
                figures[key] = max(values)
            elif key.startswith("load"):
                figures[key] = "/".join(str(v) for v in values)
            elif isinstance(value, (int, float)) and key not in ("enrolled", "actions due", "executed actions"):
                figures[key] = min(values)
            elif isinstance(value, dict) and key in ("generated", "transition statements", "nodes"):
                figures[key] = {k: min(r["runs"][label][key].get(k, v) for r in reps) for k, v in value.items()}
        no_exec, total, base = figures["project (no execution)"], figures["project total"], figures["baseline"]
        if base:
            figures["ratio (no execution)"], figures["ratio (total)"] = round(no_exec / base, 2), round(total / base, 2)
    out["checks"] = next((r["checks"] for r in reps if r["checks"] != "OK"), "OK")
    out["repetitions"] = reps
    out["load at start"] = "/".join(str(r["load at start"]) for r in reps)
    return out


GENERATED = ("event_features", "user_features", "account_features", "segment_membership", "journey_eligible", "journey_candidates",
             "journey_goal_matches", "journey_exit_matches", "journey_condition_matches")  # fmt: skip


def print_case(s: dict, echo=print) -> None:
    f, i = s["runs"]["full"], s["runs"]["incremental"]
    reps = f", best of {len(s['repetitions'])} repetitions" if s.get("repetitions") else ""
    echo(f"\n== {s['users']:,} users, {s['journeys']} journeys, {s['events']:,} events "
         f"(load at start {s['load at start']}{reps})")
    rows = [
        ("compile", "compile"), ("dbt build", "dbt build"), ("  generated models", "dbt models (generated)"),
        ("  staging + marts models", "dbt models (staging, marts)"), ("  dbt tests", "dbt tests"),
        ("  dbt overhead (parse, bookkeeping)", "dbt overhead"), ("transitions (one transaction)", "transitions"),
        ("other (lock, prepare, connect)", "other"), ("= project, no execution", "project (no execution)"),
        ("actions executed", "actions"), ("= project total", "project total"), ("baseline (hand-written SQL)", "baseline"),
    ]  # fmt: skip
    echo(f"{'phase':38} {'full run':>12} {'incremental':>12}")
    for title, key in rows:
        echo(f"{title:38} {_fmt_s(f[key]):>12} {_fmt_s(i[key]):>12}")
    echo(f"{'ratio project/baseline (no execution)':38} {f['ratio (no execution)']:>11.2f}x {i['ratio (no execution)']:>11.2f}x")
    echo(f"{'ratio project/baseline (total)':38} {f['ratio (total)']:>11.2f}x {i['ratio (total)']:>11.2f}x")
    echo(f"{'incremental / full (no execution)':38} {'':>12} {i['project (no execution)'] / f['project (no execution)']:>11.2f}x")
    echo(f"{'peak RSS project':38} {_gib(f['peak RSS project']):>12} {_gib(i['peak RSS project']):>12}")
    echo(f"{'peak RSS baseline':38} {_gib(f['peak RSS baseline']):>12} {_gib(i['peak RSS baseline']):>12}")
    echo(f"{'load average (project / baseline)':38} {f['load project']} / {f['load baseline']}   {i['load project']} / {i['load baseline']}")
    echo(f"{'enrolled / actions due / executed':38} {f['enrolled']:>5} / {f['actions due']} / {f['executed actions']}"
         f"   {i['enrolled']} / {i['actions due']} / {i['executed actions']}")
    echo(f"slowest generated models (full): " + ", ".join(f"{n} {s:.2f} s" for n, s in list(f["generated"].items())[:4]))
    echo(f"slowest dbt tests (full): " + ", ".join(f"{n} {s:.2f} s" for n, s in f["slowest tests"]))
    echo(f"slowest transition statements (full): " + ", ".join(f"{n} {s:.2f} s" for n, s in f["slowest transition statements"][:4]))
    echo(f"slowest baseline statements (full): " + ", ".join(f"{n} {s:.2f} s" for n, s in f["slowest baseline statements"][:4]))
    if s["checks"] == "OK":
        echo("checks: project and baseline agree on every count")
    else:
        echo(f"CHECKS FAILED ({len(s['checks'])} disagreements):")
        for line in s["checks"][:40]:
            echo("  " + line)


def print_growth(summaries: list[dict], echo=print) -> None:
    """How cost grows: users (same journeys) and journeys (same users)."""
    key = "project (no execution)"
    lines = []
    by = {(s["users"], s["journeys"]): s for s in summaries}
    for (u1, j1), a in sorted(by.items()):
        for (u2, j2), b in sorted(by.items()):
            if (j1 == j2 and u2 > u1) or (u1 == u2 and j2 > j1):
                for label in ("full", "incremental"):
                    pa, pb = a["runs"][label][key], b["runs"][label][key]
                    ba, bb = a["runs"][label]["baseline"], b["runs"][label]["baseline"]
                    lines.append(f"{u1:>10,}x{j1:<3} -> {u2:>10,}x{j2:<3} {label:12} project {pb / pa:6.2f}x   baseline {bb / ba:6.2f}x")
    if lines:
        echo("\n== growth (time of the larger case / the smaller; users x journeys)")
        for line in lines:
            echo(line)


def _jsonable(obj):
    if isinstance(obj, (RunCounts, Phase)):
        return asdict(obj)
    raise TypeError(type(obj))


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="20000", help="user counts, comma-separated (default 20000)")
    parser.add_argument("--journeys", default="20", help="journey counts, comma-separated, 1-100 (default 20)")
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: a new temp folder, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--actions", choices=("execute", "skip"), default="execute",
                        help="execute the due actions (default) or leave them pending (large sizes)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each case N times and report the best time of each phase (a busy machine)")
    parser.add_argument("--mature", action="store_true",
                        help="per case, the plain rules and the mature ones (SPEC §9 constructs, bench/rules/mature) on "
                             "the same data, and the ratio mature/plain (bench/pair.py)")
    parser.add_argument("--mature-first", action="store_true", help=argparse.SUPPRESS)  # pair order (--repeat alternates)
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)  # one case, in this process
    parser.add_argument("--data", type=Path, help="a database generated earlier for this size (copied per case)")
    args = parser.parse_args(argv)
    users = [int(u.replace("_", "")) for u in args.users.split(",") if u]
    journeys = [int(j) for j in args.journeys.split(",") if j]

    if args.case and args.mature:  # child process: one plain/mature pair
        from bench.pair import main_case

        print("RESULT " + json.dumps(main_case(args, users[0], journeys[0]), default=_jsonable), flush=True)
        return 0
    if args.case:  # child process: one case, figures as JSON on the last line
        result = run_case(users[0], journeys[0], args.work_dir, args.data, echo=lambda m: print(m, flush=True),
                          execute=args.actions == "execute")
        print("RESULT " + json.dumps(summarize(result), default=_jsonable), flush=True)
        return 0

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="journeys-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    summaries = []
    try:
        for n_users in users:
            data = args.data if len(users) == 1 else None
            if data is None and (len(journeys) > 1 or args.repeat > 1):
                data = work / f"data-{n_users}.duckdb"
                print(f"generating {n_users:,} users ...", flush=True)
                start = time.perf_counter()
                _generate_child(n_users, data)
                print(f"  generated in {time.perf_counter() - start:.1f} s", flush=True)
            for n_journeys in journeys:
                reps = []
                for rep in range(args.repeat):
                    print(f"case: {n_users:,} users, {n_journeys} journeys"
                          + (f" (repetition {rep + 1} of {args.repeat})" if args.repeat > 1 else ""), flush=True)
                    extra = ["--actions", args.actions] + (["--mature"] if args.mature else []) \
                        + (["--mature-first"] if args.mature and rep % 2 else [])
                    reps.append(_child(extra, n_users, n_journeys, work / f"case-{n_users}-{n_journeys}", data))
                if args.mature:
                    from bench.pair import best_of_pairs, print_pair

                    summary = best_of_pairs(reps)
                    summaries.append(summary)
                    print_pair(summary)
                else:
                    summary = best_of(reps)
                    summaries.append(summary)
                    print_case(summary)
                if not args.keep:
                    shutil.rmtree(work / f"case-{n_users}-{n_journeys}", ignore_errors=True)
            if data is not None and data != args.data and not args.keep:
                data.unlink(missing_ok=True)
        if not args.mature:
            print_growth(summaries)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2, default=_jsonable))
    failed = [s for s in summaries if s["checks"] != "OK"]
    if failed:
        what = "the plain/mature checks failed" if args.mature else "project and baseline disagree"
        print(f"\nFAILED: {what} in {len(failed)} case(s)")
        return 1
    return 0


def _generate_child(users: int, data: Path) -> None:
    code = f"from bench.run import generate; from pathlib import Path; generate(Path({str(data)!r}), {users})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def _child(extra: list[str], users: int, journeys: int, work_dir: Path, data: Path | None) -> dict:
    cmd = [sys.executable, "-m", "bench.run", "--case", "--users", str(users), "--journeys", str(journeys),
           "--work-dir", str(work_dir), *(["--data", str(data)] if data else []), *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    result = None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
        else:
            print(line, end="", flush=True)
    if proc.wait() != 0 or result is None:
        raise SystemExit(f"the benchmark case {users} users x {journeys} journeys failed (exit {proc.returncode})")
    return result


if __name__ == "__main__":
    sys.exit(main())

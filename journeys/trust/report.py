"""`journeys report`: static HTML pages (an index and one per journey) with charts and tables, offline.

Everything is read from the analyst relations (SPEC §6, §9) on a read-only connection that is closed
before any chart is drawn, so a report never blocks a run for longer than its queries. Charts are
plotly figures; plotly.js is written once to `DIR/assets/` and referenced relatively, so the pages
work from disk, without a network. Every chart has a table of the same numbers beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import plotly
import plotly.graph_objects as go
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from journeys.engine.state import last_committed_as_of
from journeys.errors import JourneysError

Z95 = 1.959963984540054  # two-sided 95%
VIEWS = ("journey_enrollments", "journey_actions", "journey_outcomes", "journey_step_funnel")
PLOTLY_ASSET = f"assets/plotly-{plotly.__version__}.min.js"
CONFIG = {"displaylogo": False, "responsive": True}
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
TREATED, HOLDOUT = "#0072B2", "#E69F00"
STATUS_COLORS = {"done": "#009E73", "pending": "#56B4E9", "deferred": "#E69F00", "failed": "#D55E00",
                 "skipped": "#999999", "cancelled": "#CC79A7"}  # fmt: skip
ENROLLMENT_COLORS = {"active": "#56B4E9", "completed": "#009E73", "ended at goal": "#0072B2", "unenrolled": "#999999"}
ACTION_COLORS = ["#0072B2", "#E69F00", "#CC79A7", "#009E73", "#56B4E9", "#D55E00", "#F0E442", "#000000"]


# ---------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (stays inside [0, 1] and behaves at 0 and n successes)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(g1: int, n1: int, g2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for p1 - p2, from the two Wilson intervals."""
    p1, p2 = g1 / n1, g2 / n2
    (l1, u1), (l2, u2) = wilson_interval(g1, n1, z), wilson_interval(g2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


# ---------------------------------------------------------------- formatting


def fmt_int(n: int | None) -> str:
    return "–" if n is None else f"{int(n):,}"


def fmt_pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def fmt_pp(x: float | None) -> str:
    """A difference of two rates in percentage points, signed."""
    return "–" if x is None else f"{x * 100:+.1f} pp"


def fmt_interval(low: float, high: float, points: bool = False) -> str:
    return f"{low * 100:+.1f} to {high * 100:+.1f} pp" if points else f"{fmt_pct(low)} to {fmt_pct(high)}"


# ---------------------------------------------------------------- reading the database


@dataclass
class JourneyData:
    journey_id: str
    entity_type: str
    enabled: bool | None
    summary: dict[str, Any]
    reasons: list[tuple] = field(default_factory=list)  # status, end_reason, count
    steps: list[dict[str, Any]] = field(default_factory=list)
    over_time: list[tuple] = field(default_factory=list)  # as_of, variant, enrolled so far, goal so far
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # journey_outcomes rows
    path_actions: dict[str | None, dict[str, int]] = field(default_factory=dict)
    per_day: list[tuple] = field(default_factory=list)  # day, action_type, done


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _connect(db_path: Path) -> duckdb.DuckDBPyConnection:
    if not db_path.exists():
        raise JourneysError(f"{db_path} does not exist; run `journeys run` (or `journeys demo`) first, or pass --db")
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as e:  # a run holds the file for writing
        raise JourneysError(f"{db_path} cannot be opened for reading ({e}); wait for the run to finish and try again") from None
    present = {r[0] for r in con.execute("select table_name from information_schema.tables where table_schema = 'main'").fetchall()}
    missing = [v for v in VIEWS if v not in present]
    if missing:
        con.close()
        raise JourneysError(f"{db_path} has no {', '.join(missing)}; run `journeys run` first")
    return con


SUMMARY_SQL = """
select journey_id, any_value(entity_type) as entity_type,
    count(*) as enrolled,
    count(*) filter (where variant = 'treated') as treated,
    count(*) filter (where variant = 'holdout') as holdout,
    count(*) filter (where status = 'active') as active,
    count(*) filter (where status = 'completed') as completed,
    count(goal_achieved_at) as goal_achieved,
    count(goal_achieved_at) filter (where variant = 'treated') as treated_goal,
    count(goal_achieved_at) filter (where variant = 'holdout') as holdout_goal,
    count(*) filter (where status = 'unenrolled') as unenrolled,
    median(date_diff('second', enrolled_at, goal_achieved_at) / 3600.0) filter (where variant = 'treated') as median_hours,
    min(enrolled_at) as first_enrolled, max(enrolled_at) as last_enrolled
from journey_enrollments group by journey_id
"""

# Goal rate at each committed run T among the enrollments enrolled by T (cumulative, per variant).
OVER_TIME_SQL = """
with e as (select variant, enrolled_at, goal_achieved_at from journey_enrollments where journey_id = ?),
events as (
    select variant, enrolled_at as t, 1 as n, 0 as g from e
    union all
    select variant, goal_achieved_at, 0, 1 from e where goal_achieved_at is not null
),
by_t as (select variant, t, sum(n) as n, sum(g) as g from events group by variant, t),
cumulative as (
    select variant, t, sum(n) over w as n, sum(g) over w as g from by_t
    window w as (partition by variant order by t rows between unbounded preceding and current row)
),
grid as (
    select r.as_of, v.variant
    from (select distinct as_of from journey_state.runs where status = 'committed') as r
    cross join (select distinct variant from e) as v
)
select grid.as_of, grid.variant, cumulative.n, cumulative.g
from grid asof join cumulative on grid.variant = cumulative.variant and grid.as_of >= cumulative.t
order by grid.variant desc, grid.as_of
"""


def read_journeys(con: duckdb.DuckDBPyConnection) -> list[JourneyData]:
    """Everything the pages show, per journey (journeys the engine knows, and any with enrollments)."""
    summaries = {r["journey_id"]: r for r in _rows(con, SUMMARY_SQL)}
    known = {r["journey_id"]: r for r in _rows(con, "select journey_id, entity_type, enabled from journey_state.journeys")}
    journeys = []
    for jid in sorted(set(known) | set(summaries)):
        summary = summaries.get(jid) or {"enrolled": 0}
        meta = known.get(jid, {})
        data = JourneyData(jid, meta.get("entity_type") or summary.get("entity_type") or "", meta.get("enabled"), summary)
        data.steps = _rows(con, """
            select f.step_id, f.ordinal, f.kind, f.action_type, f.reached, f.done, f.pending, f.failed, f.cancelled,
                coalesce(x.skipped, 0) as skipped, coalesce(x.deferred, 0) as deferred
            from journey_step_funnel as f
            left join (
                select step_id, count(*) filter (where status = 'skipped') as skipped,
                    count(*) filter (where status = 'deferred') as deferred
                from journey_actions where journey_id = ? group by step_id
            ) as x using (step_id)
            where f.journey_id = ? order by f.ordinal""", [jid, jid])  # fmt: skip
        if summary["enrolled"]:
            data.reasons = con.execute(
                "select status, coalesce(end_reason, ''), count(*) from journey_enrollments "
                "where journey_id = ? and status <> 'active' group by all order by 3 desc, 1, 2", [jid]).fetchall()  # fmt: skip
            data.over_time = con.execute(OVER_TIME_SQL, [jid]).fetchall()
            data.outcomes = _rows(con, "select * from journey_outcomes where journey_id = ? "
                                       "order by variant desc, split_path nulls first", [jid])  # fmt: skip
            for path, action_type, n in con.execute(
                "select e.split_path, a.action_type, count(*) from journey_actions as a "
                "join journey_enrollments as e using (enrollment_id) "
                "where a.journey_id = ? and a.status = 'done' and e.variant = 'treated' group by all", [jid]).fetchall():  # fmt: skip
                data.path_actions.setdefault(path, {})[action_type] = n
            data.per_day = con.execute(
                "select cast(executed_at as date), action_type, count(*) from journey_actions "
                "where journey_id = ? and status = 'done' and executed_at is not null group by all order by 1, 2", [jid]).fetchall()  # fmt: skip
        journeys.append(data)
    return journeys


# ---------------------------------------------------------------- page model


@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[str]]
    collapsed: bool = False  # long tables sit in a <details>
    text_columns: int = 1  # the first columns are labels (left-aligned, the first a row header); numbers follow


@dataclass
class Section:
    id: str
    title: str
    lead: str = ""
    chart: str | None = None  # plotly div
    empty: str | None = None  # the sentence shown instead of an empty chart
    tables: list[Table] = field(default_factory=list)


def _chart(fig: go.Figure, div_id: str, height: int, top: int = 40, legend_below: bool = False) -> str:
    fig.update_layout(template="plotly_white", height=height, margin={"l": 10, "r": 10, "t": top, "b": 10},
                      font={"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "traceorder": "normal"})  # fmt: skip
    if legend_below:  # under subplot titles a legend on top would cover them
        fig.update_layout(legend={"y": -0.1, "yanchor": "top"})
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG, default_height=f"{height}px")


def _rate(g: int, n: int) -> float | None:
    return g / n if n else None


def summary_figures(d: JourneyData) -> list[tuple[str, str]]:
    s = d.summary
    if not s["enrolled"]:
        return [("Enrolled", "0")]
    figures = [("Enrolled", fmt_int(s["enrolled"])), ("Active", fmt_int(s["active"])), ("Completed", fmt_int(s["completed"])),
               ("Goal achieved", fmt_int(s["goal_achieved"])), ("Unenrolled", fmt_int(s["unenrolled"])),
               ("Goal rate (treated)", fmt_pct(_rate(s["treated_goal"], s["treated"])))]  # fmt: skip
    if s["holdout"]:
        figures += [("Holdout", fmt_int(s["holdout"])), ("Goal rate (holdout)", fmt_pct(_rate(s["holdout_goal"], s["holdout"])))]
    median = s["median_hours"]
    figures.append(("Median hours to goal (treated)", "–" if median is None else f"{median:.1f}"))
    return figures


def funnel_section(d: JourneyData) -> Section:
    section = Section("funnel", "Step funnel",
                      "Each action step of the journey's current version, by ledger status (all versions' rows of that step). "
                      "Wait, if, split and wait-until steps write no ledger rows; holdout enrollments' actions are skipped.")  # fmt: skip
    headers = ["Step", "Kind", "Action", "Reached", "Done", "Pending", "Deferred", "Failed", "Skipped", "Cancelled"]
    rows = []
    for s in d.steps:
        if s["kind"] == "action":
            rows.append([s["step_id"], s["kind"], s["action_type"], *(fmt_int(s[k]) for k in ("reached", "done", "pending", "deferred", "failed", "skipped", "cancelled"))])
        else:
            rows.append([s["step_id"], s["kind"], "", *["–"] * 7])
    section.tables.append(Table("Ledger rows per step", headers, rows, text_columns=3))
    actions = [s for s in d.steps if s["kind"] == "action"]
    if not d.summary["enrolled"] or not any(s["reached"] for s in actions):
        section.empty = "No action step has been reached yet." if d.summary["enrolled"] else "No entity has enrolled yet."
        return section
    labels = [f"{s['step_id']} · {s['action_type']}" for s in actions]
    fig = go.Figure()
    fig.add_bar(y=["enrolled"], x=[d.summary["enrolled"]], orientation="h", name="enrolled", marker_color="#4D4D4D",
                hovertemplate="enrolled: %{x}<extra></extra>")  # fmt: skip
    for status, color in STATUS_COLORS.items():
        fig.add_bar(y=labels, x=[s[status] for s in actions], orientation="h", name=status, marker_color=color,
                    hovertemplate=f"%{{y}}<br>{status}: %{{x}}<extra></extra>")  # fmt: skip
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=["enrolled", *labels])
    section.chart = _chart(fig, "chart-funnel", 110 + 32 * (len(labels) + 1))
    return section


def over_time_section(d: JourneyData) -> Section:
    section = Section("goal-over-time", "Goal rate over time",
                      "At each committed run T: of the enrollments enrolled by T, the share whose goal was achieved by T.")
    if not d.summary["goal_achieved"]:
        section.empty = "No enrollment has achieved the goal yet (or the journey has no goal), so there is no rate to follow."
        return section
    series: dict[str, list[tuple]] = {}
    for as_of, variant, n, g in d.over_time:
        series.setdefault(variant, []).append((as_of, n, g))
    fig = go.Figure()
    for variant, points in series.items():
        fig.add_scatter(x=[p[0] for p in points], y=[p[2] / p[1] for p in points], mode="lines+markers", name=variant,
                        line={"color": TREATED if variant == "treated" else HOLDOUT, "shape": "hv"},
                        customdata=[[p[1], p[2]] for p in points],
                        hovertemplate="T %{x}<br>%{y:.1%} (%{customdata[1]} of %{customdata[0]})<extra>" + variant + "</extra>")  # fmt: skip
    fig.update_layout(showlegend=True)  # also with one variant: say which it is
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", title_text="goal rate")
    fig.update_xaxes(title_text="run T")
    section.chart = _chart(fig, "chart-goal-over-time", 380)
    variants = list(series)
    by_t: dict[Any, dict[str, tuple]] = {}
    for variant, points in series.items():
        for as_of, n, g in points:
            by_t.setdefault(as_of, {})[variant] = (n, g)
    headers = ["Run T"] + [f"{v} {h}" for v in variants for h in ("enrolled", "goal", "rate")]
    rows = [[f"{t:%Y-%m-%d %H:%M}"] + [c for v in variants for c in _ng_cells(cells.get(v))] for t, cells in sorted(by_t.items())]
    section.tables.append(Table("Goal rate at each run T", headers, rows, collapsed=len(rows) > 12))
    return section


def _ng_cells(ng: tuple | None) -> list[str]:
    return ["–"] * 3 if ng is None else [fmt_int(ng[0]), fmt_int(ng[1]), fmt_pct(_rate(ng[1], ng[0]))]


def _groups(d: JourneyData) -> tuple[tuple[int, int], dict[str, tuple[int, int]], tuple[int, int]]:
    """(enrolled, goal) of all treated, of each treated split path, and of the holdout."""
    paths = {r["split_path"]: (r["enrolled"], r["goal_achieved"]) for r in d.outcomes if r["variant"] == "treated" and r["split_path"]}
    s = d.summary
    return (s["treated"], s["treated_goal"]), paths, (s["holdout"], s["holdout_goal"])


def lift_section(d: JourneyData) -> Section:
    section = Section("lift", "Treated vs holdout",
                      "Goal rates with 95% Wilson score intervals; lift is the treated rate minus the holdout rate, in percentage "
                      "points, with a 95% Newcombe hybrid score interval (see docs/report.md).")  # fmt: skip
    (nt, gt), paths, (nh, gh) = _groups(d)
    if not nh:
        section.empty = "This journey has no holdout group (entry.holdout), so there is no lift to measure."
        return section
    if not nt:
        section.empty = "Every enrollment so far is in the holdout; there is no treated group to compare."
        return section
    comparisons = [("all treated", nt, gt)] + [(f"path {p}", n, g) for p, (n, g) in sorted(paths.items())]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.18,
                        subplot_titles=("Goal rate (95% Wilson interval)", "Lift over holdout, pp (95% interval)"))  # fmt: skip
    rows = []
    for label, n, g in [*comparisons, ("holdout", nh, gh)]:
        rate, (lo, hi) = g / n, wilson_interval(g, n)
        fig.add_bar(x=[label], y=[rate], marker_color=HOLDOUT if label == "holdout" else TREATED, showlegend=False,
                    error_y={"type": "data", "symmetric": False, "array": [hi - rate], "arrayminus": [rate - lo]},
                    hovertemplate=f"{label}: %{{y:.1%}} ({g} of {n})<extra></extra>", row=1, col=1)  # fmt: skip
        row = [label, fmt_int(n), fmt_int(g), fmt_pct(rate), fmt_interval(lo, hi)]
        if label != "holdout":
            lift, (llo, lhi) = rate - gh / nh, newcombe_interval(g, n, gh, nh)
            fig.add_scatter(x=[lift * 100], y=[label], mode="markers", marker={"color": TREATED, "size": 11}, showlegend=False,
                            error_x={"type": "data", "symmetric": False, "array": [(lhi - lift) * 100], "arrayminus": [(lift - llo) * 100]},
                            hovertemplate=f"{label}: {fmt_pp(lift)} ({fmt_interval(llo, lhi, points=True)})<extra></extra>",
                            row=1, col=2)  # fmt: skip
            row += [fmt_pp(lift), fmt_interval(llo, lhi, points=True)]
        else:
            row += ["", ""]
        rows.append(row)
    fig.add_vline(x=0, line_dash="dash", line_color="#4D4D4D", row=1, col=2)
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=2)
    section.chart = _chart(fig, "chart-lift", 400, top=70)
    section.tables.append(Table("Goal rate and lift over the holdout",
                                ["Group", "Enrolled", "Goal", "Goal rate", "95% interval", "Lift", "95% interval of the lift"], rows))  # fmt: skip
    lift, (llo, lhi) = gt / nt - gh / nh, newcombe_interval(gt, nt, gh, nh)
    verdict = ("The interval excludes 0: the journey " + ("raises" if llo > 0 else "lowers") + " the goal rate."
               if llo > 0 or lhi < 0 else "The interval includes 0: these numbers do not yet show a difference.")  # fmt: skip
    small = " The holdout is small, so the interval is wide." if nh < 30 else ""
    section.lead += (f" Treated: {fmt_pct(gt / nt)} of {fmt_int(nt)}; holdout: {fmt_pct(gh / nh)} of {fmt_int(nh)}; "
                     f"lift {fmt_pp(lift)} (95% interval {fmt_interval(llo, lhi, points=True)}). {verdict}{small}")  # fmt: skip
    return section


def split_section(d: JourneyData) -> Section:
    section = Section("split", "Split paths side by side",
                      "Treated enrollments by the path their split step assigned; goal rates with 95% Wilson intervals, "
                      "the holdout's rate as a dashed line.")  # fmt: skip
    _, paths, (nh, gh) = _groups(d)
    if not paths:
        section.empty = "This journey has no split step (or no enrollment has reached it), so there are no paths to compare."
        return section
    by_path = {r["split_path"]: r for r in d.outcomes if r["variant"] == "treated" and r["split_path"]}
    names = sorted(by_path)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.15, subplot_titles=("Enrollments by status", "Goal rate (95% Wilson interval)"))
    statuses = {"active": "active", "completed": "completed", "unenrolled": "unenrolled"}
    ended_at_goal = [by_path[p]["enrolled"] - by_path[p]["active"] - by_path[p]["completed"] - by_path[p]["unenrolled"] for p in names]
    for label, values in [*((s, [by_path[p][k] for p in names]) for s, k in statuses.items()), ("ended at goal", ended_at_goal)]:
        fig.add_bar(x=names, y=values, name=label, marker_color=ENROLLMENT_COLORS[label], row=1, col=1,
                    hovertemplate=f"path %{{x}}<br>{label}: %{{y}}<extra></extra>")  # fmt: skip
    rows = []
    for p in names:
        r = by_path[p]
        n, g = r["enrolled"], r["goal_achieved"]
        lo, hi = wilson_interval(g, n)
        fig.add_bar(x=[p], y=[g / n], marker_color=TREATED, showlegend=False, row=1, col=2,
                    error_y={"type": "data", "symmetric": False, "array": [hi - g / n], "arrayminus": [g / n - lo]},
                    hovertemplate=f"path {p}: %{{y:.1%}} ({g} of {n})<extra></extra>")  # fmt: skip
        acts = d.path_actions.get(p, {})
        median = r["median_hours_to_goal"]
        rows.append([p, fmt_int(n), fmt_int(r["active"]), fmt_int(r["completed"]), fmt_int(g), fmt_int(r["unenrolled"]),
                     fmt_pct(g / n), fmt_interval(lo, hi), "–" if median is None else f"{median:.1f}",
                     fmt_int(acts.get("send_email", 0)), fmt_int(acts.get("create_task", 0)),
                     fmt_pp(g / n - gh / nh) if nh else "–"])  # fmt: skip
    if nh:
        fig.add_hline(y=gh / nh, line_dash="dash", line_color=HOLDOUT, row=1, col=2, annotation_text="holdout")
    fig.update_layout(barmode="stack")
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=2)
    section.chart = _chart(fig, "chart-split", 420, top=60, legend_below=True)
    section.tables.append(Table("Split paths (treated enrollments)",
                                ["Path", "Enrolled", "Active", "Completed", "Goal", "Unenrolled", "Goal rate", "95% interval",
                                 "Median h to goal", "Emails", "Tasks", "Lift vs holdout"], rows))  # fmt: skip
    return section


def activity_section(d: JourneyData) -> Section:
    section = Section("activity", "Emails, tasks and webhooks per day",
                      "Actions done per day of the run T that executed them, by action type.")
    if not d.per_day:
        section.empty = "No action has been executed yet."
        return section
    days = sorted({r[0] for r in d.per_day})
    types = sorted({r[1] for r in d.per_day}, key=lambda t: (t not in ("send_email", "create_task", "webhook"), t))
    counts = {(day, t): n for day, t, n in d.per_day}
    fig = go.Figure()
    for i, t in enumerate(types):
        fig.add_bar(x=days, y=[counts.get((day, t), 0) for day in days], name=t, marker_color=ACTION_COLORS[i % len(ACTION_COLORS)],
                    hovertemplate=f"%{{x}}<br>{t}: %{{y}}<extra></extra>")  # fmt: skip
    fig.update_layout(barmode="stack")
    fig.update_xaxes(type="date", tickformat="%b %d")
    section.chart = _chart(fig, "chart-activity", 360)
    rows = [[f"{day:%Y-%m-%d}", *(fmt_int(counts.get((day, t), 0)) for t in types),
             fmt_int(sum(counts.get((day, t), 0) for t in types))] for day in days]  # fmt: skip
    section.tables.append(Table("Actions done per day", ["Day", *types, "Total"], rows, collapsed=len(rows) > 14))
    return section


def journey_sections(d: JourneyData) -> list[Section]:
    sections = [funnel_section(d)]
    if d.summary["enrolled"]:
        sections += [over_time_section(d), lift_section(d), split_section(d), activity_section(d)]
        ended = Section("ended", "How enrollments ended")
        if d.reasons:
            ended.tables.append(Table("Ended enrollments by status and reason", ["Status", "Reason", "Enrollments"],
                                      [[s, r or "–", fmt_int(n)] for s, r, n in d.reasons], text_columns=2))  # fmt: skip
        else:
            ended.empty = "Every enrollment is still active."
        sections.append(ended)
    return sections


def index_section(journeys: list[JourneyData]) -> Section:
    section = Section("journeys", "Journeys", "Enrollments by current status; goal rates and lift as on each journey's page.")
    rows = []
    for d in journeys:
        s = d.summary
        n = s["enrolled"]
        lift = lift_ci = "–"
        if n and s["holdout"] and s["treated"]:
            lift = fmt_pp(s["treated_goal"] / s["treated"] - s["holdout_goal"] / s["holdout"])
            lift_ci = fmt_interval(*newcombe_interval(s["treated_goal"], s["treated"], s["holdout_goal"], s["holdout"]), points=True)
        rows.append([d.journey_id, d.entity_type, {True: "yes", False: "no"}.get(d.enabled, "–"), fmt_int(n),
                     fmt_int(s.get("active")), fmt_int(s.get("goal_achieved")), fmt_int(s.get("unenrolled")),
                     fmt_pct(_rate(s.get("treated_goal", 0), s.get("treated", 0))),
                     fmt_pct(_rate(s.get("holdout_goal", 0), s.get("holdout", 0))), lift, lift_ci])  # fmt: skip
    section.tables.append(Table("All journeys", ["Journey", "Entity", "Enabled", "Enrolled", "Active", "Goal achieved", "Unenrolled",
                                                 "Goal rate (treated)", "Goal rate (holdout)", "Lift", "95% interval"], rows, text_columns=3))  # fmt: skip
    with_enrollments = [d for d in journeys if d.summary["enrolled"]]
    if not with_enrollments:
        section.empty = "No entity has enrolled in any journey yet."
        return section
    ids = [d.journey_id for d in with_enrollments]
    fig = go.Figure()
    for label, color in ENROLLMENT_COLORS.items():
        values = [d.summary["enrolled"] - d.summary["active"] - d.summary["completed"] - d.summary["unenrolled"]
                  if label == "ended at goal" else d.summary[label] for d in with_enrollments]  # fmt: skip
        fig.add_bar(y=ids, x=values, name=label, orientation="h", marker_color=color, hovertemplate=f"%{{y}}<br>{label}: %{{x}}<extra></extra>")
    fig.update_layout(barmode="stack")
    fig.update_yaxes(autorange="reversed")
    section.chart = _chart(fig, "chart-journeys", 110 + 36 * len(ids))
    return section


# ---------------------------------------------------------------- writing


def _environment() -> Environment:
    return Environment(loader=PackageLoader("journeys.trust", "templates"), autoescape=select_autoescape(["j2", "html"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)  # fmt: skip


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def build_report(db_path: Path, out_dir: Path) -> list[Path]:
    """Write out_dir/index.html and one page per journey (with plotly.js once, in out_dir/assets); return the pages."""
    con = _connect(Path(db_path))
    try:
        journeys = read_journeys(con)
        last = last_committed_as_of(con)
    finally:
        con.close()  # charts are drawn after the database is released
    out_dir = Path(out_dir)
    (out_dir / "assets").mkdir(parents=True, exist_ok=True)
    asset = out_dir / PLOTLY_ASSET
    if not asset.exists():
        asset.write_text(get_plotlyjs())
    env = _environment()
    common = {"plotly_src": PLOTLY_ASSET, "db_name": Path(db_path).name,
              "last_run": f"{last:%Y-%m-%d %H:%M:%S}" if last else None}  # fmt: skip
    index = out_dir / "index.html"
    _write(index, env.get_template("index.html.j2").render(journeys=journeys, section=index_section(journeys), **common))
    pages = [index]
    for d in journeys:
        page = out_dir / f"{d.journey_id}.html"
        _write(page, env.get_template("journey.html.j2").render(
            journey=d, figures=summary_figures(d), sections=journey_sections(d), **common))  # fmt: skip
        pages.append(page)
    return pages

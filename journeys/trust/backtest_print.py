"""backtest's report as text: a row per logical time, a total row, then what the replay could not know."""

from __future__ import annotations

HEADER = ("T", "entered", "enrolled", "suppressed", "goal", "exits", "completed", "active", "goal rate", "actions due/done")
LIMITS = ("sources were cut at each T by their timestamps; properties without one (plan, mrr, status, stage, "
          "custom attributes, account team, last_seen_at) are today's values")  # fmt: skip


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _actions(actions: dict) -> str:
    return ", ".join(f"{kind} {a['due']}/{a['done']}" for kind, a in sorted(actions.items())) or "-"


def _row(cells: tuple) -> str:
    first, *rest = cells
    return f"{first:<16}" + "".join(f"{c:>11}" for c in rest[:-1]) + "  " + str(rest[-1])


def print_backtest(report: dict, echo) -> None:
    start, end = report["from"], report["to"]
    echo(f"backtest {report['journey']}: {report['runs']} run(s) from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} "
         f"every {report['every']}, on a scratch copy: the journey alone, its state empty at --from")  # fmt: skip
    for note in report["notes"]:
        echo(f"  note: {note}")
    echo(_row(HEADER))
    for t in report["ticks"]:
        echo(_row((f"{t['as_of']:%Y-%m-%d %H:%M}", t["entered"], t["enrolled"], t["suppressed"], t["goal_achieved"],
                   t["unenrolled"], t["completed"], t["active"], _rate(t["goal_rate_to_date"]), _actions(t["actions"]))))  # fmt: skip
    total = report["total"]
    echo(_row(("total", total["entered"], total["enrolled"], total["suppressed"], total["goal_achieved"], total["unenrolled"],
               total["completed"], total["active"], _rate(total["goal_rate"]), _actions(total["actions"]))))  # fmt: skip
    if total["exits"]:
        echo("exits: " + ", ".join(f"{reason} {n}" for reason, n in total["exits"].items()))
    if len(total["by_variant"]) > 1:
        echo("by variant: " + ", ".join(f"{v} {x['enrolled']} enrolled, goal rate {_rate(x['goal_rate'])}"
                                        for v, x in total["by_variant"].items()))  # fmt: skip
    echo(f"limits: {LIMITS} (docs/trust.md)")

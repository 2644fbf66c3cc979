"""test-path's report as text: one block per simulated day, then the end."""

from __future__ import annotations

import datetime as dt

from journeys.trust.explain import _json_lines

# Events that happen before the stepper runs are printed before the steps; the rest after them.
STEP_END_REASONS = {"completed", "date_passed", "action_failed"}


def _t(value) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if isinstance(value, dt.datetime) else str(value)


def print_path(report: dict, echo) -> None:
    runs = len(report["timeline"])
    echo(f"test-path {report['journey']} for {report['entity_type']} {report['entity_id']}: {runs} daily run(s) "
         f"from {_t(report['from'])} on a scratch copy, {report['notes'][0]}")  # fmt: skip
    for note in report["notes"][1:]:
        echo(f"  note: {note}")
    for day in report["timeline"]:
        echo(f"day {day['day']}  {_t(day['as_of'])}")
        for line in day_lines(day):
            echo("  " + line)
    echo("end: " + end_line(report["end"]))


def day_lines(day: dict) -> list[str]:
    lines = []
    if day.get("simulated_entry"):
        lines.append(f"entry: {day['simulated_entry']}")
    elif day["entry"]["entering"]:
        lines.append(f"entry: enters {', '.join(day['entry']['entering'])}")
    if day.get("not_enrolled"):
        lines.append(f"not enrolled: {day['not_enrolled']}")
    before = [e for e in day["events"] if e["reason"] not in STEP_END_REASONS]
    after = [e for e in day["events"] if e["reason"] in STEP_END_REASONS]
    lines += [_event(e, day.get("enrollment")) for e in before]
    new_actions = {a["step_id"]: a for a in day["actions"] if a["new"]}
    for step in day["steps"]:
        lines += _step(step, new_actions.pop(step["step_id"], None) if step["kind"] == "action" else None)
    for a in day["actions"]:
        if not a["new"] or a["step_id"] in new_actions:
            lines.append(f"{a['step_id']:<14} {a['action_type']} (due {_t(a['due_at'])}) → {_status(a)}")
    lines += [_event(e, day.get("enrollment")) for e in after]
    enrollment = day.get("enrollment")
    if not lines and enrollment and enrollment["status"] == "active":
        lines.append(f"waiting: next step {enrollment['next_step']} at {_t(enrollment['next_at'])}")
    return lines or ["nothing happens"]


def _event(e: dict, enrollment: dict | None) -> str:
    if e["event"] == "enrolled":
        variant = (enrollment or {}).get("variant", "treated")
        bucket = (enrollment or {}).get("holdout_bucket")
        why = f", holdout bucket {bucket:.2f}" if bucket is not None else ""
        return f"enrolled at {_t(e['at'])} ({variant}{why})"
    if e["event"] == "suppressed":
        return "suppressed: matches the blacklist when entering (no enrollment)"
    if e["event"] == "goal_achieved":
        return "goal reached" + (", the enrollment continues (on_goal: continue)" if e["to_status"] == "active" else ": exits")
    if e["event"] == "completed":
        return f"completed at {_t(e['at'])}"
    return f"{e['event']}: {e['reason']}"


def _status(a: dict) -> str:
    detail = a["reason"] or a["error"]
    return a["status"] + (f" ({detail})" if detail else "")


def _step(s: dict, action: dict | None) -> list[str]:
    head = f"{s['step_id']:<14} "
    kind = s["kind"]
    if kind == "action":
        return [head + f"{s['action_type']} (due {_t(s['reached_at'])}) → {_status(action) if action else 'recorded'}"]
    if kind == "wait":
        return [head + f"wait → next step at {_t(s['next_at'])}"]
    if kind == "split":
        return [head + f"split → path {s['path']} (bucket {s['bucket']:.2f})"]
    if kind == "wait_until_date":
        read = f"read {s['property']} = {_t(s['value']) if s['value'] is not None else 'missing'}"
        outcome = {"wait": f"next step at {_t(s['target'])}", "continue": "already past or missing: goes on now",
                   "exit": "already past or missing: the enrollment ends (date_passed)"}[s["outcome"]]  # fmt: skip
        return [head + f"wait_until_date: {read}; {outcome}"]
    if kind == "if":
        line = head + f"if → {s['branch']} (the condition {'holds' if s['verdict'] else 'does not hold'} at this run)"
    else:
        line = head + {
            "matched": "wait_until → then (the criteria hold, within the timeout)",
            "timed_out": f"wait_until → on_timeout (timed out at {_t(s['deadline'])})",
            "waiting": f"wait_until: the criteria do not hold yet; checked at every run until {_t(s['deadline'])}",
        }[s["outcome"]]
    return [line] + (_json_lines(s["criteria"], " " * 17) if s.get("criteria") else [])


def end_line(end: dict) -> str:
    status = end["status"]
    if status == "never enrolled":
        return "never enrolled in these days"
    goal = f", goal reached at {_t(end['goal_achieved_at'])}" if end.get("goal_achieved_at") else ""
    if status == "active":
        nxt = f"next step {end['next_step']} at {_t(end['next_at'])}" if end.get("next_step") else "past its last step"
        return f"still active (enrolled at {_t(end['enrolled_at'])}{goal}); {nxt}"
    return f"{status} at {_t(end['ended_at'])} (reason {end['end_reason']}; enrolled at {_t(end['enrolled_at'])}{goal})"

"""`journeys diff`'s report as text: what changed per segment and journey with samples of who; unchanged ones counted."""

from __future__ import annotations

from collections.abc import Callable

from journeys.trust.diff import RuleDiff, SetChange


def print_diff(diff: RuleDiff, echo: Callable[[str], None]) -> None:
    """The diff for a person: what changed per segment and journey, samples of who; unchanged ones counted."""
    echo(f"working rules vs {diff.against}, both built at {diff.as_of:%Y-%m-%d %H:%M:%S}")
    if not diff.files_differ:
        echo("no change: the rule files are identical")
        return
    for label, paths in (("added", diff.files_added), ("removed", diff.files_removed), ("changed", diff.files_changed)):
        if paths:
            echo(f"files {label}: {', '.join(paths)}")
    if not diff.changed:
        echo("no change: no segment membership, entering set, goal or exit match differs at this T")
        return
    changed_segments = [s for s in diff.segments if s.status != "unchanged"]
    if changed_segments:
        echo("segments:")
    for s in changed_segments:
        echo(f"  {s.segment_id} ({s.entity_type}): {_headline(s.status, s.members, 'members')}")
        _lines(echo, s.members, "added", "removed")
    changed_journeys = [j for j in diff.journeys if j.status != "unchanged"]
    if changed_journeys:
        echo("journeys:")
    for j in changed_journeys:
        state = {(True, False): ", now disabled", (False, True): ", now enabled", (None, False): ", disabled",
                 (False, None): ", was disabled", (False, False): ", disabled"}.get(j.enabled, "")  # fmt: skip
        headline = _headline(j.status, j.entering, "entering")
        echo(f"  {j.journey_id} ({j.entity_type}{state}): {'entering ' if j.status == 'changed' else ''}{headline}"
             + (f", {j.entering.percent:.1f}% of the entering set changed" if j.entering.changed else ""))  # fmt: skip
        _lines(echo, j.entering, "newly entering", "no longer entering")
        for name, change in (("goal", j.goal), ("exit", j.exit)):
            if change.changed:
                echo(f"    {name} matches {change.before} -> {change.after}")
                _lines(echo, change, f"{name} matches gained", f"{name} matches lost", indent="      ")
    unchanged = (len(diff.segments) - len(changed_segments), len(diff.journeys) - len(changed_journeys))
    echo(f"unchanged: {unchanged[0]} segment(s), {unchanged[1]} journey(s)")


def _headline(status: str, change: SetChange, noun: str) -> str:
    if status == "added":
        return f"new: {change.after} {noun}"
    if status == "removed":
        return f"removed: had {change.before} {noun}"
    return f"{change.before} -> {change.after} ({change.after - change.before:+d})"


def _lines(echo: Callable[[str], None], change: SetChange, added: str, removed: str, indent: str = "    ") -> None:
    for label, count, ids in ((added, change.added, change.added_sample), (removed, change.removed, change.removed_sample)):
        if count:
            more = f" and {count - len(ids)} more" if count > len(ids) else ""
            echo(f"{indent}{label} ({count}): {', '.join(ids)}{more}" if ids else f"{indent}{label}: {count}")

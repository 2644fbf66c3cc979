"""`journeys diff`: who the working rules would put in each segment and journey, compared with other rules.

Both rule sets are compiled and built by the engine's own build (`compile_project`, `build_models`) at the
same T, each in a scratch copy made from the same bytes of the database, so every difference comes from
the rules. The live project and database are only read.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import duckdb

from journeys.config import Settings
from journeys.engine.build import build_models, compile_project, connect
from journeys.engine.dbt import DbtError, DbtProject
from journeys.engine.rule_snapshot import rule_files, write_rule_files
from journeys.engine.run import utc_now
from journeys.errors import JourneysError, RuleError
from journeys.progress import progress
from journeys.rules.load import RuleSet
from journeys.trust.rule_sources import last_committed_run, rules_at_git_ref, rules_of_run
from journeys.trust.scratch import scratch_copy


@dataclass
class SetChange:
    """One set of entities on both sides: sizes, and who is only on one side (a sorted sample of each)."""

    before: int = 0
    after: int = 0
    added: int = 0
    removed: int = 0
    added_sample: list[str] = field(default_factory=list)
    removed_sample: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    @property
    def percent(self) -> float:
        """(|added| + |removed|) / |before| x 100. From an empty set to a non-empty one is 100%."""
        if not self.changed:
            return 0.0
        return 100.0 if self.before == 0 else 100.0 * (self.added + self.removed) / self.before


@dataclass
class SegmentDiff:
    segment_id: str
    status: str  # added | removed | changed | unchanged
    entity_type: str
    members: SetChange


@dataclass
class JourneyDiff:
    journey_id: str
    status: str  # added | removed | changed | unchanged
    entity_type: str
    enabled: tuple[bool | None, bool | None]  # (against, working); None: no such journey on that side
    entering: SetChange  # in an entry segment and not blacklisted, for an enabled journey
    goal: SetChange
    exit: SetChange  # blacklist matches


@dataclass
class RuleDiff:
    as_of: dt.datetime
    against: str
    files_added: list[str]
    files_removed: list[str]
    files_changed: list[str]
    segments: list[SegmentDiff]
    journeys: list[JourneyDiff]

    @property
    def changed(self) -> bool:
        return any(s.status != "unchanged" for s in self.segments) or any(j.status != "unchanged" for j in self.journeys)

    @property
    def files_differ(self) -> bool:
        return bool(self.files_added or self.files_removed or self.files_changed)

    def over(self, threshold: float) -> list[JourneyDiff]:
        """Journeys whose entering set changed by more than `threshold` percent."""
        return [j for j in self.journeys if j.entering.percent > threshold]

    def to_json(self, threshold: float | None = None) -> dict:
        out = asdict(self)
        out["as_of"] = self.as_of.isoformat(sep=" ")
        out["changed"] = self.changed
        for journey, data in zip(self.journeys, out["journeys"]):
            data["enabled"] = {"against": journey.enabled[0], "working": journey.enabled[1]}
            data["entering"]["percent"] = round(journey.entering.percent, 2)
        if threshold is not None:
            out["fail_over"] = {"percent": threshold, "journeys": [j.journey_id for j in self.over(threshold)]}
        return out


def diff_rules(settings: Settings, *, against: str | None = None, as_of: dt.datetime | None = None,
               sample: int = 10) -> RuleDiff:  # fmt: skip
    """Build the working rules and the rules at `against` (a git ref; default: the last run's) at T and compare.

    T defaults to the last committed run's T (else now), so the default diff answers "what would the
    last run have done with my edits".
    """
    with scratch_copy(settings) as work:
        last = last_committed_run(work.db_path)
        source = (rules_at_git_ref(settings.project_dir, against) if against
                  else rules_of_run(work.db_path, last, settings.display(settings.db_path)))  # fmt: skip
        at = as_of or (last.as_of if last else utc_now())
        working_files = rule_files(work.project_dir)  # the copy: what is compiled below, even if the live files move on
        with tempfile.TemporaryDirectory(prefix="journeys-diff-") as folder:
            write_rule_files(source.files, Path(folder))
            # Copied from the working copy before either build: both sides start from the same bytes.
            with scratch_copy(work, rules_from=Path(folder)) as old:
                old_rules, new_rules = _compile_both(old, work, source.label)
                with progress(2, f"building the rules of {source.label}") as advance:
                    _build(old, at, f"the rules of {source.label}")
                    advance(description="building the working rules")
                    _build(work, at, "the working rules")
                    advance()
                segments, journeys = _compare(work, old.db_path, old_rules, new_rules, sample)
    return RuleDiff(
        as_of=at,
        against=source.description,
        files_added=sorted(set(working_files) - set(source.files)),
        files_removed=sorted(set(source.files) - set(working_files)),
        files_changed=sorted(p for p in set(working_files) & set(source.files) if working_files[p] != source.files[p]),
        segments=segments,
        journeys=journeys,
    )


def _compile_both(old: Settings, work: Settings, label: str) -> tuple[RuleSet, RuleSet]:
    """Validate and compile both sides; the problems of both are reported together, the other side's
    paths prefixed with its label (`origin/main:sql_rules/journeys/x.yml:7: ...`)."""
    problems, rules = [], []
    for side, prefix in ((old, f"{label}:"), (work, "")):
        try:
            rules.append(compile_project(side).rules)
        except RuleError as e:
            problems += [replace(p, path=prefix + p.path) for p in e.problems]
    if problems:
        raise RuleError(problems)
    return rules[0], rules[1]


def _build(side: Settings, at: dt.datetime, what: str) -> None:
    try:
        build_models(side, DbtProject(side.project_dir, side.db_path), at)
    except DbtError as e:
        raise JourneysError(f"building {what} at {at:%Y-%m-%d %H:%M:%S}: {e}") from None


# Each relation: (k, entity_type, entity_id) on one side, k a segment or journey id; `{db}`: the side's catalog.
RELATIONS = {
    "members": "select segment_id as k, entity_type, entity_id from {db}main.segment_membership",
    "entering": """select e.journey_id as k, e.entity_type, e.entity_id
                   from {db}main.journey_eligible as e
                   inner join _enabled as j on j.side = '{side}' and j.journey_id = e.journey_id
                   where not exists (select 1 from {db}main.journey_exit_matches as x
                                     where x.journey_id = e.journey_id and x.entity_id = e.entity_id)""",
    "goal": "select journey_id as k, entity_type, entity_id from {db}main.journey_goal_matches",
    "exit": "select journey_id as k, entity_type, entity_id from {db}main.journey_exit_matches",
}


def _compare(work: Settings, old_db: Path, old: RuleSet, new: RuleSet,
             sample: int) -> tuple[list[SegmentDiff], list[JourneyDiff]]:  # fmt: skip
    """Set differences in SQL, in the working copy with the other side attached: no set is held in memory."""
    con = connect(work)
    try:
        con.execute(f"attach '{str(old_db).replace(chr(39), chr(39) * 2)}' as against (read_only)")
        con.execute("create temp table _enabled (side varchar, journey_id varchar)")
        for side, rules in (("a", old), ("w", new)):
            enabled = [[side, jid] for jid, j in rules.journeys.items() if j.enabled]
            if enabled:
                con.executemany("insert into _enabled values (?, ?)", enabled)
        changes = {kind: _set_changes(con, kind, sample) for kind in RELATIONS}
    finally:
        con.close()
    segments = [
        SegmentDiff(sid, _status(sid, old.segments, new.segments, changes["members"].get(sid)),
                    (new.segments.get(sid) or old.segments[sid]).entity, changes["members"].get(sid, SetChange()))
        for sid in sorted(set(old.segments) | set(new.segments))
    ]  # fmt: skip
    journeys = []
    for jid in sorted(set(old.journeys) | set(new.journeys)):
        sets = {kind: changes[kind].get(jid, SetChange()) for kind in ("entering", "goal", "exit")}
        changed = next((s for s in sets.values() if s.changed), None)
        before, after = old.journeys.get(jid), new.journeys.get(jid)
        journeys.append(JourneyDiff(
            jid, _status(jid, old.journeys, new.journeys, changed), (after or before).entity,
            (before.enabled if before else None, after.enabled if after else None), **sets,
        ))  # fmt: skip
    return segments, journeys


def _status(key: str, old: dict, new: dict, change: SetChange | None) -> str:
    if key not in old:
        return "added"
    if key not in new:
        return "removed"
    return "changed" if change is not None and change.changed else "unchanged"


def _set_changes(con: duckdb.DuckDBPyConnection, kind: str, sample: int) -> dict[str, SetChange]:
    """Per key: both sizes, the added and removed counts, and the first `sample` ids of each (sorted)."""
    for name, db, side in (("_w", "", "w"), ("_a", "against.", "a")):
        relation = RELATIONS[kind].format(db=db, side=side)
        con.execute(f"create or replace temp table {name} as select distinct * from ({relation})")
    con.execute("create or replace temp table _added as select * from _w except select * from _a")
    con.execute("create or replace temp table _removed as select * from _a except select * from _w")
    out: dict[str, SetChange] = {}
    for table, attr in (("_a", "before"), ("_w", "after"), ("_added", "added"), ("_removed", "removed")):
        for key, count in con.execute(f"select k, count(*) from {table} group by k").fetchall():
            setattr(out.setdefault(key, SetChange()), attr, count)
    for table, attr in (("_added", "added_sample"), ("_removed", "removed_sample")):
        rows = con.execute(
            f"""select k, entity_id from (
                    select k, entity_id, row_number() over (partition by k order by entity_id, entity_type) as n
                    from {table}) where n <= ? order by k, n""",
            [sample],
        ).fetchall()
        for key, entity_id in rows:
            getattr(out[key], attr).append(entity_id)
    return out


def fail_over_message(diff: RuleDiff, threshold: float) -> str | None:
    """The CI failure for `--fail-over N%`, or None when every journey's entering set is within N%."""
    over = diff.over(threshold)
    if not over:
        return None
    parts = [f"{j.journey_id} {j.entering.percent:.1f}% (+{j.entering.added} -{j.entering.removed} of {j.entering.before})"
             for j in over]  # fmt: skip
    return (f"{len(over)} journey(s) would change their entering set by more than {threshold:g}%: {', '.join(parts)}; "
            "review the diff above, then raise --fail-over or update the rules")  # fmt: skip


"""`journeys explain`: why an entity is or is not in a segment or journey, leaf by leaf, at T.

Every verdict comes from the compiler's own SQL: each node of a criteria tree is compiled with
`compile_criteria` (exactly as the generated models are) and evaluated in one query over the built
`user_features` / `account_features` rows of the entity. So explain agrees with what a run does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import duckdb
from sqlglot import exp

from journeys.compiler.criteria import CriteriaContext, compile_criteria, property_column
from journeys.compiler.features import FeatureRegistry
from journeys.compiler.models import ModelBuilder, members_from_segment_membership
from journeys.compiler.sql import render
from journeys.contracts import TableContract
from journeys.rules.load import RuleSet
from journeys.rules.model import (
    AllOf,
    AnyOf,
    EventLeaf,
    MilestoneLeaf,
    NotOf,
    OutcomeLeaf,
    PlaybookLeaf,
    PropertyLeaf,
    SegmentLeaf,
    SqlLeaf,
    SubscriptionLeaf,
    TeamLeaf,
)


@dataclass
class Node:
    """One node of an explained tree: what it tests, the entity's value, and the verdict at T."""

    label: str
    verdict: bool
    value: Any = None
    detail: str | None = None
    children: list["Node"] = field(default_factory=list)

    def to_json(self) -> dict:
        out = {"test": self.label, "verdict": self.verdict}
        if self.value is not None:
            out["value"] = _jsonable(self.value)
        if self.detail:
            out["detail"] = self.detail
        if self.children:
            out["children"] = [c.to_json() for c in self.children]
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return value.isoformat() if isinstance(value, dt.date) else value


class Explainer:
    """Evaluates criteria trees for one entity on the built models of one database."""

    def __init__(self, con: duckdb.DuckDBPyConnection, rules: RuleSet, features: FeatureRegistry, contracts: dict[str, TableContract]):
        self.con, self.rules, self.features, self.contracts = con, rules, features, contracts

    def context(self, entity: str) -> CriteriaContext:
        """The context the journey match models compile with (journeys/compiler/models.py), so verdicts agree."""
        return ModelBuilder(self.rules, self.features, self.contracts).context(entity, members_from_segment_membership)

    def exists(self, entity: str, entity_id: str) -> bool:
        table, key = ("user_features", "user_id") if entity == "user" else ("account_features", "account_id")
        return self.con.execute(f"select count(*) from {table} where {key} = ?", [entity_id]).fetchone()[0] > 0

    def explain(self, tree: Any, entity: str, entity_id: str) -> Node:
        """The tree with every node's verdict and every leaf's value for this entity at the built T."""
        ctx = self.context(entity)
        nodes: list[tuple[Any, exp.Expression, exp.Expression | None]] = []
        self._collect(tree, ctx, nodes)
        columns = []
        for n, (_, verdict, value) in enumerate(nodes):
            columns.append(exp.alias_(verdict, f"v{n}"))
            columns.append(exp.alias_(value if value is not None else exp.null(), f"x{n}"))
        if entity == "user":
            source = ("from user_features as u left join account_features as a on a.account_id = u.account_id "
                      "cross join journey_state.run_context as rc where u.user_id = ?")  # fmt: skip
        else:
            source = "from account_features as a cross join journey_state.run_context as rc where a.account_id = ?"
        sql = "select " + ",\n".join(render(c) for c in columns) + "\n" + source
        row = self.con.execute(sql, [entity_id]).fetchone()
        results = {id(node): (row[2 * n], row[2 * n + 1]) for n, (node, _, _) in enumerate(nodes)}
        return self._build(tree, results, entity, entity_id)

    def _collect(self, tree: Any, ctx: CriteriaContext, out: list) -> None:
        value = None
        if isinstance(tree, PropertyLeaf):
            value = property_column(tree, ctx)[0]
        elif isinstance(tree, EventLeaf):
            alias = "u" if ctx.entity == "user" else "a"
            value = exp.func("coalesce", exp.column(self.features.event(tree, ctx.entity), table=alias), exp.Literal.number(0))
        out.append((tree, compile_criteria(tree, ctx), value))
        for child in _children(tree):
            self._collect(child, ctx, out)

    def _build(self, tree: Any, results: dict, entity: str, entity_id: str) -> Node:
        verdict, value = results[id(tree)]
        node = Node(describe(tree), bool(verdict), value)
        node.children = [self._build(c, results, entity, entity_id) for c in _children(tree)]
        if isinstance(tree, SubscriptionLeaf):
            node.detail = self._subscription_detail(tree, entity, entity_id)
        return node

    def _subscription_detail(self, leaf: SubscriptionLeaf, entity: str, entity_id: str) -> str:
        """The subscription that satisfied the sub-tree, or the closest one (most leaves true) that did not."""
        ctx = self.context("account")
        leaves = [n for n in _walk(leaf.subscription) if not isinstance(n, (AllOf, AnyOf, NotOf))]
        whole = compile_criteria(leaf.subscription, ctx)
        tests = [exp.alias_(exp.Cast(this=compile_criteria(n, ctx), to=exp.DataType.build("int")), f"l{i}") for i, n in enumerate(leaves)]
        account = "(select account_id from user_features where user_id = ?)" if entity == "user" else "?"
        sql = (f"select s.subscription_id, {render(whole)} as whole, {', '.join(render(t) for t in tests) or '0'}\n"
               f"from staging.stg_subscriptions as s cross join journey_state.run_context as rc where s.account_id = {account}")  # fmt: skip
        rows = self.con.execute(sql, [entity_id]).fetchall()
        if not rows:
            return "the account has no subscription"
        best = max(rows, key=lambda r: (bool(r[1]), sum(r[2:]), r[0]))
        verdict = "satisfies the whole sub-tree" if best[1] else f"closest: {sum(best[2:])} of {len(leaves)} tests true"
        return f"subscription {best[0]} {verdict}"


def _children(tree: Any) -> list:
    if isinstance(tree, AllOf):
        return list(tree.all)
    if isinstance(tree, AnyOf):
        return list(tree.any)
    if isinstance(tree, NotOf):
        return [tree.not_]
    return []  # subscription and event sub-trees are explained as one feature


def _walk(tree: Any):
    yield tree
    for child in _children(tree):
        yield from _walk(child)


def describe(tree: Any) -> str:
    """A leaf as the rule author wrote it."""
    if isinstance(tree, AllOf):
        return "all of"
    if isinstance(tree, AnyOf):
        return "any of"
    if isinstance(tree, NotOf):
        return "not"
    if isinstance(tree, PropertyLeaf):
        value = "" if tree.value is None else f" {list(tree.value) if isinstance(tree.value, tuple) else tree.value!r}"
        return f"{tree.property} {tree.op}{value}"
    if isinstance(tree, SegmentLeaf):
        return f"segment {tree.segment} {tree.op}"
    if isinstance(tree, MilestoneLeaf):
        return f"milestone {tree.milestone} {tree.op}"
    if isinstance(tree, OutcomeLeaf):
        return f"outcome {tree.outcome} {tree.op}"
    if isinstance(tree, PlaybookLeaf):
        return f"playbook {tree.playbook} {tree.op}"
    if isinstance(tree, TeamLeaf):
        return f"team {tree.team} {tree.op}" + (f" {tree.value}" if tree.value else "")
    if isinstance(tree, SubscriptionLeaf):
        return "one subscription matches the sub-tree"
    if isinstance(tree, EventLeaf):
        parts = [f"event {tree.event} {tree.op}"]
        if tree.where is not None:
            parts.append("where ...")
        if tree.count is not None:
            parts.append(f"at least {tree.count.at_least}" if tree.count.at_least is not None else f"at most {tree.count.at_most}")
        if tree.within:
            parts.append(f"within {tree.within}")
        return " ".join(parts) + " (value: count)"
    if isinstance(tree, SqlLeaf):
        return f"sql: {tree.sql}"
    return type(tree).__name__


# --------------------------------------------------------------------------- the command


def explain_entity(settings, entity_id: str, *, journey: str | None = None, segment: str | None = None,
                   as_of: dt.datetime | None = None, echo=print) -> dict:  # fmt: skip
    """Explain one entity at T (default: the T of the last build); builds the models at T when needed."""
    from journeys.compiler.features import collect_features
    from journeys.contracts import load_contracts
    from journeys.engine.build import build_models, compile_project, connect
    from journeys.engine.dbt import DbtProject
    from journeys.engine.lock import run_lock
    from journeys.errors import JourneysError

    with run_lock(settings.db_path, what="journeys explain"):
        compiled = compile_project(settings)
        rules = compiled.rules
        if journey is not None and journey not in rules.journeys:
            raise JourneysError(f"unknown journey '{journey}'; expected one of: {', '.join(sorted(rules.journeys))}")
        if segment is not None and segment not in rules.segments:
            raise JourneysError(f"unknown segment '{segment}'; expected one of: {', '.join(sorted(rules.segments))}")
        built_at = _built_at(settings)
        target = as_of or built_at
        if target is None:
            raise JourneysError("nothing is built yet; run `journeys run` first or pass --as-of")
        if compiled.result.written or compiled.result.removed or target != built_at:
            echo(f"building models at {target:%Y-%m-%d %H:%M:%S} ...")
            build_models(settings, DbtProject(settings.project_dir, settings.db_path), target)
        con = connect(settings)
        try:
            explainer = Explainer(con, rules, collect_features(rules), load_contracts(settings.project_dir))
            report = _explain(explainer, rules, entity_id, journey, segment, target)
        finally:
            con.close()
    _print(report, echo)
    return report


def _built_at(settings) -> dt.datetime | None:
    import duckdb as _duckdb

    if not settings.db_path.exists():
        return None
    con = _duckdb.connect(str(settings.db_path))
    try:
        row = con.execute(
            "select max(as_of) from journey_state.run_context where exists (select 1 from information_schema.tables "
            "where table_schema = 'main' and table_name = 'segment_membership')"
        ).fetchone()
        return row[0] if row else None
    except _duckdb.Error:
        return None
    finally:
        con.close()


def _entity_type(explainer: Explainer, entity_id: str) -> list[str]:
    return [t for t in ("user", "account") if explainer.exists(t, entity_id)]


def _segment_report(explainer: Explainer, rules: RuleSet, seg_id: str, entity_type: str, entity_id: str) -> dict:
    segment = rules.segments[seg_id]
    member = explainer.con.execute(
        "select count(*) from segment_membership where segment_id = ? and entity_id = ?", [seg_id, entity_id]
    ).fetchone()[0] > 0
    out = {"segment": seg_id, "entity_type": segment.entity, "member": member}
    if segment.entity != entity_type:
        out["note"] = f"a {segment.entity} segment; {entity_id} is a {entity_type}"
    elif hasattr(segment, "criteria"):
        out["criteria"] = explainer.explain(segment.criteria, entity_type, entity_id).to_json()
    else:
        out["note"] = "a raw SQL segment: membership comes from its query"
    return out


def _explain(explainer: Explainer, rules: RuleSet, entity_id: str, journey, segment, as_of) -> dict:
    from journeys.errors import JourneysError

    types = _entity_type(explainer, entity_id)
    if not types:
        raise JourneysError(f"no user or account '{entity_id}' in the built models at {as_of:%Y-%m-%d %H:%M:%S}")
    report: dict = {"entity_id": entity_id, "as_of": as_of.isoformat(sep=" ")}
    if segment is not None:
        entity_type = rules.segments[segment].entity if rules.segments[segment].entity in types else types[0]
        report["entity_type"] = entity_type
        report["segments"] = [_segment_report(explainer, rules, segment, entity_type, entity_id)]
        return report
    if journey is not None:
        j = rules.journeys[journey]
        entity_type = j.entity
        if entity_type not in types:
            raise JourneysError(f"'{entity_id}' is not a {entity_type}; journey {journey} enrolls {entity_type}s")
        report["entity_type"] = entity_type
        report["journey"] = journey
        report["segments"] = [_segment_report(explainer, rules, s, entity_type, entity_id) for s in j.entry.segments]
        if j.exit and j.exit.blacklist is not None:
            report["blacklist"] = explainer.explain(j.exit.blacklist, entity_type, entity_id).to_json()
        if j.goal:
            report["goal"] = explainer.explain(j.goal.criteria, entity_type, entity_id).to_json()
        report["history"] = [
            dict(zip(("run_id", "as_of", "event", "to_status", "reason", "occurred_at"), map(_jsonable, row)))
            for row in explainer.con.execute(
                "select run_id, as_of, event, to_status, reason, occurred_at from journey_state.transitions "
                "where journey_id = ? and entity_id = ? order by occurred_at, run_id", [journey, entity_id]
            ).fetchall()
        ]
        return report
    entity_type = types[0]
    report["entity_type"] = entity_type
    report["segments"] = [
        {"segment": s, "member": explainer.con.execute(
            "select count(*) from segment_membership where segment_id = ? and entity_id = ?", [s, entity_id]).fetchone()[0] > 0}
        for s in sorted(rules.segments) if rules.segments[s].entity == entity_type
    ]  # fmt: skip
    return report


def _print(report: dict, echo) -> None:
    echo(f"{report['entity_type']} {report['entity_id']} at {report['as_of']}")
    for seg in report.get("segments", []):
        verdict = "member" if seg["member"] else "not a member"
        echo(f"  segment {seg['segment']}: {verdict}" + (f" ({seg['note']})" if seg.get("note") else ""))
        if "criteria" in seg:
            for line in _json_lines(seg["criteria"], "    "):
                echo(line)
    for part in ("blacklist", "goal"):
        if part in report:
            echo(f"  {part}: {'matches' if report[part]['verdict'] else 'does not match'}")
            for line in _json_lines(report[part], "    "):
                echo(line)
    if "history" in report:
        echo("  history:" if report["history"] else "  history: never entered this journey")
        for h in report["history"]:
            echo(f"    {h['occurred_at']}  {h['event']:<13} {h['to_status'] or '':<13} {h['reason'] or ''}  (run {h['run_id']})")


def _json_lines(node: dict, indent: str) -> list[str]:
    mark = "✓" if node["verdict"] else "✗"
    value = f"  [value: {node['value']}]" if "value" in node else ""
    detail = f"  ({node['detail']})" if node.get("detail") else ""
    lines = [f"{indent}{mark} {node['test']}{value}{detail}"]
    for child in node.get("children", []):
        lines += _json_lines(child, indent + "    ")
    return lines

"""Criteria trees → sqlglot boolean expressions, with the exact meanings of SPEC §5.

Expressions read a row of `user_features` as `u` and/or `account_features` as `a` (a user's
account), and the run context as `rc`. Every leaf is coalesced to false, so `not` and
blacklists never lose an entity to SQL's NULL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from journeys.compiler.features import FeatureRegistry
from journeys.compiler.sql import AS_OF, as_number, as_timestamp, false_if_null, interval, literal, time_value
from journeys.contracts import TableContract
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
from journeys.rules.sql_text import parse_sql_leaf

ENTITY_KEY = {"user": ("u", "user_id"), "account": ("a", "account_id")}
TABLE_OF_SCOPE = {"user": "users", "account": "accounts", "subscription": "subscriptions"}


@dataclass(frozen=True)
class CriteriaContext:
    """What a criteria tree compiles against."""

    entity: str  # user | account
    features: FeatureRegistry
    contracts: dict[str, TableContract]
    segment_members: Callable[[str], exp.Expression]  # segment id → query of its entity_ids
    segment_entity: Callable[[str], str]

    def entity_key(self) -> exp.Column:
        alias, key = ENTITY_KEY[self.entity]
        return exp.column(key, table=alias)


def compile_criteria(tree: Any, ctx: CriteriaContext) -> exp.Expression:
    """A criteria tree as one boolean expression; never NULL."""
    if isinstance(tree, AllOf):
        return exp.and_(*(_paren(compile_criteria(c, ctx)) for c in tree.all))
    if isinstance(tree, AnyOf):
        return exp.or_(*(_paren(compile_criteria(c, ctx)) for c in tree.any))
    if isinstance(tree, NotOf):
        return exp.not_(_paren(compile_criteria(tree.not_, ctx)))
    if isinstance(tree, PropertyLeaf):
        return compile_property(tree, ctx)
    if isinstance(tree, SegmentLeaf):
        return _segment(tree, ctx)
    if isinstance(tree, MilestoneLeaf):
        return _flag(exp.column(ctx.features.milestone(tree.milestone), table="a"), tree.op == "has_met")
    if isinstance(tree, OutcomeLeaf):
        return _flag(exp.column(ctx.features.outcome(tree.outcome), table="a"), tree.op == "has_met")
    if isinstance(tree, PlaybookLeaf):
        return _flag(exp.column(ctx.features.playbook(tree.playbook, tree.op), table="a"), tree.op != "never_enrolled")
    if isinstance(tree, TeamLeaf):
        member = tree.value if tree.op in ("equal_to", "not_equal_to") else None
        return _flag(exp.column(ctx.features.team_member(tree.team, member), table="a"), tree.op in ("equal_to", "is_set"))
    if isinstance(tree, SubscriptionLeaf):
        return _flag(exp.column(ctx.features.subscription(tree.subscription), table="a"), True)
    if isinstance(tree, EventLeaf):
        return _event(tree, ctx)
    if isinstance(tree, SqlLeaf):
        return false_if_null(_paren(parse_sql_leaf(tree.sql, ctx.entity, ctx.contracts)))
    raise TypeError(f"not a criterion: {tree!r}")


def _paren(e: exp.Expression) -> exp.Expression:
    return e if isinstance(e, (exp.Paren, exp.Column, exp.Coalesce, exp.Boolean)) else exp.Paren(this=e)


def _flag(column: exp.Expression, positive: bool) -> exp.Expression:
    """A boolean feature; a missing account (or feature row) counts as false."""
    value = false_if_null(column)
    return value if positive else exp.not_(value)


def _segment(leaf: SegmentLeaf, ctx: CriteriaContext) -> exp.Expression:
    # A user criterion naming an account segment asks about the user's account.
    key = exp.column("account_id", table="u") if ctx.entity == "user" and ctx.segment_entity(leaf.segment) == "account" else ctx.entity_key()
    member = false_if_null(exp.In(this=key, query=exp.Subquery(this=ctx.segment_members(leaf.segment))))
    return member if leaf.op == "has_met" else exp.not_(member)


def _event(leaf: EventLeaf, ctx: CriteriaContext) -> exp.Expression:
    alias = "u" if ctx.entity == "user" else "a"
    count = exp.func("coalesce", exp.column(ctx.features.event(leaf, ctx.entity), table=alias), exp.Literal.number(0))
    if leaf.count is None:
        performed: exp.Expression = exp.GTE(this=count, expression=exp.Literal.number(1))
    elif leaf.count.at_least is not None:
        performed = exp.GTE(this=count, expression=exp.Literal.number(leaf.count.at_least))
    else:
        performed = exp.LTE(this=count, expression=exp.Literal.number(leaf.count.at_most))
    return performed if leaf.op == "performed" else exp.not_(exp.Paren(this=performed))


def event_window(leaf_within: str | None, occurred_at: exp.Expression) -> exp.Expression:
    """An event counts when T - within <= occurred_at <= T; events after T never count."""
    upper = exp.LTE(this=occurred_at.copy(), expression=AS_OF.copy())
    if leaf_within is None:
        return upper
    return exp.and_(exp.GTE(this=occurred_at.copy(), expression=exp.Sub(this=AS_OF.copy(), expression=interval(leaf_within))), upper)


# --------------------------------------------------------------------------- property leaves


def property_column(leaf: PropertyLeaf, ctx: CriteriaContext) -> tuple[exp.Expression, str | None]:
    """The SQL value of a property and its contract kind (None: untyped text)."""
    path = leaf.path
    if path.scope == "event":
        json_path = exp.JSONPath(expressions=[exp.JSONPathRoot(), *(exp.JSONPathKey(this=k) for k in path.name.split("."))])
        return exp.JSONExtractScalar(this=exp.column("properties", table="e"), expression=json_path), None
    if path.scope == "subscription":
        return exp.column(path.name, table="s"), ctx.contracts["subscriptions"].column(path.name).kind
    alias = "u" if path.scope == "user" else "a"
    if path.custom:
        return exp.column(ctx.features.custom_attribute(path.scope, path.name), table=alias), None
    return exp.column(path.name, table=alias), ctx.contracts[TABLE_OF_SCOPE[path.scope]].column(path.name).kind


def compile_property(leaf: PropertyLeaf, ctx: CriteriaContext) -> exp.Expression:
    column, kind = property_column(leaf, ctx)
    op, value = leaf.op, leaf.value
    untyped = kind is None

    if op in ("is_set", "is_not_set"):
        is_set = exp.Is(this=column, expression=exp.null())
        is_set = exp.not_(is_set)
        if kind in (None, "text", "json"):
            is_set = exp.and_(is_set, exp.NEQ(this=exp.cast(column.copy(), "varchar"), expression=exp.Literal.string("")))
        return is_set if op == "is_set" else exp.not_(exp.Paren(this=is_set))

    if op in ("contains", "does_not_contain"):
        found = exp.GT(
            this=exp.StrPosition(this=exp.Lower(this=column), substr=exp.Lower(this=literal(value))),
            expression=exp.Literal.number(0),
        )
        if op == "contains":
            return false_if_null(found)
        return false_if_null(exp.EQ(this=found.this, expression=exp.Literal.number(0)))

    if op in ("before", "after", "between") and _is_time(value, kind):
        subject = as_timestamp(column, text=untyped or kind != "time")
        if op == "between":
            low, high = value
            return false_if_null(exp.Between(this=subject, low=time_value(low), high=time_value(high)))
        klass = exp.LT if op == "before" else exp.GT
        return false_if_null(klass(this=subject, expression=time_value(value)))

    if op in ("more_than", "less_than", "between"):
        subject = column if kind == "number" else as_number(column)
        if op == "between":
            return false_if_null(exp.Between(this=subject, low=literal(value[0]), high=literal(value[1])))
        klass = exp.GT if op == "more_than" else exp.LT
        return false_if_null(klass(this=subject, expression=literal(value)))

    # equal_to, not_equal_to, in, not_in
    values = value if isinstance(value, tuple) else (value,)
    subject, rendered = _comparable(column, kind, values)
    if op in ("equal_to", "not_equal_to"):
        klass = exp.EQ if op == "equal_to" else exp.NEQ
        return false_if_null(klass(this=subject, expression=rendered[0]))
    test = exp.In(this=subject, expressions=rendered)
    return false_if_null(test if op == "in" else exp.not_(test))


def _is_time(value: Any, kind: str | None) -> bool:
    if kind == "time":
        return True
    values = value if isinstance(value, tuple) else (value,)
    return kind is None and all(isinstance(v, str) for v in values)


def _comparable(column: exp.Expression, kind: str | None, values: tuple) -> tuple[exp.Expression, list[exp.Expression]]:
    """Equality compares numbers numerically, times as timestamps, booleans as booleans, text as is."""
    if all(isinstance(v, bool) for v in values):
        if kind == "boolean":
            return column, [literal(v) for v in values]
        return exp.Lower(this=exp.cast(column, "varchar")), [literal(str(v).lower()) for v in values]
    if all(isinstance(v, (int, float)) for v in values):
        return (column if kind == "number" else as_number(column)), [literal(v) for v in values]
    if kind == "time":
        return as_timestamp(column), [time_value(v) for v in values]
    return column, [literal(v) for v in values]

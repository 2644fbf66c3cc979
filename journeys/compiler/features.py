"""The feature registry: every aggregate a criterion needs, computed once however many rules use it.

A feature is a column of `user_features` or `account_features` (an event count, a milestone
flag, a subscription sub-tree, a custom attribute). Two leaves that mean the same thing get the
same column, so fifty journeys testing `feature_used within 30d` scan the events once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from journeys.rules.model import (
    CopyAttributeStep,
    EventLeaf,
    IfStep,
    MilestoneLeaf,
    OutcomeLeaf,
    PlaybookLeaf,
    PropertyLeaf,
    Segment,
    SubscriptionLeaf,
    TeamLeaf,
    WaitUntilDateStep,
    WaitUntilStep,
)
from journeys.rules.walk import walk_criteria, walk_steps


@dataclass(frozen=True)
class EventFeature:
    """Count of the entity's events named `event`, matching `where`, within `within` before T."""

    event: str
    where: Any  # a criteria tree over event.* properties, or None
    within: str | None


@dataclass
class FeatureRegistry:
    """Feature → column name, in first-registered order (so output is deterministic)."""

    events: dict[EventFeature, str] = field(default_factory=dict)
    event_levels: dict[str, set[str]] = field(default_factory=dict)  # column → {'user', 'account'}
    milestones: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    playbooks: dict[tuple[str, str], str] = field(default_factory=dict)
    team: dict[tuple[str, str | None], str] = field(default_factory=dict)  # (role, member or None for "any")
    subscriptions: dict[Any, str] = field(default_factory=dict)
    custom: dict[tuple[str, str], str] = field(default_factory=dict)  # (user|account, name)
    _taken: set[str] = field(default_factory=set)

    def _column(self, *parts: str) -> str:
        base = "__".join(_slug(p) for p in parts)[:60]
        name, n = base, 2
        while name in self._taken:
            name, n = f"{base}_{n}", n + 1
        self._taken.add(name)
        return name

    def event(self, leaf: EventLeaf, level: str) -> str:
        key = EventFeature(leaf.event, leaf.where, leaf.within)
        column = self._feature(self.events, key, "event", leaf.event, leaf.within or "ever")
        self.event_levels.setdefault(column, set()).add(level)
        return column

    def milestone(self, name: str) -> str:
        return self._feature(self.milestones, name, "milestone", name)

    def outcome(self, name: str) -> str:
        return self._feature(self.outcomes, name, "outcome", name)

    def playbook(self, name: str, op: str) -> str:
        # never_enrolled is stored as "ever enrolled" so that no row (or no account) reads as never
        column_op = "ever_enrolled" if op == "never_enrolled" else op
        return self._feature(self.playbooks, (name, column_op), "playbook", name, column_op)

    def team_member(self, role: str, member: str | None) -> str:
        return self._feature(self.team, (role, member), "team", role, "is_set" if member is None else "member")

    def subscription(self, tree: Any) -> str:
        return self._feature(self.subscriptions, tree, "subscription", "match")

    def custom_attribute(self, scope: str, name: str) -> str:
        return self._feature(self.custom, (scope, name), "custom", name)

    def _feature(self, mapping: dict, key: Any, *name_parts: str) -> str:
        if key not in mapping:
            mapping[key] = self._column(*name_parts)
        return mapping[key]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def collect_features(rules) -> FeatureRegistry:
    """Register every feature of every rule, in a stable order: segments, then journeys, by id."""
    registry = FeatureRegistry()
    for seg_id in sorted(rules.segments):
        segment = rules.segments[seg_id]
        if isinstance(segment, Segment):
            register_tree(registry, segment.criteria, segment.entity)
    for journey_id in sorted(rules.journeys):
        journey = rules.journeys[journey_id]
        for tree in journey_criteria(journey):
            register_tree(registry, tree, journey.entity)
        for step, _, _ in walk_steps(journey.actions, ()):
            source = step.copy_attribute.from_ if isinstance(step, CopyAttributeStep) else (
                step.wait_until_date.property if isinstance(step, WaitUntilDateStep) else None)
            if source is not None:
                path = PropertyLeaf(property=source, op="is_set").path
                if path.custom:
                    registry.custom_attribute(path.scope, path.name)
    return registry


def journey_criteria(journey) -> list[Any]:
    """Goal, blacklist and every `if` of a journey, in that order."""
    trees = []
    if journey.goal:
        trees.append(journey.goal.criteria)
    if journey.exit and journey.exit.blacklist is not None:
        trees.append(journey.exit.blacklist)
    for step, _, _ in walk_steps(journey.actions, ()):
        if isinstance(step, IfStep):
            trees.append(step.if_)
        elif isinstance(step, WaitUntilStep):
            trees.append(step.wait_until.criteria)
    return trees


def register_tree(registry: FeatureRegistry, tree: Any, entity: str) -> None:
    for node, _, scope in walk_criteria(tree, ()):
        if scope != "entity":
            continue  # inside a subscription or event filter: part of that feature
        if isinstance(node, EventLeaf):
            registry.event(node, entity)
        elif isinstance(node, MilestoneLeaf):
            registry.milestone(node.milestone)
        elif isinstance(node, OutcomeLeaf):
            registry.outcome(node.outcome)
        elif isinstance(node, PlaybookLeaf):
            registry.playbook(node.playbook, node.op)
        elif isinstance(node, TeamLeaf):
            registry.team_member(node.team, node.value if node.op in ("equal_to", "not_equal_to") else None)
        elif isinstance(node, SubscriptionLeaf):
            registry.subscription(node.subscription)
        elif isinstance(node, PropertyLeaf) and node.path.custom:
            registry.custom_attribute(node.path.scope, node.path.name)

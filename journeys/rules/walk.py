"""Walk criteria trees and step lists with the YAML path of every node."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from journeys.rules.model import AllOf, AnyOf, EventLeaf, IfStep, NotOf, SplitStep, SubscriptionLeaf, WaitUntilStep

Loc = tuple[Any, ...]


def walk_criteria(node: Any, loc: Loc, scope: str = "entity") -> Iterator[tuple[Any, Loc, str]]:
    """Yield (node, loc, scope) for every node; scope is entity, subscription or event (inside `where`)."""
    yield node, loc, scope
    if isinstance(node, AllOf):
        for i, child in enumerate(node.all):
            yield from walk_criteria(child, loc + ("all", i), scope)
    elif isinstance(node, AnyOf):
        for i, child in enumerate(node.any):
            yield from walk_criteria(child, loc + ("any", i), scope)
    elif isinstance(node, NotOf):
        yield from walk_criteria(node.not_, loc + ("not",), scope)
    elif isinstance(node, SubscriptionLeaf):
        yield from walk_criteria(node.subscription, loc + ("subscription",), "subscription")
    elif isinstance(node, EventLeaf) and node.where is not None:
        yield from walk_criteria(node.where, loc + ("where",), "event")


def walk_steps(steps: tuple, loc: Loc, step_id: str = "") -> Iterator[tuple[Any, Loc, str]]:
    """Yield (step, loc, step_id) in execution order; ids are positional paths like `3.then.1`."""
    for i, step in enumerate(steps, start=1):
        sid = f"{step_id}.{i}" if step_id else str(i)
        yield step, loc + (i - 1,), sid
        for branch_loc, branch_id, branch in step_branches(step):
            yield from walk_steps(branch, loc + (i - 1, *branch_loc), f"{sid}.{branch_id}")


def step_branches(step: Any) -> list[tuple[tuple, str, tuple]]:
    """The nested step lists of a step: (loc within the step, id segment, steps)."""
    if isinstance(step, IfStep):
        return [(("then",), "then", step.then)] + ([(("else",), "else", step.else_)] if step.else_ else [])
    if isinstance(step, WaitUntilStep):
        return [(("then",), "then", step.then), (("on_timeout",), "on_timeout", step.on_timeout)]
    if isinstance(step, SplitStep):
        return [(("split", n, "steps"), path.name, path.steps) for n, path in enumerate(step.split)]
    return []

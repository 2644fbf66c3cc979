"""The one Jinja environment for user templates: sandboxed, strict about unknown names."""

from __future__ import annotations

from functools import lru_cache

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment


@lru_cache(maxsize=1)
def template_environment() -> ImmutableSandboxedEnvironment:
    """Templates can read the row they are given and nothing else: no attribute tricks, no writes."""
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)

"""The one error hierarchy: every failure a user can fix is a JourneysError."""

from __future__ import annotations

from dataclasses import dataclass


class JourneysError(Exception):
    """An error the user can act on; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class RuleProblem:
    """One problem in one rule file, formatted `path:line:col: field: message`."""

    path: str
    line: int
    col: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.col}" if self.col else f"{self.path}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class RuleError(JourneysError):
    """One or more rule problems; nothing was compiled or run."""

    def __init__(self, problems: list[RuleProblem]):
        self.problems = sorted(set(problems), key=lambda p: (p.path, p.line, p.col, p.field, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class DataError(JourneysError):
    """Source data that does not fit the contract; nothing was loaded."""


class StateError(JourneysError):
    """The journey state refuses the request (a run in the past, a lock held, ...)."""

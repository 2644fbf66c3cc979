"""Progress bars for long commands (run, backtest, diff, demo): drawn on a terminal's stderr, silent otherwise."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class Advance(Protocol):
    def __call__(self, steps: float = 1, description: str | None = None) -> None: ...


def _quiet(steps: float = 1, description: str | None = None) -> None:
    return None


def progress_enabled(console: Console) -> bool:
    """A bar only for a person watching: a terminal that can redraw, and not switched off by JOURNEYS_PROGRESS=0."""
    return console.is_terminal and not console.is_dumb_terminal and os.environ.get("JOURNEYS_PROGRESS", "1") != "0"


@contextmanager
def progress(total: int | None, description: str, *, console: Console | None = None) -> Iterator[Advance]:
    """Yield `advance(steps=1, description=None)`; a rich bar on stderr while the block runs.

    `total=None` draws a spinner without a bar. Not a terminal (CI, a pipe, a test): nothing is drawn
    and `advance` does nothing, so the command's own output stays exactly as it is. The bar is
    transient: it disappears when the block ends, and lines echoed meanwhile print above it.
    """
    console = console or Console(stderr=True)
    if not progress_enabled(console):
        yield _quiet
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)

        def advance(steps: float = 1, description: str | None = None) -> None:
            if description is None:
                bar.update(task, advance=steps)
            else:
                bar.update(task, advance=steps, description=description)

        yield advance

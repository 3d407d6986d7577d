"""Progress bars for long CLI work, silent when nobody is watching.

``with progress(total, "anchor encodes") as advance: ... advance()`` shows a
rich progress bar on an interactive terminal and does nothing at all when
stdout is a pipe, a file or a CI log, so captured output stays free of
carriage-return noise and the same code runs in workers and tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console

__all__ = ["Advance", "progress"]


class Advance(Protocol):
    def __call__(self, steps: float = 1, *, description: str | None = None) -> None: ...


def _noop(steps: float = 1, *, description: str | None = None) -> None:
    return None


@contextmanager
def progress(
    total: float | None,
    description: str,
    *,
    console: Console | None = None,
    transient: bool = False,
) -> Iterator[Advance]:
    """A progress bar for ``total`` steps (None: unknown, shown as a pulse).

    Yields ``advance(steps=1, *, description=None)``: call it after each step;
    ``description`` replaces the text beside the bar (e.g. the item now running).
    When ``console`` (default: a new stdout console) is not a terminal, nothing
    is drawn and ``advance`` does nothing. ``transient`` removes the bar when
    the block ends instead of leaving it at 100 %.
    """
    if total is not None and total < 0:
        raise ValueError(f"progress total must be >= 0 or None, got {total!r}")
    console = console or Console()
    if not console.is_terminal:
        yield _noop
        return

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
    with bar:
        task = bar.add_task(description, total=total)

        def advance(steps: float = 1, *, description: str | None = None) -> None:
            if description is None:
                bar.advance(task, steps)
            else:
                bar.update(task, advance=steps, description=description)

        yield advance


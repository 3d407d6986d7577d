"""codecfleet.progress: a bar on a terminal, nothing at all otherwise."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from codecfleet.progress import progress


def test_progress_writes_nothing_when_output_is_not_a_terminal():
    out = io.StringIO()
    steps = 0
    with progress(3, "anchor encodes", console=Console(file=out)) as advance:
        for _ in range(3):
            advance()
            steps += 1
        advance(description="done")
    assert steps == 3
    assert out.getvalue() == ""


def test_progress_draws_a_bar_with_its_description_on_a_terminal():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with progress(4, "anchor encodes", console=console) as advance:
        for i in range(4):
            advance(description=f"crf {i}")
    text = out.getvalue()
    assert "crf 3" in text and "4/4" in text


def test_progress_rejects_a_negative_total():
    with pytest.raises(ValueError, match="total must be >= 0"):
        with progress(-1, "x", console=Console(file=io.StringIO())):
            pass

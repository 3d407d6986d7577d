"""Candidate-sourced text made inert for the operator's terminal and for HTML.

Failure reasons, errors, code, generator replies and anything else a candidate
(or a model) wrote are *data*. Before such text reaches a terminal it is

* neutralised: every control character except newline and tab is shown as a
  visible escape (``\\x1b``, ``\\x9b``, ``\\u202e``...), so an ANSI/OSC sequence
  cannot move the cursor, recolour the terminal, set its title or hide text,
  and bidirectional overrides cannot reorder what the operator reads;
* capped: at most ``limit`` characters, with the number cut said;
* kept out of rich markup: :func:`markup` escapes it for an f-string that is
  printed with markup, :func:`text` wraps it in a ``rich.text.Text`` (never
  parsed), which is what table cells get.

``one_line=True`` also shows newlines as ``\\n``, for places where a forged
line ("experiment 7: succeeded") would be taken for the system's own.
HTML escaping stays :func:`html.escape`; :func:`clean` removes what HTML
cannot carry either.
"""

from __future__ import annotations

import re
from typing import Any

#: Default cap on candidate text shown in a terminal (characters).
DISPLAY_LIMIT = 2000

# C0 controls except \t and \n, DEL, C1 controls (0x9b is an 8-bit CSI), and the
# Unicode format characters that reorder or hide text (bidi embeddings/overrides/
# isolates, zero-width and directional marks, line/paragraph separators).
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)
_CONTROL_ONE_LINE = re.compile(_CONTROL.pattern[:-1] + "\n\r]")


def _visible(m: re.Match) -> str:
    ch = m.group(0)
    if ch == "\n":
        return "\\n"
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: Any, limit: int | None = DISPLAY_LIMIT, *, one_line: bool = False) -> str:
    """``str(value)`` with control characters made visible and at most ``limit``
    characters of it kept (None: no cap); the cut is said, never silent."""
    s = "" if value is None else str(value)
    cut = 0
    if limit is not None and len(s) > limit:
        cut = len(s) - limit
        s = s[:limit]
    s = (_CONTROL_ONE_LINE if one_line else _CONTROL).sub(_visible, s)
    if cut:
        s += f"… [{cut} more characters]"
    return s


def markup(value: Any, limit: int | None = DISPLAY_LIMIT, *, one_line: bool = False) -> str:
    """:func:`clean`, then escaped for rich markup: safe inside an f-string printed with markup."""
    from rich.markup import escape

    return escape(clean(value, limit, one_line=one_line))


def text(value: Any, limit: int | None = DISPLAY_LIMIT, *, one_line: bool = False, style: str = ""):
    """:func:`clean` as a ``rich.text.Text``: rendered literally (no markup, no emoji codes)."""
    from rich.text import Text

    return Text(clean(value, limit, one_line=one_line), style=style)


__all__ = ["DISPLAY_LIMIT", "clean", "markup", "text"]

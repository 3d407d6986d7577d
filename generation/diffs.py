"""SEARCH/REPLACE edits against a parent program.

An LLM that improves a 400-line codec should not have to resend all of it, so a reply
may instead hold edit blocks in the format aider popularised::

    <<<<<<< SEARCH
    exact lines of the parent
    =======
    the lines that replace them
    >>>>>>> REPLACE

Blocks apply in order, each to the result of the ones before. A SEARCH text must occur
exactly once; when it does not, the error says which block failed and why, in words the
next prompt can show the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_START = re.compile(r"^[ \t]*<{5,9}[ \t]*SEARCH[ \t]*$")
_MIDDLE = re.compile(r"^[ \t]*={5,9}[ \t]*$")
_END = re.compile(r"^[ \t]*>{5,9}[ \t]*REPLACE[ \t]*$")


class DiffError(ValueError):
    """The edit blocks cannot be applied; ``reason`` is short and specific."""

    def __init__(self, reason: str, *, block: int | None = None):
        self.reason = reason
        self.block = block  # 1-based index of the failing block, None for the whole reply
        super().__init__(reason)


@dataclass(frozen=True)
class EditBlock:
    search: str
    replace: str


def has_edit_blocks(reply: str) -> bool:
    """True when the reply contains at least one ``<<<<<<< SEARCH`` marker line."""
    return any(_START.match(line) for line in reply.splitlines())


def parse_edit_blocks(reply: str) -> list[EditBlock]:
    """The edit blocks of a reply, in order. Raises :class:`DiffError` when there are
    none or one is not closed (as happens when a reply is cut off)."""
    lines = reply.splitlines(keepends=True)
    blocks: list[EditBlock] = []
    i = 0
    while i < len(lines):
        if not _START.match(lines[i].rstrip("\r\n")):
            i += 1
            continue
        n = len(blocks) + 1
        j = i + 1
        while j < len(lines) and not _MIDDLE.match(lines[j].rstrip("\r\n")):
            if _START.match(lines[j].rstrip("\r\n")) or _END.match(lines[j].rstrip("\r\n")):
                raise DiffError(f"block {n} has no ======= line between SEARCH and REPLACE", block=n)
            j += 1
        if j == len(lines):
            raise DiffError(f"block {n} is not closed: no ======= line after <<<<<<< SEARCH", block=n)
        k = j + 1
        while k < len(lines) and not _END.match(lines[k].rstrip("\r\n")):
            if _START.match(lines[k].rstrip("\r\n")):
                raise DiffError(f"block {n} is not closed: no >>>>>>> REPLACE line before the next block", block=n)
            k += 1
        if k == len(lines):
            raise DiffError(f"block {n} is not closed: no >>>>>>> REPLACE line", block=n)
        blocks.append(EditBlock("".join(lines[i + 1 : j]), "".join(lines[j + 1 : k])))
        i = k + 1
    if not blocks:
        raise DiffError("the reply has no SEARCH/REPLACE blocks")
    return blocks


def _first_line(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= 70 else line[:67] + "..."


def _locate(code: str, search: str) -> list[tuple[int, int]]:
    """Spans of ``search`` in ``code``: exact matches, or failing that matches that
    ignore trailing whitespace on each line (models often drop or add it)."""
    spans = []
    start = code.find(search)
    while start != -1:
        spans.append((start, start + len(search)))
        start = code.find(search, start + 1)
    if spans:
        return spans
    want = [ln.rstrip() for ln in search.splitlines()]
    if not want:
        return []
    lines = code.splitlines(keepends=True)
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln))
    stripped = [ln.rstrip() for ln in lines]
    for i in range(len(lines) - len(want) + 1):
        if stripped[i : i + len(want)] == want:
            spans.append((offsets[i], offsets[i + len(want)]))
    return spans


def apply_search_replace(parent_code: str, reply: str) -> str:
    """Apply the reply's SEARCH/REPLACE blocks to ``parent_code``, in order.

    Raises :class:`DiffError` when the reply has no blocks, a block is malformed, a
    SEARCH text is empty, not found, or found more than once, or the edits leave the
    parent unchanged.
    """
    code = parent_code
    for n, block in enumerate(parse_edit_blocks(reply), start=1):
        if not block.search.strip():
            raise DiffError(f"block {n} has an empty SEARCH part; quote the exact parent lines to replace", block=n)
        spans = _locate(code, block.search)
        if not spans:
            raise DiffError(
                f"block {n}: the SEARCH text was not found in the parent (it starts with "
                f"`{_first_line(block.search)}`); copy the parent's lines exactly",
                block=n,
            )
        if len(spans) > 1:
            raise DiffError(
                f"block {n}: the SEARCH text occurs {len(spans)} times in the parent (it starts with "
                f"`{_first_line(block.search)}`); include more surrounding lines so it is unique",
                block=n,
            )
        start, end = spans[0]
        replacement = block.replace
        # Keep the parent's line structure when the match ran to a line end the block lacked.
        if code[start:end].endswith("\n") and replacement and not replacement.endswith("\n"):
            replacement += "\n"
        code = code[:start] + replacement + code[end:]
    if code == parent_code:
        raise DiffError("the SEARCH/REPLACE blocks leave the parent unchanged")
    return code
